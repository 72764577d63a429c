// The differentiable passage score S(q, p) of DGR stage 2 (method.md section 7): a passage's cached keys
// re-scored WITH gradient by teacher forcing under their view's source, put through the corpus correction
// of retrieval/scoring.h in torch ops, and summed with the coverage factors of the cached order.
//
//   s(k)  = sum_t log p(k_t | k_<t, make_source(query, view(k)))     no length norm
//   s'(k) = min(s + pq_offset, pq_cap) for pq keys, then min(s', max_log_prob)   (clamp: gradient 1 below
//           and at a cap, 0 above it -- the function is flat there)
//   w(k)  = relu([s' + log(1 - e^{s_u})] - [s_u + log(1 - e^{s'})])^2   (C^1 at 0: no jump in the gradient)
//   c(k)  = 1 - alpha + alpha * |distinct tokens of k, without the boundary, not in earlier keys| / |distinct|
//   S(p)  = sum over the first max_keys cached keys of w * c
// With the same keys and no gradient, S equals retrieval::score_passages' score of the passage when the
// keys are the passage's matched keys in greedy order, none is a unigram key and there are <= max_keys
// (a unigram key, which CachedKey cannot tell apart, is scored here as a body key with its coverage factor;
// at retrieval it scores w on a free position without one).
// s is Seq2Seq::sequence_log_probs_with_grad: per view, the query is encoded once and every distinct key of
// the view is one row of a single teacher-forced batch (memory: the view's [key tokens x vocab] logits).
//
// Note [Surrogate padding]: the paper pads a passage to 40 keys with a dummy key (count 1e6, score 0) that
// is meant to add nothing. Nothing is materialised here: padding would sit after the real keys, so it
// cannot change their coverage, and a term that adds nothing needs no decoder pass. A passage with fewer
// keys simply has fewer terms; a passage without keys scores 0 (no gradient).
// Note [Surrogate coverage]: c is a constant of the cached order (every cached key had w > 0 when mined, so
// it took its position and its tokens at retrieval), not recomputed from the current weights. Keys whose
// tokens are empty or only the boundary cover nothing and are skipped, as at retrieval.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <span>
#include <vector>

#include "retrieval/scoring.h"
#include "retrieval/tokenizer.h"
#include "retrieval/views.h"
#include "data/distill_example.h"

namespace dgr::trainer {

class Seq2Seq;

struct SurrogateOptions {
  retrieval::ScoringOptions scoring;  // smoothing, square_weights, pq_offset/pq_cap, max_log_prob, alpha
  retrieval::ViewLimits limits;       // max_source of the encoder inputs
  retrieval::SpecialTokens special;   // view markers, eos and the boundary
  uint64_t total_tokens = 0;          // N of the corpus correction: FMIndex::total_tokens()
  int max_keys = 40;                  // keys per passage, in cached (greedy) order
  // false reproduces the released DGR code: pq keys keep their cached score (a constant, no gradient).
  bool rescore_pq = true;
  // Throws ConfigError naming the first value that cannot work.
  void validate() const;
};

// The options `dgr train --stage distill` scores with: the retrieval-time scoring defaults, the run's view
// limits, the index's special tokens and size, `max_keys` keys per passage.
SurrogateOptions stage2_surrogate_options(const retrieval::SpecialTokens& special, uint64_t total_tokens,
                                          const retrieval::ViewLimits& limits, int max_keys);

// S of each passage, given by its cached keys: [passages.size()] float64, differentiable w.r.t. the
// model's parameters, under the caller's grad and train/eval mode. One encoder pass per view present and
// one batched decoder pass over the view's distinct keys ((view, tokens) shared by passages score once).
torch::Tensor surrogate_scores(Seq2Seq& model, std::span<const int32_t> query_tokens,
                               std::span<const std::span<const data::CachedKey>> passages,
                               const SurrogateOptions& options);
// The same for candidates of one example (indices into example.candidates; repeats allowed and scored
// once): [candidates.size()] float64.
torch::Tensor surrogate_scores(Seq2Seq& model, const data::DistillExample& example,
                               std::span<const int32_t> candidates, const SurrogateOptions& options);

}  // namespace dgr::trainer
