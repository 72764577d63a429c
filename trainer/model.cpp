// The encoder-decoder of model.h. Everything between the attention blocks runs on "packed" tokens: the
// real (non-pad) tokens of a batch as rows of an [N, D] matrix, so that projections and FFNs never spend
// time on padding; only the attention itself goes through the padded [B, L] layout. Teacher forcing and
// incremental decoding share the same modules and the same formulas, so that decoding token by token
// reproduces the teacher-forced log-probabilities.
#include "trainer/model.h"

#include <atomic>
#include <algorithm>
#include <cmath>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "trainer/attention.h"

namespace dgr::trainer {

// ---------------------------------------------------------------------------------------------------
// Config

namespace {
const std::vector<std::string> kConfigKeys = {
    "vocab_size", "d_model", "heads", "encoder_layers", "decoder_layers", "ffn", "max_positions", "dropout",
    "pre_norm", "scale_embedding", "pad_id", "decoder_start_id", "position_offset", "final_logits_bias",
    "attention_dropout", "activation_dropout"};
// Keys a file may lack (it was written before they existed, or they have their defaults), read as the value
// that matched its model.
const std::vector<std::string> kOptionalConfigKeys = {"scale_embedding", "pad_id", "decoder_start_id", "position_offset",
                                                      "final_logits_bias", "attention_dropout", "activation_dropout"};
const ModelConfig kDefaults;
}

std::string ModelConfig::to_json_string() const {
  nlohmann::ordered_json j;
  j["vocab_size"] = vocab_size;
  j["d_model"] = d_model;
  j["heads"] = heads;
  j["encoder_layers"] = encoder_layers;
  j["decoder_layers"] = decoder_layers;
  j["ffn"] = ffn;
  j["max_positions"] = max_positions;
  j["dropout"] = dropout;
  j["pre_norm"] = pre_norm;
  j["scale_embedding"] = scale_embedding;
  if (pad_id != kDefaults.pad_id) j["pad_id"] = pad_id;
  if (decoder_start_id != kDefaults.decoder_start_id) j["decoder_start_id"] = decoder_start_id;
  if (position_offset != kDefaults.position_offset) j["position_offset"] = position_offset;
  if (final_logits_bias != kDefaults.final_logits_bias) j["final_logits_bias"] = final_logits_bias;
  if (attention_dropout != kDefaults.attention_dropout) j["attention_dropout"] = attention_dropout;
  if (activation_dropout != kDefaults.activation_dropout) j["activation_dropout"] = activation_dropout;
  return j.dump();
}

ModelConfig ModelConfig::from_json_string(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(fmt::format("model config is not valid JSON: {}", e.what()));
  }
  DGR_CHECK_AS(ConfigError, j.is_object(), "model config must be a JSON object, found {}", j.type_name());
  for (const auto& item : j.items()) {
    bool known = std::find(kConfigKeys.begin(), kConfigKeys.end(), item.key()) != kConfigKeys.end();
    DGR_CHECK_AS(ConfigError, known, "model config: unknown key '{}' (valid keys: {})", item.key(),
                 fmt::join(kConfigKeys, ", "));
  }
  for (const auto& key : kConfigKeys) {
    bool optional = std::find(kOptionalConfigKeys.begin(), kOptionalConfigKeys.end(), key) != kOptionalConfigKeys.end();
    DGR_CHECK_AS(ConfigError, optional || j.contains(key), "model config: missing key '{}'", key);
  }
  ModelConfig c;
  auto get_int = [&](const char* key, int& out) {
    const auto& v = j.at(key);
    DGR_CHECK_AS(ConfigError, v.is_number_integer(), "model config: key '{}' must be an integer, found {}", key,
                 v.dump());
    out = v.get<int>();
  };
  get_int("vocab_size", c.vocab_size);
  get_int("d_model", c.d_model);
  get_int("heads", c.heads);
  get_int("encoder_layers", c.encoder_layers);
  get_int("decoder_layers", c.decoder_layers);
  get_int("ffn", c.ffn);
  get_int("max_positions", c.max_positions);
  DGR_CHECK_AS(ConfigError, j.at("dropout").is_number(), "model config: key 'dropout' must be a number, found {}",
               j.at("dropout").dump());
  c.dropout = j.at("dropout").get<double>();
  DGR_CHECK_AS(ConfigError, j.at("pre_norm").is_boolean(), "model config: key 'pre_norm' must be true or false, found {}",
               j.at("pre_norm").dump());
  c.pre_norm = j.at("pre_norm").get<bool>();
  auto get_bool = [&](const char* key, bool& out) {
    if (!j.contains(key)) return;
    DGR_CHECK_AS(ConfigError, j.at(key).is_boolean(), "model config: key '{}' must be true or false, found {}", key,
                 j.at(key).dump());
    out = j.at(key).get<bool>();
  };
  auto get_number = [&](const char* key, double& out) {
    if (!j.contains(key)) return;
    DGR_CHECK_AS(ConfigError, j.at(key).is_number(), "model config: key '{}' must be a number, found {}", key,
                 j.at(key).dump());
    out = j.at(key).get<double>();
  };
  get_bool("scale_embedding", c.scale_embedding);
  get_bool("final_logits_bias", c.final_logits_bias);
  for (const auto& [key, field] : {std::pair{"pad_id", &c.pad_id}, std::pair{"decoder_start_id", &c.decoder_start_id},
                                   std::pair{"position_offset", &c.position_offset}})
    if (j.contains(key)) get_int(key, *field);
  get_number("attention_dropout", c.attention_dropout);
  get_number("activation_dropout", c.activation_dropout);
  c.validate();
  return c;
}

