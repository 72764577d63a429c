// Passage scores from generated keys: the SEAL/MINDER corpus correction and the greedy, coverage-weighted
// sum over the keys a passage contains (method.md section 4).
//
//   s_u  = log((F + smoothing) / (N + smoothing))             F = key count, N = FMIndex::total_tokens()
//   w    = max(0, [s + log(1 - e^{s_u})] - [s_u + log(1 - e^{s})]), then w <- w^2 (square_weights)
//   pq keys first get s <- min(s + pq_offset, pq_cap)          (MINDER: +14, at most -1)
//   W(p) = sum over keys matched in p, greedily by descending w, each on one occurrence that overlaps no
//          position already taken, of w * (1 - alpha + alpha * |new tokens| / |tokens|)
//          + unigram keys on the positions still free, each distinct token once.
//
// Decisions the papers leave open, made here:
// - s -> 0 (a key the model is certain of) makes log(1 - e^s) = -inf and w infinite. s is capped at
//   max_log_prob (-1e-6: log(1 - e^s) ~ -13.8), so such a key gets a large but finite weight; log(1 - e^x)
//   is computed as log(-expm1(x)), exact for x near 0. s_u -> 0 (F = N, a string that is the whole text)
//   is left alone: it gives w = 0, which is right for a key that says nothing about any passage.
// - Tokens of a key for coverage are its DISTINCT tokens without the boundary: a title key `B t1 t2 @@`
//   covers {t1, t2, @@}. The boundary is not a passage position (it sits before offset 0), so it neither
//   takes a position nor counts as covered; otherwise every title key would "cover" the boundary for free.
// - A key takes its leftmost occurrence that overlaps no taken position; keys with w = 0 take nothing.
// - Unigram keys (KeyOrigin::unigram) are not in the greedy pass; they score w (no coverage factor) once
//   per distinct token found at a free position.
// - Candidates are the passages located by keys with 0 < count <= max_key_count and w > 0; their cheap
//   bound is the sum of w over the distinct keys that located them. Keys with a larger count still score
//   in every candidate that contains them. Unigram keys locate no candidates by default
//   (unigrams_locate_candidates): 5000 of them, each up to max_key_count occurrences, are millions of
//   FM-index locate calls per query (measured: 1.6 s/query against 75 ms without them on a 2.4M-token
//   index), and a single token the beam did not generate is the weakest evidence that a passage is
//   relevant; they still score every candidate the other keys found.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "retrieval/beam_search.h"
#include "retrieval/fm_index.h"

namespace dgr::retrieval {

struct ScoringOptions {
  double smoothing = 5.0;          // added to F and N in s_u
  bool square_weights = true;      // w <- w^2
  double pq_offset = 14.0;         // MINDER: pseudo-query keys get s <- min(s + pq_offset, pq_cap)
  double pq_cap = -1.0;
  double max_log_prob = -1e-6;     // s is capped here so that w stays finite (see above)
  double coverage_alpha = 0.8;     // c = 1 - alpha + alpha * |new tokens| / |tokens|
  uint64_t max_key_count = 1500;   // keys occurring more often locate no candidates
  bool unigrams_locate_candidates = false;  // see above: off for speed
  size_t max_candidates = 1500;    // candidates fully scored, best by the cheap bound
  size_t top_k = 100;              // passages returned
};

// The corpus-corrected weight of a key with log-probability `s` (already offset for pq keys) and corpus
// count `count` in an index of `total_tokens` tokens.
double key_weight(double s, uint64_t count, uint64_t total_tokens, const ScoringOptions& options);
// s as the weight uses it: the pq offset for pseudo-query keys (none for the other views).
double adjusted_log_prob(double s, View view, const ScoringOptions& options);
// w of every key (adjusted_log_prob then key_weight).
std::vector<double> key_weights(std::span<const Key> keys, uint64_t total_tokens, const ScoringOptions& options);

// One key as it contributed to a passage: `offset` is the passage offset of its first token (-1 for a
// title key: its boundary sits before offset 0), `coverage` is c (1 for unigram keys).
struct KeyMatch {
  uint32_t key = 0;  // index into the keys given to the scorer
  int32_t offset = 0;
  double weight = 0;
  double coverage = 1;
  double contribution = 0;  // weight * coverage
};
struct PassageScore {
  double score = 0;
  std::vector<KeyMatch> matches;  // greedy order (descending w), then unigram keys by position
};

// Scores passages against one query's keys. Built once per query (it sorts the keys and indexes them by
// first token), then score() is called per candidate passage.
class PassageScorer {
 public:
  // `weights[i]` is the weight of `keys[i]`; `boundary` is the index's boundary token. Both spans must
  // outlive the scorer.
  PassageScorer(std::span<const Key> keys, std::span<const double> weights, int32_t boundary,
                const ScoringOptions& options);
  // `passage`: the passage's tokens as in the index (FMIndex::passage), without boundaries.
  PassageScore score(std::span<const int32_t> passage) const;

 private:
  std::span<const Key> keys_;
  std::span<const double> weights_;
  int32_t boundary_;
  double alpha_;
  std::vector<uint32_t> greedy_;           // greedy keys by (w desc, index asc)
  std::vector<uint32_t> greedy_rank_;      // key index -> rank in greedy_
  std::vector<uint32_t> by_first_offsets_; // CSR: first token t -> by_first_[offsets[t] .. offsets[t+1])
  std::vector<uint32_t> by_first_;         // greedy ranks, grouped by the first token of the key's string
  std::vector<int32_t> unigram_key_;       // token -> key index of its unigram key, or -1
};

// Convenience for one passage (builds a PassageScorer).
PassageScore score_passage(std::span<const int32_t> passage, std::span<const Key> keys,
                           std::span<const double> weights, int32_t boundary, const ScoringOptions& options);

// A retrieved passage with the keys it matched.
struct MatchedKey {
  Key key;
  double weight = 0;
  double coverage = 1;
  double contribution = 0;
  int32_t offset = 0;
};
// Note [Overlapped keys]: a key that occurs in a passage only on positions a heavier key took adds nothing
// to its score and is not among its keys. Until 2026-12-07 mining could also keep such keys for the
// surrogate to re-score: a workaround for title keys that were every prefix of a title (a passage matched
// one shared short prefix). With complete title keys it was a no-op for titles, made the surrogate differ
// from the retrieval score through body keys, and did not change DGR's results (4 seeds on tiny,
// docs/results.md, "Complete-title keys"), so it was removed.
struct RetrievedPassage {
  int32_t doc = 0;  // passage index in the FM-index (order of FMIndex::build)
  double score = 0;
  std::vector<MatchedKey> keys;  // in greedy order, as PassageScore::matches
};

// The whole scoring stage: weights, candidates by the keys with count <= max_key_count, the best
// max_candidates by the cheap bound fully scored, the top_k returned best first (ties: lower doc first).
// `keys` must not hold two keys with the same (view, string) (the retriever merges them).
// `also_docs` (e.g. a teacher's top passages, `dgr mine --add-run`): each is scored by the same keys and
// joins the list when it is not among the top_k already and at least one key matches it (score > 0: a
// passage no key matches has a score no model can move); the list stays in score order, so it may then
// hold more than top_k passages.
std::vector<RetrievedPassage> score_passages(const FMIndex& index, std::span<const Key> keys,
                                             const ScoringOptions& options, std::span<const int32_t> also_docs = {});

}  // namespace dgr::retrieval
