// trainer/model.h and trainer/model_scorer.h: presets and config files, incremental decoding against
// teacher forcing (padding, beam reordering, changing beam counts), the loss over padded batches and label
// smoothing, that the model learns a copy task, the Seq2SeqScorer adapter, and the one-pass AdamW step
// against LibTorch's.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <random>

#include "common/error.h"
#include "trainer/adamw.h"
#include "trainer/attention.h"
#include "trainer/model.h"
#include "trainer/torch_compat.h"
#include "trainer/model_scorer.h"
#include "trainer/weight_average.h"

namespace dgr::trainer {
namespace {

class ModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::set_num_threads(1);
    torch::manual_seed(7);
  }
};

int64_t expected_parameters(const ModelConfig& c) {
  const int64_t V = c.vocab_size, D = c.d_model, F = c.ffn, P = c.max_positions;
  const int64_t attention = 4 * D * D + 4 * D;  // fused qkv (or q + kv) and output projection, with biases
  const int64_t ffn = 2 * D * F + F + D;
  const int64_t norm = 2 * D;
  const int64_t encoder_layer = attention + ffn + 2 * norm;
  const int64_t decoder_layer = 2 * attention + ffn + 3 * norm;
  // One shared token embedding, positions per stack, one extra norm per stack (final or embedding norm).
  return V * D + 2 * P * D + c.encoder_layers * encoder_layer + c.decoder_layers * decoder_layer + 2 * norm;
}

int64_t count_parameters(Seq2Seq& model) {
  int64_t n = 0;
  for (const auto& p : model.parameters()) n += p.numel();
  return n;
}

// Parameters far from the N(0, 0.02) initialisation, so that log-probabilities differ clearly between
// tokens and the comparisons below are not trivially met by near-uniform distributions.
void randomise(Seq2Seq& model, double std = 0.3) {
  torch::NoGradGuard no_grad;
  for (auto& p : model.parameters()) p.normal_(0.0, std);
}

ModelConfig small_config(bool pre_norm) {
  ModelConfig c = model_preset("test", 40);
  c.pre_norm = pre_norm;
  c.heads = 4;
  c.encoder_layers = 2;
  c.decoder_layers = 2;
  return c;
}

torch::Tensor ids(std::vector<std::vector<int64_t>> rows) {
  size_t width = 0;
  for (const auto& r : rows) width = std::max(width, r.size());
  auto t = torch::zeros({static_cast<int64_t>(rows.size()), static_cast<int64_t>(width)}, torch::kLong);
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t j = 0; j < rows[i].size(); ++j) t[i][j] = rows[i][j];
  return t;
}

TEST_F(ModelTest, PresetsHaveTheExpectedParameterCounts) {
  for (const char* name : {"test", "cpu"}) {
    ModelConfig c = model_preset(name, 8000);
    Seq2Seq model(c);
    EXPECT_EQ(count_parameters(model), expected_parameters(c)) << name;
  }
  ModelConfig cpu = model_preset("cpu", 8000);
  EXPECT_EQ(expected_parameters(cpu), 3662592);  // method.md: "3.6M params"
  EXPECT_TRUE(cpu.pre_norm);
  EXPECT_EQ(cpu.d_model, 192);
  ModelConfig base = model_preset("bart-base", 1000);
  EXPECT_FALSE(base.pre_norm);
  Seq2Seq bart_base(base);
  EXPECT_EQ(count_parameters(bart_base), expected_parameters(base));
  // BART-large's 406M with its 50265-token vocabulary (fairseq counts 2 more positions, we count 1024).
  ModelConfig large = model_preset("bart-large", 50265);
  EXPECT_NEAR(static_cast<double>(expected_parameters(large)) / 1e6, 406.0, 3.0);
  try {
    model_preset("tiny", 100);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("bart-large"), std::string::npos) << e.what();
  }
}