void ModelConfig::validate() const {
  DGR_CHECK_AS(ConfigError, vocab_size > kBosId, "model config: vocab_size must be > {}, found {}", kBosId, vocab_size);
  DGR_CHECK_AS(ConfigError, d_model > 0 && heads > 0 && d_model % heads == 0,
               "model config: d_model ({}) must be a positive multiple of heads ({})", d_model, heads);
  DGR_CHECK_AS(ConfigError, encoder_layers >= 0 && decoder_layers >= 1,
               "model config: need encoder_layers >= 0 and decoder_layers >= 1, found {} and {}", encoder_layers,
               decoder_layers);
  DGR_CHECK_AS(ConfigError, ffn > 0, "model config: ffn must be positive, found {}", ffn);
  DGR_CHECK_AS(ConfigError, max_positions > 0, "model config: max_positions must be positive, found {}", max_positions);
  DGR_CHECK_AS(ConfigError, dropout >= 0 && dropout < 1, "model config: dropout must be in [0, 1), found {}", dropout);
  DGR_CHECK_AS(ConfigError, attention_dropout >= 0 && attention_dropout < 1 && activation_dropout >= 0 &&
               activation_dropout < 1, "model config: attention_dropout ({}) and activation_dropout ({}) must be in "
               "[0, 1)", attention_dropout, activation_dropout);
  DGR_CHECK_AS(ConfigError, pad_id >= 0 && pad_id < vocab_size && decoder_start_id >= 0 && decoder_start_id < vocab_size,
               "model config: pad_id ({}) and decoder_start_id ({}) must be token ids below vocab_size {}", pad_id,
               decoder_start_id, vocab_size);
  DGR_CHECK_AS(ConfigError, position_offset >= 0, "model config: position_offset must be >= 0, found {}",
               position_offset);
}

std::vector<std::string> model_preset_names() { return {"test", "cpu", "bart-base", "bart-large"}; }

ModelConfig model_preset(const std::string& name, int vocab_size) {
  ModelConfig c;
  c.vocab_size = vocab_size;
  if (name == "test") {
    c.d_model = 16, c.heads = 2, c.encoder_layers = 1, c.decoder_layers = 1, c.ffn = 32, c.max_positions = 64;
    c.dropout = 0.0, c.pre_norm = true;
  } else if (name == "cpu") {
    c.d_model = 192, c.heads = 4, c.encoder_layers = 2, c.decoder_layers = 2, c.ffn = 768, c.max_positions = 128;
    c.dropout = 0.1, c.pre_norm = true, c.scale_embedding = true;
  } else if (name == "bart-base") {
    c.d_model = 768, c.heads = 12, c.encoder_layers = 6, c.decoder_layers = 6, c.ffn = 3072, c.max_positions = 1024;
    c.dropout = 0.1, c.pre_norm = false;
  } else if (name == "bart-large") {
    c.d_model = 1024, c.heads = 16, c.encoder_layers = 12, c.decoder_layers = 12, c.ffn = 4096;
    c.max_positions = 1024, c.dropout = 0.1, c.pre_norm = false;
  } else {
    throw ConfigError(fmt::format("unknown model preset '{}' (valid: {})", name, fmt::join(model_preset_names(), ", ")));
  }
  c.validate();
  return c;
}

// ---------------------------------------------------------------------------------------------------
// Packing and masks

namespace {

using torch::Tensor;

// exp(-1e9) is exactly 0 in float, and unlike -inf a row with every key masked gives a uniform row instead
// of NaNs that would leak into the gradients of real positions through the batched matmuls.
constexpr float kMasked = -1e9f;

struct Packing {
  int64_t batch = 0, length = 0;
  bool dense = false;   // no padding at all: packed and padded layouts coincide
  Tensor index;         // [N] offsets of the real tokens in the flattened [B*L]
  Tensor tokens;        // [N]
  Tensor positions;     // [N]
  Tensor key_bias;      // [B, 1, L] additive mask over keys

