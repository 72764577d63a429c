// retrieval::Seq2SeqScorer on top of trainer::Seq2Seq, for constrained beam search and key re-scoring.
// LibTorch stays behind a pimpl, so code that only scores and decodes does not include it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "retrieval/seq2seq.h"

namespace dgr::trainer {

class Seq2Seq;

// Runs the model without gradient and in eval mode (no dropout) for the duration of each call, restoring
// the model's train/eval mode afterwards, so a scorer may share the model with a trainer.
class ModelScorer : public retrieval::Seq2SeqScorer {
 public:
  // max_tokens_per_pass bounds the target tokens of one teacher-forced pass in score() (the [tokens x
  // vocab] logits are the memory that grows).
  explicit ModelScorer(std::shared_ptr<Seq2Seq> model, int64_t max_tokens_per_pass = 4096);
  ~ModelScorer() override;
  int32_t vocab_size() const override;
  std::unique_ptr<Decoding> start(std::span<const int32_t> source) override;
  std::vector<float> score(std::span<const int32_t> source,
                           const std::vector<std::vector<int32_t>>& targets) override;

  struct Impl;  // opaque; shared with the Decodings it starts, which may outlive the scorer

 private:
  std::shared_ptr<Impl> impl_;
};

std::unique_ptr<retrieval::Seq2SeqScorer> make_model_scorer(std::shared_ptr<Seq2Seq> model);

}  // namespace dgr::trainer
