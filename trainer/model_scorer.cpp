// ModelScorer: spans of int32 token ids in, LibTorch inside. One Decoding owns one DecoderState. Token
// tensors are built on the CPU and moved to the model's device; log-probabilities come back to the CPU,
// where the beam search reads them.
#include "trainer/model_scorer.h"

#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "trainer/model.h"
#include "trainer/placement.h"

namespace dgr::trainer {

struct ModelScorer::Impl {
  std::shared_ptr<Seq2Seq> model;
  int64_t max_tokens_per_pass;
};

namespace {

// Eval mode and no autograd while it lives; puts the model back into training mode if it was.
class InferenceScope {
 public:
  explicit InferenceScope(Seq2Seq& model) : model_(model), was_training_(model.is_training()) {
    if (was_training_) model_.eval();
  }
  ~InferenceScope() {
    if (was_training_) model_.train();
  }

 private:
  Seq2Seq& model_;
  bool was_training_;
  torch::NoGradGuard no_grad_;
};

torch::Device device_of(const Seq2Seq& model) { return model.embedding().device(); }

// The ids as an int64 tensor on `device`.
torch::Tensor to_tensor(std::span<const int32_t> ids, const torch::Device& device) {
  auto t = torch::empty({static_cast<int64_t>(ids.size())}, torch::kLong);
  auto* out = t.data_ptr<int64_t>();
  for (size_t i = 0; i < ids.size(); ++i) out[i] = ids[i];
  return to_device(t, device);
}

// `t` as a contiguous CPU tensor (itself when it is one already).
torch::Tensor to_host(const torch::Tensor& t) { return t.to(torch::kCPU).contiguous(); }

class ModelDecoding : public retrieval::Seq2SeqScorer::Decoding {
 public:
  ModelDecoding(std::shared_ptr<ModelScorer::Impl> impl, std::span<const int32_t> source) : impl_(std::move(impl)) {
    InferenceScope scope(*impl_->model);
    state_ = impl_->model->start(to_tensor(source, device_of(*impl_->model)).unsqueeze(0));
  }
  const std::vector<float>& step(std::span<const int32_t> parents, std::span<const int32_t> tokens) override {
    DGR_CHECK(parents.size() == tokens.size() && !parents.empty(),
              "Decoding::step needs as many parents as tokens (and at least one), found {} and {}", parents.size(),
              tokens.size());
    InferenceScope scope(*impl_->model);
    const torch::Device device = device_of(*impl_->model);
    impl_->model->reorder(state_, to_tensor(parents, device));
    auto lp = to_host(impl_->model->step(state_, to_tensor(tokens, device)));
    out_.resize(static_cast<size_t>(lp.numel()));
    std::memcpy(out_.data(), lp.data_ptr<float>(), out_.size() * sizeof(float));
    return out_;
  }

 private:
  std::shared_ptr<ModelScorer::Impl> impl_;
  DecoderState state_;
  std::vector<float> out_;
};

}  // namespace

ModelScorer::ModelScorer(std::shared_ptr<Seq2Seq> model, int64_t max_tokens_per_pass)
    : impl_(std::make_shared<Impl>(Impl{std::move(model), std::max<int64_t>(1, max_tokens_per_pass)})) {
  DGR_CHECK(impl_->model != nullptr, "ModelScorer needs a model");
}

ModelScorer::~ModelScorer() = default;

int32_t ModelScorer::vocab_size() const { return impl_->model->config().vocab_size; }

std::unique_ptr<retrieval::Seq2SeqScorer::Decoding> ModelScorer::start(std::span<const int32_t> source) {
  return std::make_unique<ModelDecoding>(impl_, source);
}

std::vector<float> ModelScorer::score(std::span<const int32_t> source,
                                      const std::vector<std::vector<int32_t>>& targets) {
  std::vector<float> scores(targets.size(), 0.0f);
  InferenceScope scope(*impl_->model);
  const torch::Device device = device_of(*impl_->model);
  auto src = to_tensor(source, device).unsqueeze(0);
  // Targets in chunks of at most max_tokens_per_pass padded tokens, one teacher-forced pass each; the
  // source is encoded per pass and shared by all targets of the pass.
  size_t begin = 0;
  while (begin < targets.size()) {
    size_t end = begin;
    size_t longest = 0;
    while (end < targets.size()) {
      size_t next_longest = std::max(longest, targets[end].size());
      if (end > begin && static_cast<int64_t>(next_longest * (end - begin + 1)) > impl_->max_tokens_per_pass) break;
      longest = next_longest;
      ++end;
    }
    if (longest > 0) {
      const int64_t pad = impl_->model->config().pad_id;
      auto tgt = torch::full({static_cast<int64_t>(end - begin), static_cast<int64_t>(longest)}, pad, torch::kLong);
      auto acc = tgt.accessor<int64_t, 2>();
      for (size_t i = begin; i < end; ++i) {
        for (size_t t = 0; t < targets[i].size(); ++t) {
          DGR_CHECK(targets[i][t] != pad, "target {} contains the pad id {} at position {}", i, pad, t);
          acc[static_cast<int64_t>(i - begin)][static_cast<int64_t>(t)] = targets[i][t];
        }
      }
      auto lp = to_host(impl_->model->sequence_log_probs(src, to_device(tgt, device)));
      std::memcpy(scores.data() + begin, lp.data_ptr<float>(), (end - begin) * sizeof(float));
    }
    begin = end;
  }
  return scores;
}

std::unique_ptr<retrieval::Seq2SeqScorer> make_model_scorer(std::shared_ptr<Seq2Seq> model) {
  return std::make_unique<ModelScorer>(std::move(model));
}

}  // namespace dgr::trainer