  Tensor pad(const Tensor& x) const {  // [N, C] -> [B*L, C], zero rows at pads
    if (dense) return x;
    return torch::zeros({batch * length, x.size(1)}, x.options()).index_copy(0, index, x);
  }
  Tensor unpad(const Tensor& x) const { return dense ? x : x.index_select(0, index); }  // [B*L, C] -> [N, C]
};

// Real tokens are the non-pad entries of `mask_of`; positions count real tokens from 0 in each row, so a
// source may be padded on either side.
Packing pack(const Tensor& mask_of, const Tensor& tokens, int max_positions, int64_t pad_id) {
  DGR_CHECK(mask_of.dim() == 2 && mask_of.scalar_type() == torch::kLong,
            "token batch must be a 2-d int64 tensor, found {}-d {}", mask_of.dim(), c10::toString(mask_of.scalar_type()));
  Packing p;
  p.batch = mask_of.size(0);
  p.length = mask_of.size(1);
  DGR_CHECK(p.length <= max_positions, "sequence length {} exceeds the model's max_positions {}", p.length,
            max_positions);
  Tensor mask = mask_of.ne(pad_id);
  Tensor positions = mask.cumsum(1).sub_(1).reshape(-1);
  Tensor flat_mask = mask.reshape(-1);
  p.index = flat_mask.nonzero().squeeze(1);
  p.dense = p.index.size(0) == p.batch * p.length;
  Tensor flat_tokens = tokens.reshape(-1);
  p.tokens = p.dense ? flat_tokens : flat_tokens.index_select(0, p.index);
  p.positions = p.dense ? positions : positions.index_select(0, p.index);
  p.key_bias = torch::zeros({p.batch, 1, p.length}, mask_of.options().dtype(torch::kFloat))
                   .masked_fill_(mask.logical_not().unsqueeze(1), kMasked);
  return p;
}

// [B, 1 or Lq, L] -> [B*H, 1 or Lq, L], the batch layout of the attention matmuls.
Tensor per_head(const Tensor& bias, int64_t heads) {
  auto b = bias.unsqueeze(1);
  return b.expand({b.size(0), heads, b.size(2), b.size(3)}).reshape({-1, b.size(2), b.size(3)});
}

Tensor decoder_input(const Tensor& tgt, int64_t start_id) {
  auto bos = torch::full({tgt.size(0), 1}, start_id, tgt.options());
  return torch::cat({bos, tgt.slice(1, 0, tgt.size(1) - 1)}, 1);
}

// Row-wise log-sum-exp, and the softmax as a by-product (in place: only for use without autograd). Spelled out because this LibTorch build's
// log_softmax kernel is ~6x slower than max/exp/sum (measured 19.5 ms against 3 ms on [480 x 8000], one
// thread), and the [tokens x vocab] logits are the largest tensor of a training step.
std::pair<Tensor, Tensor> softmax_and_logsumexp(const Tensor& logits) {
  Tensor max = std::get<0>(logits.max(1, true));
  Tensor e = (logits - max).exp_();
  Tensor sum = e.sum(1, true);
  return {e.div_(sum), sum.log_().add_(max).squeeze(1)};
}

std::atomic<bool> keep_softmax{false};  // Note [Backward twice]

// The softmax kept by a forward pass, for its backward to overwrite: the kept one itself (released, so a
// second backward of the graph fails loudly) or, under KeepSoftmaxForSecondBackward, a copy.
Tensor take_softmax(torch::autograd::AutogradContext* ctx, const char* who) {
  Tensor g = ctx->saved_data["probs"].toTensor();
  DGR_CHECK(g.defined(), "{}: backward called twice on the same graph", who);
  if (keep_softmax.load()) return g.clone();
  ctx->saved_data["probs"] = Tensor();
  return g;
}

// Differentiable, for the paths that are not the training loss.
Tensor fast_log_softmax(const Tensor& logits) { return logits - logits.logsumexp(1, true); }

// Sum over rows of the label-smoothed cross-entropy (fairseq's and PyTorch's definition):
// (1-eps) * (lse - z_y) + eps * (lse - mean_v z_v). The gradient, softmax - (1-eps) onehot - eps/V, is
// written into the softmax kept from the forward pass: one pass over the logits instead of autograd's
// chain through log_softmax, gather and sum.
struct SmoothedCrossEntropy : public torch::autograd::Function<SmoothedCrossEntropy> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, Tensor logits, Tensor labels, double eps) {
    auto [probs, lse] = softmax_and_logsumexp(logits);
    Tensor total = lse.sum() - logits.gather(1, labels.unsqueeze(1)).sum() * (1.0 - eps);
    if (eps > 0) total = total - logits.sum() * (eps / static_cast<double>(logits.size(1)));
    // Kept outside save_for_backward: backward overwrites it in place, so the graph runs backward once.
    ctx->saved_data["probs"] = probs;
    ctx->saved_data["labels"] = labels;
    ctx->saved_data["eps"] = eps;
    return total;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                  torch::autograd::variable_list grads) {
    Tensor g = take_softmax(ctx, "SmoothedCrossEntropy");
    Tensor labels = ctx->saved_data["labels"].toTensor();
    double eps = ctx->saved_data["eps"].toDouble();
    if (eps > 0) g.sub_(eps / static_cast<double>(g.size(1)));
    g.scatter_add_(1, labels.unsqueeze(1), torch::full({g.size(0), 1}, -(1.0 - eps), g.options()));
    double scale = grads[0].item<double>();
    if (scale != 1.0) g.mul_(scale);
    return {g, Tensor(), Tensor()};
  }
};

