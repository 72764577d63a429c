// FM-index-constrained beam search for one source and one view (method.md sections 2 and 4, SEAL/MINDER).
// At each step the allowed next tokens of a beam are exactly the tokens that extend its prefix to a
// string occurring in the index (FMIndex::extensions). The model's log-probabilities of the other tokens
// are ignored, not renormalised: a hypothesis scores the sum of the model's raw log p of its tokens, so a
// key's score equals its teacher-forced re-score (Seq2SeqScorer::score) and no re-scoring pass is needed.
// Body view: every prefix the beams ever hold is returned as a key ("keep history"). Title and pseudo-query
// views: only complete identifiers, i.e. hypotheses ending with "@@" (SEAL's `partial_titles` False,
// method.md section 4), or, for an identifier longer than the view's limit, its first max_title (max_pq)
// tokens, as far as its training target goes: a title key names the passages with exactly that title, never
// the passages that share a prefix of it, so a title that is a prefix of another does not tie with it.
//
// Per view (retrieval/views.h):
//   title: the index range starts at the document boundary, so only title prefixes can be produced; "@@"
//          (end_id) finishes a hypothesis; at most max_title tokens ("@@" included). A key's index string
//          is boundary + tokens.
//   body : exactly body_length tokens, never a reserved token (end_id, pq_start, boundary, view markers,
//          pad/bos/eos); a key is finished when it has body_length tokens.
//   pq   : the first token is forced to "||" (pq_start), "@@" finishes, at most max_pq tokens. The lone
//          forced "||" is not returned as a key: the model did not choose it and it matches every passage
//          that has a pseudo-query.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "retrieval/fm_index.h"
#include "retrieval/seq2seq.h"
#include "retrieval/tokenizer.h"
#include "retrieval/views.h"

namespace dgr::retrieval {

// Where a key came from. Scoring treats `unigram` keys apart (method.md section 4: unigram scores go to
// positions no other key took).
enum class KeyOrigin : uint8_t { beam = 0, query_ngram = 1, unigram = 2 };
const char* key_origin_name(KeyOrigin origin);  // "beam", "ngram", "unigram"

// One identifier.
struct Key {
  std::vector<int32_t> tokens;  // as the decoder produced them (no bos); the target that `score` re-scores
  std::vector<int32_t> string;  // as looked up in the index: title keys are boundary + tokens, else tokens
  View view = View::body;
  KeyOrigin origin = KeyOrigin::beam;
  double score = 0;    // sum of the model's log p of `tokens` under the view's source (no length norm)
  uint64_t count = 0;  // occurrences of `string` in the index (F of the corpus correction)
  bool finished = false;  // title/pq: ends with "@@"; body: has exactly body_length tokens
};

struct BeamOptions {
  int beam_size = 10;  // method.md: 15 in the paper (7 on MS MARCO), 10 in the CPU probe
  // Title and pseudo-query views also return every unfinished prefix of the beam history as a key (SEAL's
  // `partial_titles` True; dgr's behaviour before 2026-12-07). Off: complete identifiers only (the method).
  bool partial_keys = false;
};

// Runs the constrained beam search for `source` (built with make_source for `view`) and returns the keys
// (body: every prefix of the beam history; title, pq: the complete identifiers), in the order the search
// produced them (by length, then by descending score within a step). When `first_step_log_probs` is given it receives the model's
// log-probabilities of the first target token (the row returned by step({0}, {bos}); vocab_size floats),
// which the retriever uses for unigram keys without a second encoder pass.
std::vector<Key> constrained_beam_search(Seq2SeqScorer& model, std::span<const int32_t> source, View view,
                                         const FMIndex& index, const SpecialTokens& special,
                                         const ViewLimits& limits, const BeamOptions& options,
                                         std::vector<float>* first_step_log_probs = nullptr);

// True for the tokens that no body key may contain and that are never unigram keys: pad, bos, eos, the
// view markers, "@@", "||" and the boundary.
bool is_reserved_token(int32_t token, const SpecialTokens& special);

}  // namespace dgr::retrieval
