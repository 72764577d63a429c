// The BART-style encoder-decoder that dgr trains (method.md sections 3 and 10): its config and presets,
// teacher-forced loss over real target tokens only, re-scoring, and incremental decoding with cached
// keys/values for beam search. Multi-head attention is written out with fused projections and batched
// matmuls; the token embedding is shared by encoder input, decoder input and the output projection.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dgr::trainer {

// Reserved ids of dgr's SentencePiece tokenizer, the defaults of ModelConfig::pad_id / decoder_start_id: a
// model built from a preset pads with kPadId and starts decoding with kBosId. Batches are padded with the
// model's own pad_id (BART's imported models: pad 1, start 2 = </s>; the tokenizer's ids, checked where a
// model meets an index: check_model_fits_tokenizer in run_common.h).
inline constexpr int64_t kPadId = 0;
inline constexpr int64_t kBosId = 2;

struct ModelConfig {
  int vocab_size = 0;
  int d_model = 0;
  int heads = 0;
  int encoder_layers = 0;
  int decoder_layers = 0;
  int ffn = 0;
  int max_positions = 0;
  double dropout = 0.0;
  bool pre_norm = true;
  // Token embeddings drawn from N(0, 1/d_model) and multiplied by sqrt(d_model) where they enter the
  // encoder and decoder (Vaswani et al.; fairseq's transformer), so tokens start at unit scale next to
  // the positions; the output projection uses them unscaled. false: BART's N(0, 0.02), unscaled. Note
  // [Embedding scale] in model.cpp. Optional in JSON (files written before it existed: false).
  bool scale_embedding = false;
  // BART's own conventions (Note [BART exactly] in model.cpp), optional in JSON with these defaults (dgr's):
  int pad_id = 0;                   // padding in sources and targets (BART: 1)
  int decoder_start_id = 2;         // the decoder's first input (BART: </s> = 2)
  int position_offset = 0;          // learned positions are looked up at position + offset (BART: 2), so the
                                    // table has max_positions + offset rows
  bool final_logits_bias = false;   // a [1, vocab] buffer added to the logits (Hugging Face's BART has it)
  double attention_dropout = 0.0;   // on the attention probabilities, in training
  double activation_dropout = 0.0;  // after the FFN's GELU, in training

  // Every key is required (except the optional ones above) and no other is accepted (dgr::ConfigError names
  // the key). Optional keys are written only when they differ from their defaults.
  std::string to_json_string() const;
  static ModelConfig from_json_string(const std::string& text);
  // Throws dgr::ConfigError naming the first field that cannot work.
  void validate() const;
  bool operator==(const ModelConfig&) const = default;
};

// "test", "cpu", "bart-base", "bart-large"; an unknown name is a ConfigError listing these.
ModelConfig model_preset(const std::string& name, int vocab_size);
std::vector<std::string> model_preset_names();

namespace detail {
class Encoder;
class Decoder;
}  // namespace detail

// Incremental decoding of N hypotheses ("beams"), each attached to one of the encoded sources. All beams
// have fed the same number of tokens (`length`). Tensors are internal; use Seq2Seq::start/step/reorder.
struct DecoderState {
  torch::Tensor src_bias;                           // [Nsrc, 1, S] additive key mask (0 or -1e9)
  std::vector<torch::Tensor> cross_k, cross_v;      // per decoder layer [Nsrc, H, S, hd], computed once
  std::vector<torch::Tensor> self_k, self_v;        // per decoder layer [N, H, length, hd]
  torch::Tensor src_index;                          // [N] int64: the source row of each beam
  int64_t length = 0;
  int64_t beams() const { return src_index.size(0); }
  int64_t sources() const { return src_bias.size(0); }
};

// Note [Backward twice]: the model's loss functions write their gradient into the softmax kept from the
// forward pass, so a graph runs backward once. While one of these is alive, they copy it instead, so that
// torch::autograd::grad(..., retain_graph = true) can run before the backward of the same graph (the
// Trainer's step diagnostics). Process-wide (backward may run on another thread); not nested.
class KeepSoftmaxForSecondBackward {
 public:
  KeepSoftmaxForSecondBackward();
  ~KeepSoftmaxForSecondBackward();
  KeepSoftmaxForSecondBackward(const KeepSoftmaxForSecondBackward&) = delete;
  KeepSoftmaxForSecondBackward& operator=(const KeepSoftmaxForSecondBackward&) = delete;
};

class Seq2Seq : public torch::nn::Module {
 public:
  explicit Seq2Seq(const ModelConfig& config);
  const ModelConfig& config() const { return config_; }

  // src [B,S] int64, config().pad_id = padding anywhere in a row; returns the encoder output [B,S,D] (zero at
  // pads).
  torch::Tensor encode(const torch::Tensor& src);

  // Teacher forcing: decoder input start + tgt[:, :-1], labels tgt; pads in tgt are ignored. Returns the
  // SUM over real target tokens of the label-smoothed cross-entropy (fairseq/PyTorch definition); the
  // caller divides. The output projection runs on real target tokens only.
  torch::Tensor loss(const torch::Tensor& src, const torch::Tensor& tgt, double label_smoothing);
  // The logits [Nt, V] of the Nt real target tokens (row-major order of tgt) and their labels [Nt]; the
  // building block of loss() for other losses (distillation). src batch B or 1 as for token_log_probs.
  std::pair<torch::Tensor, torch::Tensor> target_logits(const torch::Tensor& src, const torch::Tensor& tgt);

  // log p(tgt[b,t] | ...) per target token, 0 at pads: [B,T]. src may have batch B, or batch 1 shared by
  // every target (re-scoring many keys of one query encodes it once). Runs under the caller's grad mode.
  torch::Tensor token_log_probs(const torch::Tensor& src, const torch::Tensor& tgt);
  // Per-sequence sum of token_log_probs, no label smoothing, without gradient: [B].
  torch::Tensor sequence_log_probs(const torch::Tensor& src, const torch::Tensor& tgt);
  // The same sums WITH gradient under the caller's grad mode (the surrogate of stage 2 re-scores keys
  // with it): [B]. The log-softmax and its gradient are fused as in loss(); one backward per graph.
  torch::Tensor sequence_log_probs_with_grad(const torch::Tensor& src, const torch::Tensor& tgt);

  // Incremental decoding (no gradient). start: one beam per source row, nothing fed yet.
  DecoderState start(const torch::Tensor& src);
  // Feeds last_tokens [N] (the first call feeds config().decoder_start_id) and returns log p(next token) [N, V].
  torch::Tensor step(DecoderState& state, const torch::Tensor& last_tokens);
  // New beam i continues old beam parents[i]; the number of beams may change.
  void reorder(DecoderState& state, const torch::Tensor& parents);

  // The shared token embedding [V, D] (also the output projection).
  const torch::Tensor& embedding() const { return embed_tokens_->weight; }

 private:
  ModelConfig config_;
  torch::nn::Embedding embed_tokens_{nullptr};
  torch::Tensor final_logits_bias_;  // [1, V] buffer, or undefined
  std::shared_ptr<detail::Encoder> encoder_;
  std::shared_ptr<detail::Decoder> decoder_;
};

}  // namespace dgr::trainer