// log p of each row's label, [N]. Like SmoothedCrossEntropy, the gradient, g * (onehot - softmax) per
// row, is written into the softmax kept from the forward pass instead of autograd's chain through
// logsumexp and gather (backward measured ~4x faster on 2382 tokens x 8000, "cpu" preset, one thread).
struct LabelLogProb : public torch::autograd::Function<LabelLogProb> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, Tensor logits, Tensor labels) {
    auto [probs, lse] = softmax_and_logsumexp(logits);
    Tensor lp = logits.gather(1, labels.unsqueeze(1)).squeeze(1) - lse;
    ctx->saved_data["probs"] = probs;  // outside save_for_backward: backward overwrites it in place
    ctx->saved_data["labels"] = labels;
    return lp;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                  torch::autograd::variable_list grads) {
    Tensor g = take_softmax(ctx, "LabelLogProb");
    Tensor labels = ctx->saved_data["labels"].toTensor();
    Tensor upstream = grads[0].unsqueeze(1);  // [N, 1]
    g.mul_(upstream.neg());
    g.scatter_add_(1, labels.unsqueeze(1), upstream);
    return {g, Tensor()};
  }
};

}  // namespace

KeepSoftmaxForSecondBackward::KeepSoftmaxForSecondBackward() { keep_softmax.store(true); }
KeepSoftmaxForSecondBackward::~KeepSoftmaxForSecondBackward() { keep_softmax.store(false); }

// ---------------------------------------------------------------------------------------------------
// Modules

namespace detail {

class Attention : public torch::nn::Module {
 public:
  Attention(int d_model, int heads, double dropout)
      : d_(d_model), heads_(heads), head_dim_(d_model / heads), dropout_(dropout) {
    scale_ = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  }

 protected:
  // q [G, Lq, hd], k/v [G, Lk, hd], bias broadcastable to [G, Lq, Lk].
  Tensor attend(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias) const {
    if (dropout_ > 0 && is_training()) {  // on the probabilities (BART's attention_dropout): the plain path
      Tensor probs = torch::softmax(torch::baddbmm(bias.expand({q.size(0), q.size(1), k.size(1)}), q, k.transpose(1, 2),
                                                   1.0, scale_), -1);
      return torch::bmm(torch::dropout(probs, dropout_, true), v);
    }
    return attention(q, k, v, bias, scale_);  // Note [Small-matrix attention]
  }
  int64_t d_, heads_, head_dim_;
  double scale_, dropout_;
};

class SelfAttention : public Attention {
 public:
  SelfAttention(int d_model, int heads, double dropout) : Attention(d_model, heads, dropout) {
    qkv_proj = register_module("qkv_proj", torch::nn::Linear(d_model, 3 * d_model));
    out_proj = register_module("out_proj", torch::nn::Linear(d_model, d_model));
  }
  // x: packed [N, D]; bias: [B*H, 1 or L, L].
  Tensor forward(const Tensor& x, const Packing& p, const Tensor& bias) {
    const int64_t B = p.batch, L = p.length;
    auto qkv = p.pad(qkv_proj(x)).view({B, L, 3, heads_, head_dim_}).permute({2, 0, 3, 1, 4}).contiguous();
    auto o = attend(qkv[0].view({B * heads_, L, head_dim_}), qkv[1].view({B * heads_, L, head_dim_}),
                    qkv[2].view({B * heads_, L, head_dim_}), bias);
    return out_proj(p.unpad(o.view({B, heads_, L, head_dim_}).transpose(1, 2).reshape({B * L, d_})));
  }
  // x: [N, D], one new token per beam; the caches [N, H, t, hd] grow by one position.
  Tensor step(const Tensor& x, Tensor& cache_k, Tensor& cache_v) {
    const int64_t N = x.size(0);
    auto qkv = qkv_proj(x).view({N, 3, heads_, 1, head_dim_});
    cache_k = torch::cat({cache_k, qkv.select(1, 1)}, 2);
    cache_v = torch::cat({cache_v, qkv.select(1, 2)}, 2);
    const int64_t t = cache_k.size(2);
    auto bias = torch::zeros({1, 1, 1}, x.options());
    auto o = attend(qkv.select(1, 0).reshape({N * heads_, 1, head_dim_}), cache_k.view({N * heads_, t, head_dim_}),
                    cache_v.view({N * heads_, t, head_dim_}), bias);
    return out_proj(o.view({N, d_}));
  }
  torch::nn::Linear qkv_proj{nullptr}, out_proj{nullptr};
};

class CrossAttention : public Attention {
 public:
  CrossAttention(int d_model, int heads, double dropout) : Attention(d_model, heads, dropout) {
    q_proj = register_module("q_proj", torch::nn::Linear(d_model, d_model));
    kv_proj = register_module("kv_proj", torch::nn::Linear(d_model, 2 * d_model));
    out_proj = register_module("out_proj", torch::nn::Linear(d_model, d_model));
  }
  // Encoder output (packed) -> keys and values [Bs, H, S, hd].
  std::pair<Tensor, Tensor> project_memory(const Tensor& memory, const Packing& sp) {
    auto kv = sp.pad(kv_proj(memory))
                  .view({sp.batch, sp.length, 2, heads_, head_dim_})
                  .permute({2, 0, 3, 1, 4})
                  .contiguous();
    return {kv[0], kv[1]};
  }
  // x: packed decoder states of `tp`; k/v: [Bs, H, S, hd] with Bs == tp.batch, or Bs == 1 shared by all.
  // src_bias: [Bs, 1, S].
  Tensor forward(const Tensor& x, const Packing& tp, const Tensor& k, const Tensor& v, const Tensor& src_bias) {
    auto q = q_proj(x);
    if (k.size(0) == 1) return out_proj(attend_shared(q, k, v, src_bias));
    const int64_t B = tp.batch, T = tp.length, S = k.size(2);
    auto qh = tp.pad(q).view({B, T, heads_, head_dim_}).transpose(1, 2).reshape({B * heads_, T, head_dim_});
    auto o = attend(qh, k.view({B * heads_, S, head_dim_}), v.view({B * heads_, S, head_dim_}),
                    per_head(src_bias, heads_));
    return out_proj(tp.unpad(o.view({B, heads_, T, head_dim_}).transpose(1, 2).reshape({B * T, d_})));
  }
  // x: [N, D]; src_index [N]: the row of k/v/src_bias each beam reads.
  Tensor step(const Tensor& x, const Tensor& k, const Tensor& v, const Tensor& src_bias, const Tensor& src_index) {
    auto q = q_proj(x);
    if (k.size(0) == 1) return out_proj(attend_shared(q, k, v, src_bias));
    const int64_t N = x.size(0), S = k.size(2);
    auto ks = k.index_select(0, src_index).view({N * heads_, S, head_dim_});
    auto vs = v.index_select(0, src_index).view({N * heads_, S, head_dim_});
    auto o = attend(q.view({N * heads_, 1, head_dim_}), ks, vs, per_head(src_bias.index_select(0, src_index), heads_));
    return out_proj(o.view({N, d_}));
  }
  torch::nn::Linear q_proj{nullptr}, kv_proj{nullptr}, out_proj{nullptr};