TEST_F(ModelTest, ConfigJsonRoundTripAndErrors) {
  ModelConfig c = model_preset("cpu", 8000);
  c.dropout = 0.25;
  ModelConfig back = ModelConfig::from_json_string(c.to_json_string());
  EXPECT_EQ(back, c);
  auto expect_error = [](const std::string& text, const std::string& needle) {
    try {
      ModelConfig::from_json_string(text);
      ADD_FAILURE() << "expected ConfigError for " << text;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  std::string json = c.to_json_string();
  expect_error(json.substr(0, json.size() - 1) + ",\"d_modle\":3}", "d_modle");
  expect_error("{\"vocab_size\":100}", "d_model");
  std::string bad_type = json;
  bad_type.replace(bad_type.find("\"heads\":4"), 9, "\"heads\":\"4\"");
  expect_error(bad_type, "heads");
  std::string bad_heads = json;
  bad_heads.replace(bad_heads.find("\"heads\":4"), 9, "\"heads\":5");
  expect_error(bad_heads, "heads");
  expect_error("[1,2]", "object");
  // A file written before scale_embedding existed holds an unscaled model.
  EXPECT_TRUE(c.scale_embedding);
  std::string old_file = json;
  old_file.replace(old_file.find(",\"scale_embedding\":true"), 23, "");
  EXPECT_FALSE(ModelConfig::from_json_string(old_file).scale_embedding);
  std::string bad_scale = json;
  bad_scale.replace(bad_scale.find("\"scale_embedding\":true"), 22, "\"scale_embedding\":1");
  expect_error(bad_scale, "scale_embedding");

  // BART's keys (Note [BART exactly]): written only when they differ from dgr's defaults, read back exactly,
  // and checked.
  EXPECT_EQ(json.find("pad_id"), std::string::npos);
  EXPECT_EQ(json.find("position_offset"), std::string::npos);
  ModelConfig bart = model_preset("bart-base", 50265);
  bart.pad_id = 1;
  bart.position_offset = 2;
  bart.final_logits_bias = true;
  bart.attention_dropout = 0.1;
  bart.activation_dropout = 0.05;
  bart.decoder_start_id = 7;
  EXPECT_EQ(ModelConfig::from_json_string(bart.to_json_string()), bart);
  const std::string bart_json = bart.to_json_string();
  std::string bad_pad = bart_json;
  bad_pad.replace(bad_pad.find("\"pad_id\":1"), 10, "\"pad_id\":50265");
  expect_error(bad_pad, "pad_id");
  std::string bad_offset = bart_json;
  bad_offset.replace(bad_offset.find("\"position_offset\":2"), 19, "\"position_offset\":-1");
  expect_error(bad_offset, "position_offset");
  std::string bad_bias = bart_json;
  bad_bias.replace(bad_bias.find("\"final_logits_bias\":true"), 24, "\"final_logits_bias\":\"yes\"");
  expect_error(bad_bias, "final_logits_bias");
}

// scale_embedding: tokens drawn from N(0, 1/d) enter both stacks multiplied by sqrt(d). The encoder sees
// only the input side, so a scaled model encodes like an unscaled one whose embedding is sqrt(d) times
// larger.
TEST_F(ModelTest, ScaledEmbeddingEntersAtSqrtDModel) {
  ModelConfig scaled_config = model_preset("cpu", 2000);
  ASSERT_TRUE(scaled_config.scale_embedding);
  Seq2Seq scaled(scaled_config);
  const double d = scaled_config.d_model;
  EXPECT_NEAR(scaled.embedding().std().item<double>(), 1.0 / std::sqrt(d), 0.05 / std::sqrt(d));
  ModelConfig plain_config = scaled_config;
  plain_config.scale_embedding = false;
  Seq2Seq plain(plain_config);
  EXPECT_NEAR(plain.embedding().std().item<double>(), 0.02, 0.002);
  {
    torch::NoGradGuard no_grad;
    auto from = scaled.named_parameters();
    for (auto& item : plain.named_parameters()) {
      item.value().copy_(from[item.key()]);
      if (item.key() == "embed_tokens.weight") item.value().mul_(std::sqrt(d));
    }
  }
  scaled.eval();
  plain.eval();
  auto src = ids({{5, 6, 7, 8, 9, 10}, {11, 12, 13, 0, 0, 0}});
  auto a = scaled.encode(src), b = plain.encode(src);
  EXPECT_TRUE(torch::allclose(a, b, 1e-4, 1e-5)) << (a - b).abs().max().item<double>();
}

// Random walk over beams: each step picks random parents (the beam count changes) and random tokens, and
// records log p(token | prefix) as returned by the previous step; at the end every beam's sequence is
// scored by teacher forcing against its own source row.
void check_decoding_matches_teacher_forcing(Seq2Seq& model, const torch::Tensor& src, int steps, uint32_t seed) {
  std::mt19937 rng(seed);
  const int V = model.config().vocab_size;
  struct Beam {
    int64_t source;
    std::vector<int64_t> tokens;
    std::vector<float> log_probs;
  };
  DecoderState state = model.start(src);
  std::vector<Beam> beams;
  for (int64_t i = 0; i < src.size(0); ++i) beams.push_back({i, {}, {}});
  torch::Tensor last;  // [N, V] from the previous step
  for (int k = 0; k <= steps; ++k) {
    int n = 1 + static_cast<int>(rng() % 6);
    std::vector<int64_t> parents(n), tokens(n);
    std::vector<Beam> next;
    for (int j = 0; j < n; ++j) {
      parents[j] = static_cast<int64_t>(rng() % beams.size());
      Beam b = beams[parents[j]];
      if (k == 0) {
        tokens[j] = kBosId;
      } else {
        tokens[j] = 3 + static_cast<int64_t>(rng() % (V - 3));
        b.tokens.push_back(tokens[j]);
        b.log_probs.push_back(last[parents[j]][tokens[j]].item<float>());
      }
      next.push_back(b);
    }
    model.reorder(state, torch::tensor(parents));
    last = model.step(state, torch::tensor(tokens));
    ASSERT_EQ(last.size(0), n);
    beams = next;
  }
  torch::NoGradGuard no_grad;
  for (const auto& b : beams) {
    auto tf = model.token_log_probs(src[b.source].unsqueeze(0), torch::tensor(b.tokens).unsqueeze(0))[0];
    ASSERT_EQ(tf.size(0), static_cast<int64_t>(b.log_probs.size()));
    for (size_t t = 0; t < b.log_probs.size(); ++t) {
      EXPECT_NEAR(tf[t].item<float>(), b.log_probs[t], 1e-4) << "source " << b.source << " token " << t;
    }
  }
}

TEST_F(ModelTest, IncrementalDecodingEqualsTeacherForcing) {
  for (int variant : {0, 1, 2, 3}) {  // pre-norm, post-norm, pre-norm with scaled embeddings, BART's conventions
    ModelConfig config = small_config(variant == 0 || variant == 2);
    config.scale_embedding = variant == 2;
    if (variant == 3) {  // pad 0 kept (the inputs below pad with 0); positions offset, a final logits bias
      config.position_offset = 2;
      config.final_logits_bias = true;
    }
    Seq2Seq model(config);
    randomise(model);
    if (variant == 3) {
      torch::NoGradGuard no_grad;
      for (auto& b : model.named_buffers()) b.value().normal_(0, 1);
    }
    model.eval();
    // Padding on the right and on the left of sources, one beam per source, then beams cross sources.
    auto src = ids({{5, 6, 7, 8, 9, 10}, {11, 12, 13}, {0, 0, 14, 15, 16, 17}});
    check_decoding_matches_teacher_forcing(model, src, 7, 1);
    // One source shared by all beams (the retrieval case).
    check_decoding_matches_teacher_forcing(model, ids({{20, 21, 22, 23}}), 7, 2);

    // Batched teacher forcing with padded targets against one-by-one decoding of each target.
    auto tgt = ids({{30, 31, 32, 33}, {34, 35}, {36, 37, 38}});
    torch::Tensor tf;
    {
      torch::NoGradGuard no_grad;
      tf = model.token_log_probs(src, tgt);
    }
    DecoderState state = model.start(src);
    auto lp = model.step(state, torch::full({3}, kBosId, torch::kLong));
    for (int64_t t = 0; t < tgt.size(1); ++t) {
      for (int64_t b = 0; b < 3; ++b) {
        if (tgt[b][t].item<int64_t>() == kPadId) {
          EXPECT_EQ(tf[b][t].item<float>(), 0.0f);
          continue;
        }
        EXPECT_NEAR(lp[b][tgt[b][t].item<int64_t>()].item<float>(), tf[b][t].item<float>(), 1e-4);
      }
      lp = model.step(state, tgt.select(1, t).clamp_min(3));
    }
  }
}

TEST_F(ModelTest, LossIgnoresPaddingAndMatchesLogProbs) {
  for (bool pre_norm : {true, false}) {
    Seq2Seq model(small_config(pre_norm));
    randomise(model, 0.2);
    model.eval();
    auto src = ids({{5, 6, 7, 8, 9, 10}, {11, 12, 13}, {14, 15, 16, 17}});
    auto tgt = ids({{30, 31, 32, 33}, {34, 35}, {36, 37, 38}});
    for (double eps : {0.0, 0.1}) {
      double batched = model.loss(src, tgt, eps).item<double>();
      double one_by_one = 0;
      for (int64_t b = 0; b < 3; ++b) {
        auto s = src[b].unsqueeze(0), t = tgt[b].unsqueeze(0);
        s = s.slice(1, 0, s.ne(0).sum().item<int64_t>());
        t = t.slice(1, 0, t.ne(0).sum().item<int64_t>());
        one_by_one += model.loss(s, t, eps).item<double>();
      }
      EXPECT_NEAR(batched, one_by_one, 1e-4 * std::abs(one_by_one)) << "eps " << eps;
    }
    double nll = model.loss(src, tgt, 0.0).item<double>();
    double lp = model.sequence_log_probs(src, tgt).sum().item<double>();
    EXPECT_NEAR(nll, -lp, 1e-5 * std::abs(lp));
  }
}

TEST_F(ModelTest, SmoothedLossAndGradientMatchPyTorchCrossEntropy) {
  Seq2Seq model(small_config(true));
  randomise(model, 0.2);
  model.eval();
  auto src = ids({{5, 6, 7, 8, 9, 10}, {11, 12, 13}});
  auto tgt = ids({{30, 31, 32}, {34, 35, 0}});
  const double eps = 0.1;
  auto loss = model.loss(src, tgt, eps) * 0.5;  // a scale other than 1 reaches the custom backward
  model.zero_grad();
  loss.backward();
  std::vector<torch::Tensor> grads;
  for (auto& p : model.parameters()) grads.push_back(p.grad().clone());
  model.zero_grad();
  auto [logits, labels] = model.target_logits(src, tgt);
  EXPECT_EQ(labels.size(0), 5);
  namespace F = torch::nn::functional;
  auto reference = F::cross_entropy(logits, labels, F::CrossEntropyFuncOptions().reduction(torch::kSum).label_smoothing(eps)) * 0.5;
  reference.backward();
  EXPECT_NEAR(loss.item<double>(), reference.item<double>(), 1e-4);
  size_t i = 0;
  for (auto& p : model.parameters()) {
    EXPECT_TRUE(torch::allclose(grads[i], p.grad(), 1e-4, 1e-5)) << "parameter " << i;
    ++i;
  }
}

TEST_F(ModelTest, LearnsACopyTask) {
  ModelConfig c = model_preset("test", 24);
  c.d_model = 32;
  c.ffn = 64;
  Seq2Seq model(c);
  model.train();
  torch::optim::Adam optimizer(model.parameters(), torch::optim::AdamOptions(3e-3));
  std::mt19937 rng(3);
  auto batch = [&] {
    std::vector<std::vector<int64_t>> rows;
    for (int i = 0; i < 32; ++i) {
      std::vector<int64_t> r(3 + rng() % 4);
      for (auto& x : r) x = 3 + static_cast<int64_t>(rng() % 21);
      rows.push_back(r);
    }
    return ids(rows);
  };
  auto mean_loss = [&](const torch::Tensor& b) {
    return model.loss(b, b, 0.0) / b.ne(0).sum().to(torch::kFloat);
  };
  double first = 0, last = 0;
  for (int step = 0; step < 400; ++step) {
    auto b = batch();
    auto loss = mean_loss(b);
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    if (step < 10) first += loss.item<double>() / 10;
    if (step >= 390) last += loss.item<double>() / 10;
  }
  EXPECT_GT(first, 2.5);    // ~log(24) at the start
  EXPECT_LT(last, 0.1 * first) << "first " << first << " last " << last;
}

TEST_F(ModelTest, ScorerScoreEqualsSumOfSteps) {
  auto model = std::make_shared<Seq2Seq>(small_config(true));
  randomise(*model);
  model->train();  // the scorer must switch dropout off itself and restore the mode
  ModelScorer scorer(model);
  EXPECT_EQ(scorer.vocab_size(), 40);
  std::vector<int32_t> source = {5, 6, 7, 8};
  std::vector<std::vector<int32_t>> targets = {{30, 31, 32}, {33}, {}, {34, 35, 36, 37, 38}};
  auto scores = scorer.score(source, targets);
  ASSERT_EQ(scores.size(), targets.size());
  EXPECT_EQ(scores[2], 0.0f);
  for (size_t i = 0; i < targets.size(); ++i) {
    auto decoding = scorer.start(source);
    std::vector<int32_t> parent = {0}, token = {static_cast<int32_t>(kBosId)};
    double sum = 0;
    for (int32_t t : targets[i]) {
      const auto& lp = decoding->step(parent, token);
      ASSERT_EQ(lp.size(), 40u);
      sum += lp[static_cast<size_t>(t)];
      token = {t};
    }
    EXPECT_NEAR(scores[i], sum, 1e-4) << "target " << i;
  }
  EXPECT_TRUE(model->is_training());
  // Several beams from one first step: step({0, 0}, {bos, bos}) gives two identical rows.
  auto decoding = scorer.start(source);
  std::vector<int32_t> parents = {0, 0}, bos = {2, 2};
  const auto& rows = decoding->step(parents, bos);
  ASSERT_EQ(rows.size(), 80u);
  for (size_t v = 0; v < 40; ++v) EXPECT_EQ(rows[v], rows[40 + v]);
  // A chunked score (one target per pass) gives the same as one pass.
  ModelScorer chunked(model, 1);
  auto again = chunked.score(source, targets);
  for (size_t i = 0; i < targets.size(); ++i) EXPECT_NEAR(again[i], scores[i], 1e-5);
}

TEST(WeightAverage, UpdatesWithTheWarmUpDecayAndSwaps) {
  torch::Tensor p = torch::tensor({1.0f, 2.0f}).requires_grad_(true);
  WeightAverage average({{"w", p}}, 0.9);
  ASSERT_EQ(average.named_averages().size(), 1u);
  EXPECT_EQ(average.named_averages()[0].first, "ema/w");
  {
    torch::NoGradGuard no_grad;
    p.copy_(torch::tensor({3.0f, 4.0f}));
  }
  average.update(1);  // d = min(0.9, 2/11)
  const double d = 2.0 / 11.0;
  const torch::Tensor& a = average.named_averages()[0].second;
  EXPECT_NEAR(a[0].item<double>(), d * 1.0 + (1 - d) * 3.0, 1e-6);
  EXPECT_NEAR(a[1].item<double>(), d * 2.0 + (1 - d) * 4.0, 1e-6);
  average.update(1000);  // d = 0.9 once (1 + step) / (10 + step) exceeds it
  EXPECT_NEAR(a[0].item<double>(), 0.9 * (d * 1.0 + (1 - d) * 3.0) + 0.1 * 3.0, 1e-6);
  const float before = a[0].item<float>();
  average.swap();
  EXPECT_EQ(p[0].item<float>(), before);
  EXPECT_EQ(a[0].item<float>(), 3.0f);
  average.swap();
  EXPECT_EQ(p[0].item<float>(), 3.0f);
  EXPECT_THROW(WeightAverage({{"w", p}}, 1.0), ConfigError);
}

// adamw_step (trainer/adamw.h) against torch::optim::AdamW::step on copies of the same parameters and
// gradients: the same values up to float rounding, on the optimizer's own state (step counts, moments), a
// parameter without a gradient left alone, and amsgrad handed to LibTorch.
TEST_F(ModelTest, OnePassAdamWMatchesLibTorchsAdamW) {
  for (bool amsgrad : {false, true}) {
    std::vector<torch::Tensor> mine, theirs;
    for (auto shape : {std::vector<int64_t>{37, 19}, std::vector<int64_t>{101}, std::vector<int64_t>{5, 3}}) {
      auto t = torch::randn(shape);
      mine.push_back(t.clone().requires_grad_(true));
      theirs.push_back(t.clone().requires_grad_(true));
    }
    auto options = torch::optim::AdamWOptions(3e-2).betas({0.9, 0.98}).eps(1e-6).weight_decay(0.05).amsgrad(amsgrad);
    torch::optim::AdamW a(mine, options), b(theirs, options);
    for (int step = 0; step < 6; ++step) {
      for (size_t i = 0; i + 1 < mine.size(); ++i) {  // the last parameter never gets a gradient
        auto g = torch::randn(mine[i].sizes()) * (step + 1);
        mine[i].mutable_grad() = g.clone();
        theirs[i].mutable_grad() = g.clone();
      }
      adamw_step(a);
      b.step();
    }
    for (size_t i = 0; i < mine.size(); ++i) {
      EXPECT_TRUE(torch::allclose(mine[i], theirs[i], 1e-5, 1e-6)) << "parameter " << i << " amsgrad " << amsgrad;
    }
    EXPECT_TRUE(torch::equal(mine.back(), theirs.back()));
    EXPECT_EQ(a.state().size(), 2u);
    for (size_t i = 0; i + 1 < mine.size(); ++i) {
      auto& s = static_cast<torch::optim::AdamWParamState&>(*a.state().at(compat::optimizer_state_key(mine[i])));
      auto& t = static_cast<torch::optim::AdamWParamState&>(*b.state().at(compat::optimizer_state_key(theirs[i])));
      EXPECT_EQ(s.step(), 6);
      EXPECT_TRUE(torch::allclose(s.exp_avg(), t.exp_avg(), 1e-5, 1e-6));
      EXPECT_TRUE(torch::allclose(s.exp_avg_sq(), t.exp_avg_sq(), 1e-5, 1e-6));
    }
  }
}


// Note [Small-matrix attention]: the CPU kernels give LibTorch's values and gradients, for every bias the
// model passes (key padding [G, 1, Lk], causal + padding [G, Lq, Lk], none [1, 1, 1]), one query row
// (incremental decoding), non-contiguous inputs, and with the masked keys' gradients exactly zero.
TEST_F(ModelTest, SmallMatrixAttentionMatchesLibTorch) {
  torch::manual_seed(7);
  const int64_t G = 12, hd = 8;
  struct Case { int64_t Lq, Lk; int bias_kind; };
  for (const Case c : {Case{5, 7, 0}, Case{6, 6, 1}, Case{1, 9, 2}, Case{3, 4, 0}}) {
    SCOPED_TRACE(testing::Message() << "Lq " << c.Lq << " Lk " << c.Lk << " bias " << c.bias_kind);
    torch::Tensor bias;
    if (c.bias_kind == 0) {  // key padding: the last keys of every other matrix masked
      bias = torch::zeros({G, 1, c.Lk});
      for (int64_t g = 0; g < G; g += 2) bias[g][0].slice(0, c.Lk - 2).fill_(-1e9);
    } else if (c.bias_kind == 1) {  // causal
      bias = torch::full({c.Lq, c.Lk}, -1e9).triu_(1).unsqueeze(0).expand({G, c.Lq, c.Lk}).contiguous();
    } else {
      bias = torch::zeros({1, 1, 1});
    }
    // q as a transposed view, as attend_shared passes it.
    auto q0 = torch::randn({c.Lq, G, hd}, torch::requires_grad());
    auto k0 = torch::randn({G, c.Lk, hd}, torch::requires_grad());
    auto v0 = torch::randn({G, c.Lk, hd}, torch::requires_grad());
    auto weights = torch::randn({G, c.Lq, hd});
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));

    auto out = attention(q0.transpose(0, 1), k0, v0, bias, scale);
    (out * weights).sum().backward();
    auto gq = q0.grad().clone(), gk = k0.grad().clone(), gv = v0.grad().clone();
    q0.grad().zero_(); k0.grad().zero_(); v0.grad().zero_();
    auto ref = attention_reference(q0.transpose(0, 1), k0, v0, bias, scale);
    (ref * weights).sum().backward();

    EXPECT_TRUE(torch::allclose(out, ref, 1e-5, 1e-5)) << (out - ref).abs().max().item<float>();
    EXPECT_TRUE(torch::allclose(gq, q0.grad(), 1e-4, 1e-5)) << (gq - q0.grad()).abs().max().item<float>();
    EXPECT_TRUE(torch::allclose(gk, k0.grad(), 1e-4, 1e-5)) << (gk - k0.grad()).abs().max().item<float>();
    EXPECT_TRUE(torch::allclose(gv, v0.grad(), 1e-4, 1e-5)) << (gv - v0.grad()).abs().max().item<float>();
    if (c.bias_kind == 0) {
      EXPECT_EQ(gk[0].slice(0, c.Lk - 2).abs().max().item<float>(), 0.0F);
      EXPECT_EQ(gv[0].slice(0, c.Lk - 2).abs().max().item<float>(), 0.0F);
    }
  }
  // Double tensors go to LibTorch's path, and the shapes are checked.
  auto qd = torch::randn({2, 3, 4}, torch::kDouble);
  EXPECT_TRUE(torch::allclose(attention(qd, qd, qd, torch::zeros({1, 1, 1}, torch::kDouble), 0.5),
                              attention_reference(qd, qd, qd, torch::zeros({1, 1, 1}, torch::kDouble), 0.5)));
  EXPECT_THROW(attention(torch::randn({2, 3, 4}), torch::randn({2, 3, 5}), torch::randn({2, 3, 5}),
                                  torch::zeros({1, 1, 1}), 1.0),
               Error);
}

}  // namespace
}  // namespace dgr::trainer
