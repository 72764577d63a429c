// What retrieval needs from a sequence-to-sequence model, without depending on LibTorch: trainer/
// implements it (trainer/model_scorer.h) and tests implement it with small hand-made models. Token
// sequences here never contain bos; a decoder input is bos followed by the target's tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace dgr::retrieval {

class Seq2SeqScorer {
 public:
  virtual ~Seq2SeqScorer() = default;
  virtual int32_t vocab_size() const = 0;

  // Incremental decoding of several hypotheses (beams) for one source; the encoder runs once.
  class Decoding {
   public:
    virtual ~Decoding() = default;
    // The new beams are: beam i = current beam parents[i] extended by tokens[i]. Before the first call
    // there is one current beam, the empty hypothesis; the first call is step({0}, {bos}) (or several
    // copies of it). Returns the log-probabilities of the next token for every new beam, row-major
    // [parents.size() x vocab_size()], valid until the next call.
    virtual const std::vector<float>& step(std::span<const int32_t> parents, std::span<const int32_t> tokens) = 0;
  };
  virtual std::unique_ptr<Decoding> start(std::span<const int32_t> source) = 0;

  // Teacher forcing: for each target, sum over t of log p(target[t] | bos target[<t], source). No length
  // normalisation; an empty target scores 0.
  virtual std::vector<float> score(std::span<const int32_t> source,
                                   const std::vector<std::vector<int32_t>>& targets) = 0;
};

}  // namespace dgr::retrieval