 private:
  // One source for every query token: the tokens of all targets (or beams) become one long query
  // sequence per head, so the source's keys and values are never copied per target.
  Tensor attend_shared(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& src_bias) {
    const int64_t M = q.size(0);
    auto qh = q.view({M, heads_, head_dim_}).transpose(0, 1);
    auto o = attend(qh, k[0], v[0], src_bias);
    return o.transpose(0, 1).reshape({M, d_});
  }
};

class FeedForward : public torch::nn::Module {
 public:
  FeedForward(int d_model, int ffn, double dropout) : dropout_(dropout) {
    fc1 = register_module("fc1", torch::nn::Linear(d_model, ffn));
    fc2 = register_module("fc2", torch::nn::Linear(ffn, d_model));
  }
  Tensor forward(const Tensor& x) {
    Tensor h = torch::gelu(fc1(x));
    if (dropout_ > 0 && is_training()) h = torch::dropout(h, dropout_, true);  // BART's activation_dropout
    return fc2(h);
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  double dropout_;
};

// Residual block: pre-norm x + f(LN(x)) or post-norm LN(x + f(x)), dropout on f's output.
template <typename F>
Tensor residual(const Tensor& x, torch::nn::LayerNorm& norm, bool pre_norm, double dropout, bool training, F&& f) {
  Tensor h = f(pre_norm ? norm(x) : x);
  if (dropout > 0 && training) h = torch::dropout(h, dropout, true);
  Tensor y = x + h;
  return pre_norm ? y : norm(y);
}

class EncoderLayer : public torch::nn::Module {
 public:
  explicit EncoderLayer(const ModelConfig& c) : c_(c) {
    self_attn = register_module("self_attn", std::make_shared<SelfAttention>(c.d_model, c.heads, c.attention_dropout));
    self_attn_layer_norm = register_module("self_attn_layer_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.d_model})));
    ffn = register_module("ffn", std::make_shared<FeedForward>(c.d_model, c.ffn, c.activation_dropout));
    final_layer_norm = register_module("final_layer_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.d_model})));
  }
  Tensor forward(Tensor x, const Packing& p, const Tensor& bias) {
    x = residual(x, self_attn_layer_norm, c_.pre_norm, c_.dropout, is_training(),
                 [&](const Tensor& h) { return self_attn->forward(h, p, bias); });
    return residual(x, final_layer_norm, c_.pre_norm, c_.dropout, is_training(),
                    [&](const Tensor& h) { return ffn->forward(h); });
  }
  ModelConfig c_;
  std::shared_ptr<SelfAttention> self_attn;
  torch::nn::LayerNorm self_attn_layer_norm{nullptr};
  std::shared_ptr<FeedForward> ffn;
  torch::nn::LayerNorm final_layer_norm{nullptr};
};

class DecoderLayer : public torch::nn::Module {
 public:
  explicit DecoderLayer(const ModelConfig& c) : c_(c) {
    self_attn = register_module("self_attn", std::make_shared<SelfAttention>(c.d_model, c.heads, c.attention_dropout));
    self_attn_layer_norm = register_module("self_attn_layer_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.d_model})));
    encoder_attn = register_module("encoder_attn", std::make_shared<CrossAttention>(c.d_model, c.heads, c.attention_dropout));
    encoder_attn_layer_norm = register_module("encoder_attn_layer_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.d_model})));
    ffn = register_module("ffn", std::make_shared<FeedForward>(c.d_model, c.ffn, c.activation_dropout));
    final_layer_norm = register_module("final_layer_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.d_model})));
  }
  Tensor forward(Tensor x, const Packing& tp, const Tensor& self_bias, const Tensor& k, const Tensor& v,
                 const Tensor& src_bias) {
    x = residual(x, self_attn_layer_norm, c_.pre_norm, c_.dropout, is_training(),
                 [&](const Tensor& h) { return self_attn->forward(h, tp, self_bias); });
    x = residual(x, encoder_attn_layer_norm, c_.pre_norm, c_.dropout, is_training(),
                 [&](const Tensor& h) { return encoder_attn->forward(h, tp, k, v, src_bias); });
    return residual(x, final_layer_norm, c_.pre_norm, c_.dropout, is_training(),
                    [&](const Tensor& h) { return ffn->forward(h); });
  }
  Tensor step(Tensor x, DecoderState& s, size_t i) {
    x = residual(x, self_attn_layer_norm, c_.pre_norm, c_.dropout, is_training(),
                 [&](const Tensor& h) { return self_attn->step(h, s.self_k[i], s.self_v[i]); });
    x = residual(x, encoder_attn_layer_norm, c_.pre_norm, c_.dropout, is_training(), [&](const Tensor& h) {
      return encoder_attn->step(h, s.cross_k[i], s.cross_v[i], s.src_bias, s.src_index);
    });
    return residual(x, final_layer_norm, c_.pre_norm, c_.dropout, is_training(),
                    [&](const Tensor& h) { return ffn->forward(h); });
  }
  ModelConfig c_;
  std::shared_ptr<SelfAttention> self_attn;
  torch::nn::LayerNorm self_attn_layer_norm{nullptr};
  std::shared_ptr<CrossAttention> encoder_attn;
  torch::nn::LayerNorm encoder_attn_layer_norm{nullptr};
  std::shared_ptr<FeedForward> ffn;
  torch::nn::LayerNorm final_layer_norm{nullptr};
};

// What encoder and decoder stacks share: learned positions, embedding norm (post-norm, as BART's
// layernorm_embedding) or final norm (pre-norm), embedding dropout.
class Stack : public torch::nn::Module {
 public:
  explicit Stack(const ModelConfig& c) : c_(c) {
    embed_positions =
        register_module("embed_positions", torch::nn::Embedding(c.max_positions + c.position_offset, c.d_model));
    norm = register_module(c.pre_norm ? "layer_norm" : "layernorm_embedding",
                           torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.d_model})));
  }
  Tensor embed(const Tensor& tokens, const Tensor& positions, const Tensor& token_embedding) {
    Tensor x = torch::embedding(token_embedding, tokens);
    if (c_.scale_embedding) x = x * std::sqrt(static_cast<double>(c_.d_model));
    x = x + embed_positions(c_.position_offset == 0 ? positions : positions + c_.position_offset);
    if (!c_.pre_norm) x = norm(x);
    if (c_.dropout > 0 && is_training()) x = torch::dropout(x, c_.dropout, true);
    return x;
  }
  Tensor finish(const Tensor& x) { return c_.pre_norm ? norm(x) : x; }
  ModelConfig c_;
  torch::nn::Embedding embed_positions{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};

class Encoder : public Stack {
 public:
  explicit Encoder(const ModelConfig& c) : Stack(c) {
    layers = register_module("layers", torch::nn::ModuleList());
    for (int i = 0; i < c.encoder_layers; ++i) layers->push_back(std::make_shared<EncoderLayer>(c));
  }
  Tensor forward(const Packing& sp, const Tensor& token_embedding) {
    Tensor x = embed(sp.tokens, sp.positions, token_embedding);
    Tensor bias = per_head(sp.key_bias, c_.heads);
    for (const auto& layer : *layers) x = layer->as<EncoderLayer>()->forward(x, sp, bias);
    return finish(x);
  }
  torch::nn::ModuleList layers{nullptr};
};

class Decoder : public Stack {
 public:
  explicit Decoder(const ModelConfig& c) : Stack(c) {
    layers = register_module("layers", torch::nn::ModuleList());
    for (int i = 0; i < c.decoder_layers; ++i) layers->push_back(std::make_shared<DecoderLayer>(c));
  }
  DecoderLayer& layer(size_t i) { return *layers[i]->as<DecoderLayer>(); }
  // Teacher forcing over packed decoder inputs; returns the final hidden states of the real tokens [Nt, D].
  Tensor forward(const Packing& tp, const Tensor& memory, const Packing& sp, const Tensor& token_embedding) {
    Tensor x = embed(tp.tokens, tp.positions, token_embedding);
    const int64_t T = tp.length;
    auto causal = torch::full({T, T}, kMasked, tp.key_bias.options()).triu_(1);
    Tensor self_bias = per_head(tp.key_bias + causal, c_.heads);  // [B*H, T, T]
    for (size_t i = 0; i < layers->size(); ++i) {
      auto [k, v] = layer(i).encoder_attn->project_memory(memory, sp);
      x = layer(i).forward(x, tp, self_bias, k, v, sp.key_bias);
    }
    return finish(x);
  }
  torch::nn::ModuleList layers{nullptr};
};

}  // namespace detail

// ---------------------------------------------------------------------------------------------------
// Seq2Seq

// Note [Embedding scale]
// ~~~~~~~~~~~~~~~~~~~~~~
// BART initialises every weight from N(0, 0.02) and adds token and position embeddings unscaled: fine
// for fine-tuning its pretrained weights, slow from scratch. At d_model 192 the tokens enter the pre-norm
// residual stream at 0.02 per element while each sublayer adds ~0.3, so the token identities are faint
// in every layer until training has grown the embeddings. With scale_embedding (Vaswani et al.; fairseq's
// transformer, the usual recipe for training from scratch) the token embeddings are drawn from
// N(0, 1/d_model) and multiplied by sqrt(d_model) on input: unit scale, above the positions. The output
// projection uses the unscaled weights, so the first logits stay near zero. The `cpu` preset uses it: on
// tiny, stage 1's pooled dev+test R@10 rose from 0.71 to 0.76 on average over four seeds, and the title view
// leaves chance within a few epochs instead of ten (docs/results.md). The bart presets keep BART's scheme.

// Note [BART exactly]
// ~~~~~~~~~~~~~~~~~~~
// With the config that `import` reads from a Hugging Face BART config.json, Seq2Seq computes what
// BartForConditionalGeneration computes (Lewis et al. 2020; read from transformers' modeling_bart.py and
// fairseq's models/bart and models/transformer; tests/bart_import_test.sh holds the logits to 1e-5):
//  - post-norm layers (pre_norm false: LN(x + f(x))) with `layernorm_embedding` after the embedding sum and no
//    final layer norm; GELU (the exact erf form, activation_function "gelu") in the FFN;
//  - learned positions looked up at position + 2 (BartLearnedPositionalEmbedding's offset; the table has
//    max_position_embeddings + 2 rows); dgr counts positions over real tokens, which is the same for inputs
//    padded on the right (BART counts every slot);
//  - token embeddings scaled by sqrt(d_model) only when config.json says scale_embedding (false for bart-base
//    and bart-large); one shared embedding for encoder, decoder and the tied LM head, plus final_logits_bias;
//  - attention: q scaled by head_dim^-0.5 (dgr scales q.k, the same product); separate q/k/v projections are
//    stored fused (qkv_proj: q, k, v rows; cross-attention kv_proj: k, v rows);
//  - pad id 1 and decoder start </s> = 2 (decoder_start_token_id); dropout after each sublayer and the
//    embedding, attention_dropout on the attention probabilities, activation_dropout after GELU, all in
//    training only. LayerNorm eps 1e-5 in both.

Seq2Seq::Seq2Seq(const ModelConfig& config) : config_(config) {
  config_.validate();
  embed_tokens_ = register_module("embed_tokens", torch::nn::Embedding(config_.vocab_size, config_.d_model));
  encoder_ = register_module("encoder", std::make_shared<detail::Encoder>(config_));
  decoder_ = register_module("decoder", std::make_shared<detail::Decoder>(config_));
  if (config_.final_logits_bias)
    final_logits_bias_ = register_buffer("final_logits_bias", torch::zeros({1, config_.vocab_size}));
  // BART's initialisation: N(0, 0.02) for embeddings and projections, zero biases, unit norms; with
  // scale_embedding the token embeddings N(0, 1/d_model) instead (Note [Embedding scale]).
  torch::NoGradGuard no_grad;
  for (auto& item : named_parameters()) {
    const std::string& name = item.key();
    auto& p = item.value();
    bool is_norm = name.find("norm") != std::string::npos;
    if (is_norm) {
      if (name.ends_with(".weight")) p.fill_(1.0);
      else p.zero_();
    } else if (name.ends_with(".bias")) {
      p.zero_();
    } else if (config_.scale_embedding && name == "embed_tokens.weight") {
      p.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(config_.d_model)));
    } else {
      p.normal_(0.0, 0.02);
    }
  }
}

torch::Tensor Seq2Seq::encode(const torch::Tensor& src) {
  Packing sp = pack(src, src, config_.max_positions, config_.pad_id);
  Tensor memory = encoder_->forward(sp, embed_tokens_->weight);
  return sp.pad(memory).view({sp.batch, sp.length, config_.d_model});
}

namespace {
void check_targets(const Tensor& src, const Tensor& tgt, int64_t pad_id) {
  DGR_CHECK(tgt.dim() == 2 && tgt.scalar_type() == torch::kLong && tgt.size(1) > 0,
            "targets must be a non-empty 2-d int64 tensor, found {}-d {}", tgt.dim(), c10::toString(tgt.scalar_type()));
  DGR_CHECK(src.dim() == 2 && (src.size(0) == tgt.size(0) || src.size(0) == 1),
            "source batch {} must equal the target batch {} or be 1", src.dim() == 2 ? src.size(0) : -1, tgt.size(0));
  // The decoder input at t is the label at t-1, so a pad followed by a real token would feed the pad.
  auto real = tgt.ne(pad_id);
  DGR_CHECK(!real.slice(1, 1).logical_and(real.slice(1, 0, -1).logical_not()).any().item<bool>(),
            "targets must be padded on the right only (pad id {})", pad_id);
}
}  // namespace

std::pair<torch::Tensor, torch::Tensor> Seq2Seq::target_logits(const torch::Tensor& src, const torch::Tensor& tgt) {
  check_targets(src, tgt, config_.pad_id);
  Packing sp = pack(src, src, config_.max_positions, config_.pad_id);
  Packing tp = pack(tgt, decoder_input(tgt, config_.decoder_start_id), config_.max_positions, config_.pad_id);
  Tensor memory = encoder_->forward(sp, embed_tokens_->weight);
  Tensor hidden = decoder_->forward(tp, memory, sp, embed_tokens_->weight);
  Tensor labels = tp.dense ? tgt.reshape(-1) : tgt.reshape(-1).index_select(0, tp.index);
  Tensor logits = torch::mm(hidden, embed_tokens_->weight.t());
  if (final_logits_bias_.defined()) logits = logits + final_logits_bias_;
  return {logits, labels};
}

torch::Tensor Seq2Seq::loss(const torch::Tensor& src, const torch::Tensor& tgt, double label_smoothing) {
  DGR_CHECK(label_smoothing >= 0 && label_smoothing < 1, "label smoothing must be in [0, 1), found {}", label_smoothing);
  auto [logits, labels] = target_logits(src, tgt);
  // Under bf16 autocast the logits are bf16; the loss and its gradient are computed in fp32.
  return SmoothedCrossEntropy::apply(logits.to(torch::kFloat), labels, label_smoothing);
}

torch::Tensor Seq2Seq::token_log_probs(const torch::Tensor& src, const torch::Tensor& tgt) {
  auto [logits, labels] = target_logits(src, tgt);
  Tensor lp = logits.gather(1, labels.unsqueeze(1)).squeeze(1) - logits.logsumexp(1);
  auto real = tgt.ne(config_.pad_id).reshape(-1).nonzero().squeeze(1);
  return torch::zeros({tgt.numel()}, lp.options()).index_copy(0, real, lp).view(tgt.sizes());
}

torch::Tensor Seq2Seq::sequence_log_probs(const torch::Tensor& src, const torch::Tensor& tgt) {
  torch::NoGradGuard no_grad;
  return token_log_probs(src, tgt).sum(1);
}

torch::Tensor Seq2Seq::sequence_log_probs_with_grad(const torch::Tensor& src, const torch::Tensor& tgt) {
  auto [logits, labels] = target_logits(src, tgt);
  Tensor lp = LabelLogProb::apply(logits.to(torch::kFloat), labels);  // [Nt] real tokens, row-major; fp32 under autocast
  Tensor rows = tgt.ne(config_.pad_id).nonzero().select(1, 0);     // [Nt] the row of each real token
  return torch::zeros({tgt.size(0)}, lp.options()).index_add(0, rows, lp);
}

DecoderState Seq2Seq::start(const torch::Tensor& src) {
  torch::NoGradGuard no_grad;
  Packing sp = pack(src, src, config_.max_positions, config_.pad_id);
  Tensor memory = encoder_->forward(sp, embed_tokens_->weight);
  DecoderState s;
  s.src_bias = sp.key_bias;
  s.src_index = torch::arange(sp.batch, src.options().dtype(torch::kLong));
  const int64_t head_dim = config_.d_model / config_.heads;
  for (size_t i = 0; i < decoder_->layers->size(); ++i) {
    auto [k, v] = decoder_->layer(i).encoder_attn->project_memory(memory, sp);
    s.cross_k.push_back(k);
    s.cross_v.push_back(v);
    s.self_k.push_back(torch::zeros({sp.batch, config_.heads, 0, head_dim}, k.options()));
    s.self_v.push_back(torch::zeros({sp.batch, config_.heads, 0, head_dim}, v.options()));
  }
  return s;
}

torch::Tensor Seq2Seq::step(DecoderState& state, const torch::Tensor& last_tokens) {
  torch::NoGradGuard no_grad;
  DGR_CHECK(last_tokens.dim() == 1 && last_tokens.size(0) == state.beams(),
            "step needs one token per beam ({}), found shape {}", state.beams(), fmt::join(last_tokens.sizes(), "x"));
  DGR_CHECK(state.length < config_.max_positions, "decoding past max_positions {}", config_.max_positions);
  auto positions = torch::full({state.beams()}, state.length, state.src_index.options());
  Tensor x = decoder_->embed(last_tokens.to(torch::kLong), positions, embed_tokens_->weight);
  for (size_t i = 0; i < decoder_->layers->size(); ++i) x = decoder_->layer(i).step(x, state, i);
  x = decoder_->finish(x);
  ++state.length;
  Tensor logits = torch::mm(x, embed_tokens_->weight.t());
  if (final_logits_bias_.defined()) logits = logits + final_logits_bias_;
  return fast_log_softmax(logits);
}

void Seq2Seq::reorder(DecoderState& state, const torch::Tensor& parents) {
  torch::NoGradGuard no_grad;
  auto idx = parents.to(torch::kLong);
  DGR_CHECK(idx.dim() == 1 && idx.size(0) > 0, "reorder needs a non-empty 1-d index");
  DGR_CHECK(idx.min().item<int64_t>() >= 0 && idx.max().item<int64_t>() < state.beams(),
            "reorder: parent index out of range [0, {})", state.beams());
  for (size_t i = 0; i < state.self_k.size(); ++i) {
    state.self_k[i] = state.self_k[i].index_select(0, idx);
    state.self_v[i] = state.self_v[i].index_select(0, idx);
  }
  state.src_index = state.src_index.index_select(0, idx);
}

}  // namespace dgr::trainer
