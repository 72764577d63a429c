// trainer/distill_loss.h on hand-computed values (and independent formulas written out here), and
// trainer/surrogate.h: against the corpus correction of retrieval/scoring.h, at its caps and boundaries,
// with gradient, and equal to the retrieval-time score of a passage retrieved by a real (tiny) model.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <span>
#include <vector>

#include "common/error.h"
#include "retrieval/fm_index.h"
#include "retrieval/retriever.h"
#include "retrieval/scoring.h"
#include "retrieval/views.h"
#include "trainer/distill_loss.h"
#include "trainer/distill_sampler.h"
#include "trainer/model.h"
#include "trainer/model_scorer.h"
#include "trainer/surrogate.h"
#include "trainer/trainer.h"

namespace dgr::trainer {
namespace {

using retrieval::View;

torch::Tensor leaf(std::vector<double> values) {
  return torch::tensor(values, torch::kDouble).requires_grad_(true);
}

std::vector<double> values(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kDouble).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

class DistillLoss : public ::testing::Test {
 protected:
  void SetUp() override { torch::set_num_threads(1); }
};

// ---- distilled RankNet (DGR) ----

// Batches are padded with the model's pad id (BART's is 1; token 0 is then <s>, a real token).
TEST(PadBatch, PadsWithTheGivenIdOnTheRight) {
  const std::vector<int32_t> a{5, 0, 7}, b{9};
  const torch::Tensor batch = pad_batch({&a, &b}, 1, false);
  EXPECT_TRUE(torch::equal(batch, torch::tensor({5, 0, 7, 9, 1, 1}, torch::kLong).view({2, 3})));
  const std::vector<int32_t> empty;
  EXPECT_TRUE(torch::equal(pad_batch({&empty}, 1, false), torch::tensor({1}, torch::kLong).view({1, 1})));
}

TEST_F(DistillLoss, RankNetSeveralViolatedPairs) {
  // x = [100, 500, 50, 0, 200], M = 300, D = 100; v_ij = x_j - x_i + 300 + (j-i-1) 100:
  //   (0,1) 700  (0,2) 350  (0,3) 400  (0,4) 700     w_0 = 3  -> 6450
  //   (1,2) -150 (1,3) -100 (1,4) 200                w_1 = 1/2 -> 100
  //   (2,3) 250  (2,4) 550                           w_2 = 1/3 -> 266.667
  //   (3,4) 500                                      w_3 = 1/4 -> 125
  // 8 violated pairs: L = 6941.667 / 8 = 867.708.
  // dL/dx_k = (sum of w_i over violated pairs with k = j, minus those with k = i) / 8:
  //   x0: -12/8; x1: (3 - 1/2)/8; x2: (3 - 2/3)/8; x3: (3 + 1/3 - 1/4)/8; x4: (3 + 1/2 + 1/3 + 1/4)/8.
  auto x = leaf({100, 500, 50, 0, 200});
  DistillLossOptions o;
  auto loss = distilled_ranknet(x, o);
  EXPECT_NEAR(loss.item<double>(), (6450.0 + 100.0 + 800.0 / 3.0 + 125.0) / 8.0, 1e-9);
  loss.backward();
  const std::vector<double> expected{-12.0 / 8, 2.5 / 8, (3 - 2.0 / 3) / 8, (3 + 1.0 / 3 - 0.25) / 8,
                                     (3 + 0.5 + 1.0 / 3 + 0.25) / 8};
  const auto grad = values(x.grad());
  for (size_t k = 0; k < 5; ++k) EXPECT_NEAR(grad[k], expected[k], 1e-12) << k;
}

TEST_F(DistillLoss, RankNetWithoutViolatedPairsIsExactlyZeroWithAFiniteGradient) {
  DistillLossOptions o;
  // Gaps of 500: v_ij = -400 (j-i) + 200 < 0. Gaps of 300: v = -200 (j-i) + 200 <= 0, the boundary v = 0
  // for neighbours is not a violation.
  for (const std::vector<double>& scores : {std::vector<double>{2000, 1500, 1000, 500, 0},
                                            std::vector<double>{1000, 700, 400, 100, -200}}) {
    auto x = leaf(scores);
    auto loss = distilled_ranknet(x, o);
    EXPECT_EQ(loss.item<double>(), 0.0);
    loss.backward();
    for (double g : values(x.grad())) EXPECT_EQ(g, 0.0);
  }
  // A single-passage list has no pairs.
  auto one = leaf({5});
  auto loss = distilled_ranknet(one, o);
  EXPECT_EQ(loss.item<double>(), 0.0);
  loss.backward();
  EXPECT_TRUE(std::isfinite(values(one.grad())[0]));
}

TEST_F(DistillLoss, RankNetTiesAreViolatedBecauseOfTheMargin) {
  // All S equal: every pair is violated with v = 300 + (j-i-1) 100:
  //   i=0: 3 (300+400+500+600) = 5400; i=1: (300+400+500)/2 = 600; i=2: (300+400)/3; i=3: 300/4 = 75.
  auto x = leaf({5, 5, 5, 5, 5});
  DistillLossOptions o;
  auto loss = distilled_ranknet(x, o);
  EXPECT_NEAR(loss.item<double>(), (5400 + 600 + 700.0 / 3 + 75) / 10.0, 1e-9);
  // Other constants: M = 10, D = 0, w_0 = 1 on [0, 0, 0]: pairs (0,1) (0,2) (1,2), v = 10, weights 1, 1, 1/2.
  o.margin = 10;
  o.margin_step = 0;
  o.head_weight = 1;
  EXPECT_NEAR(distilled_ranknet(leaf({0, 0, 0}), o).item<double>(), (10 + 10 + 5) / 3.0, 1e-12);
}

TEST_F(DistillLoss, DgrAveragesTheTwoListsAndLtrgrUsesTheDrawsPositions) {
  DistillDraw draw;
  draw.a.candidates = {0, 1, 2, 3, 4};
  draw.a.teacher_scores = {5, 4, 3, 2, 1};
  draw.b = draw.a;
  draw.b.candidates[0] = 9;
  draw.top_negative_position = 3;
  draw.random_negative_position = 2;
  DistillLossOptions o;
  auto a = leaf({100, 500, 50, 0, 200});
  auto b = leaf({5, 5, 5, 5, 5});
  EXPECT_NEAR(ranking_loss(a, b, draw, o).item<double>(),
              0.5 * (6450.0 + 100.0 + 800.0 / 3.0 + 125.0) / 8.0 + 0.5 * (5400 + 600 + 700.0 / 3 + 75) / 10.0, 1e-9);

  // LTRGR: 0.5 [S(top neg) - S(top pos) + 300]_+ + 0.5 [S(rand neg) - S(rand pos) + 400]_+
  //   top pos = a[0] = 1000, top neg = a[3] = 1200 -> 0.5 * 500; rand pos = b[0] = 800, rand neg = b[2] = 100
  //   -> 0.5 * [100 - 800 + 400]_+ = 0.
  o.kind = DistillLossKind::ltrgr;
  auto la = leaf({1000, 900, 100, 1200, 0});
  auto lb = leaf({800, 900, 100, 1200, 0});
  auto loss = ranking_loss(la, lb, draw, o);
  EXPECT_NEAR(loss.item<double>(), 250.0, 1e-12);
  loss.backward();
  EXPECT_EQ(values(la.grad()), (std::vector<double>{-0.5, 0, 0, 0.5, 0}));
  EXPECT_EQ(values(lb.grad()), (std::vector<double>{0, 0, 0, 0, 0}));
  //   both pairs active: rand pos 0 -> 0.5 * 500 + 0.5 * [100 - 0 + 400] = 500.
  EXPECT_NEAR(ranking_loss(la, leaf({0, 900, 100, 1200, 0}), draw, o).item<double>(), 500.0, 1e-12);
  o.ltrgr_top_margin = 0;
  o.ltrgr_random_margin = 0;
  EXPECT_NEAR(ltrgr_loss(leaf({10})[0], leaf({30})[0], leaf({0})[0], leaf({-5})[0], o).item<double>(), 10.0, 1e-12);

  // Generation only: no ranking term.
  o.kind = DistillLossKind::generation;
  EXPECT_EQ(ranking_loss(la, lb, draw, o).item<double>(), 0.0);
  // A list of the wrong length is an error.
  o.kind = DistillLossKind::dgr;
  EXPECT_THROW(ranking_loss(leaf({1, 2, 3}), lb, draw, o), Error);
}

// ---- listwise distillation ----

std::vector<double> softmax(const std::vector<double>& x, double temperature) {
  double max = *std::max_element(x.begin(), x.end()), sum = 0;
  std::vector<double> p(x.size());
  for (size_t i = 0; i < x.size(); ++i) sum += p[i] = std::exp((x[i] - max) / temperature);
  for (double& v : p) v /= sum;
  return p;
}

TEST_F(DistillLoss, ListNetAndKlAgainstTheirDefinitions) {
  const std::vector<double> student{300, 100, 250, -50}, teacher{2.0, 0.5, 3.0, -1.0};
  DistillLossOptions o;
  o.student_temperature = 100;
  o.teacher_temperature = 2;
  const auto p = softmax(teacher, 2), q = softmax(student, 100);
  double cross_entropy = 0, kl = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    cross_entropy -= p[i] * std::log(q[i]);
    kl += p[i] * std::log(p[i] / q[i]);
  }
  auto x = leaf(student);
  auto loss = listnet_loss(x, torch::tensor(teacher, torch::kDouble), o);
  EXPECT_NEAR(loss.item<double>(), cross_entropy, 1e-12);
  loss.backward();
  // d CE / d x_i = (q_i - p_i) / T_s
  const auto grad = values(x.grad());
  for (size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(grad[i], (q[i] - p[i]) / 100, 1e-12);

  auto y = leaf(student);
  auto kl_value = kl_loss(y, torch::tensor(teacher, torch::kDouble), o);
  EXPECT_NEAR(kl_value.item<double>(), kl, 1e-12);
  kl_value.backward();
  const auto kl_grad = values(y.grad());
  for (size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(kl_grad[i], grad[i], 1e-12) << "same gradient as ListNet";
  // Equal distributions: KL = 0. A teacher probability of 0 (score -inf) adds nothing (no NaN).
  EXPECT_NEAR(kl_loss(leaf({100, 0}), torch::tensor(std::vector<double>{1, -1}, torch::kDouble), o).item<double>(), 0.0, 1e-12);
  const double inf = std::numeric_limits<double>::infinity();
  auto zero_p = kl_loss(leaf({100, 0}), torch::tensor(std::vector<double>{1, -inf}, torch::kDouble), o);
  EXPECT_NEAR(zero_p.item<double>(), -std::log(softmax({100, 0}, 100)[0]), 1e-12);
}

TEST_F(DistillLoss, ListMleIsThePlackettLuceLikelihoodOfTheTeacherOrder) {
  // Teacher order of t = [0.1, 0.9, 0.5, 0.5]: 1, then 2 and 3 (tie: list order), then 0.
  const std::vector<double> student{1, 3, 2, 2.5}, teacher{0.1, 0.9, 0.5, 0.5};
  DistillLossOptions o;
  o.student_temperature = 0.5;
  const std::vector<int> order{1, 2, 3, 0};
  double expected = 0;
  for (size_t k = 0; k < order.size(); ++k) {
    double sum = 0;
    for (size_t m = k; m < order.size(); ++m) sum += std::exp(student[static_cast<size_t>(order[m])] / 0.5);
    expected += std::log(sum) - student[static_cast<size_t>(order[k])] / 0.5;
  }
  auto x = leaf(student);
  auto loss = listmle_loss(x, torch::tensor(teacher, torch::kDouble), o);
  EXPECT_NEAR(loss.item<double>(), expected, 1e-12);
  loss.backward();
  for (double g : values(x.grad())) EXPECT_TRUE(std::isfinite(g));
}

TEST_F(DistillLoss, LambdaLossHandComputed) {
  // t = [3, 1, 2]: relevance (members scored lower) [2, 0, 1], gains 2^rel - 1 = [3, 0, 1];
  // IDCG = 3/log2(2) + 1/log2(3) = 3.6309298.
  // Student x = [0, 2, 1]: ranks 3, 1, 2 -> discounts [1/log2(4), 1/log2(2), 1/log2(3)] = [0.5, 1, 0.6309298].
  // Pairs with t_i > t_j: (0,1) |3-0||0.5-1| = 1.5; (0,2) |3-1||0.5-0.6309| = 0.2618595; (2,1) |1-0||0.6309-1| = 0.3690702.
  // L = sum dNDCG log(1 + e^{-(x_i - x_j)}) / IDCG.
  const double idcg = 3.0 + 1.0 / std::log2(3.0);
  const double d3 = 1.0 / std::log2(3.0);
  const double expected = (1.5 * std::log1p(std::exp(2.0)) + 2 * (d3 - 0.5) * std::log1p(std::exp(1.0)) +
                           (1 - d3) * std::log1p(std::exp(1.0))) / idcg;
  DistillLossOptions o;
  o.student_temperature = 1;
  auto x = leaf({0, 2, 1});
  auto loss = lambda_loss(x, torch::tensor(std::vector<double>{3, 1, 2}, torch::kDouble), o);
  EXPECT_NEAR(loss.item<double>(), expected, 1e-12);
  loss.backward();
  const auto grad = values(x.grad());
  EXPECT_LT(grad[0], 0);  // pushed up (the teacher's best)
  EXPECT_GT(grad[1], 0);  // pushed down
  // A teacher without preferences gives 0.
  EXPECT_EQ(lambda_loss(leaf({0, 2, 1}), torch::tensor(std::vector<double>{1, 1, 1}, torch::kDouble), o).item<double>(), 0.0);
}

TEST_F(DistillLoss, ListwiseKindsAverageBothListsWithTheirTeacherScores) {
  DistillDraw draw;
  draw.a.candidates = {0, 1, 2};
  draw.a.teacher_scores = {3, 1, 2};
  draw.b.candidates = {5, 1, 2};
  draw.b.teacher_scores = {0, 1, 2};
  auto a = leaf({0, 2, 1}), b = leaf({1, 0, 3});
  const auto ta = torch::tensor(draw.a.teacher_scores, torch::kDouble);
  const auto tb = torch::tensor(draw.b.teacher_scores, torch::kDouble);
  DistillLossOptions o;
  o.kind = DistillLossKind::listnet;
  EXPECT_NEAR(ranking_loss(a, b, draw, o).item<double>(),
              0.5 * listnet_loss(a, ta, o).item<double>() + 0.5 * listnet_loss(b, tb, o).item<double>(), 1e-12);
  o.kind = DistillLossKind::listmle;
  EXPECT_NEAR(ranking_loss(a, b, draw, o).item<double>(),
              0.5 * listmle_loss(a, ta, o).item<double>() + 0.5 * listmle_loss(b, tb, o).item<double>(), 1e-12);
}

TEST_F(DistillLoss, KindsNamesDefaultsAndValidation) {
  for (const char* name : {"dgr", "ltrgr", "listnet", "listmle", "lambdaloss", "kl", "generation"}) {
    EXPECT_STREQ(distill_loss_kind_name(parse_distill_loss_kind(name)), name);
  }
  try {
    parse_distill_loss_kind("ranknet");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("lambdaloss"), std::string::npos) << e.what();
  }
  DistillLossOptions o;
  EXPECT_EQ(generation_weight(o), 500.0);
  o.kind = DistillLossKind::ltrgr;
  EXPECT_EQ(generation_weight(o), 1000.0);
  o.gen_weight = 7.0;
  EXPECT_EQ(generation_weight(o), 7.0);
  o.validate();
  o.student_temperature = 0;
  EXPECT_THROW(o.validate(), ConfigError);
}

// ---- the surrogate ----

constexpr int32_t kTitleView = 4, kBodyView = 5, kPqView = 6, E = 7, P = 8, B = 9;

retrieval::SpecialTokens specials() {
  retrieval::SpecialTokens s;
  s.title_view = kTitleView;
  s.body_view = kBodyView;
  s.pq_view = kPqView;
  s.end_id = E;
  s.pq_start = P;
  s.boundary = B;
  return s;
}

// Parameters far from the N(0, 0.02) initialisation so that log-probabilities differ between tokens.
std::shared_ptr<Seq2Seq> tiny_model(int vocab, uint64_t seed) {
  torch::manual_seed(seed);
  auto model = std::make_shared<Seq2Seq>(model_preset("test", vocab));
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.normal_(0.0, 0.3);
  return model;
}

data::CachedKey cached(std::vector<int32_t> tokens, View view, uint64_t count, float score = 0) {
  return {std::move(tokens), static_cast<int8_t>(view), count, score};
}

// The expected S by the retrieval-time formulas: s by ModelScorer (teacher forcing without gradient),
// w by retrieval::key_weight, and the coverage factors given.
double expected_score(ModelScorer& scorer, const std::vector<int32_t>& query,
                      const std::vector<data::CachedKey>& keys, const std::vector<double>& coverage,
                      const SurrogateOptions& options) {
  double total = 0;
  for (size_t k = 0; k < keys.size(); ++k) {
    const auto view = static_cast<View>(keys[k].view);
    const auto source = retrieval::make_source(query, view, options.special, options.limits);
    const double s = scorer.score(source, {keys[k].tokens})[0];
    total += retrieval::key_weight(retrieval::adjusted_log_prob(s, view, options.scoring), keys[k].count,
                                   options.total_tokens, options.scoring) * coverage[k];
  }
  return total;
}

class Surrogate : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::set_num_threads(1);
    model = tiny_model(40, 3);
    model->eval();
    options.special = specials();
    options.total_tokens = 10'000'000;
  }
  std::shared_ptr<Seq2Seq> model;
  SurrogateOptions options;
  const std::vector<int32_t> query{10, 11, 12, 13};
};

TEST_F(Surrogate, EqualsTheCorpusCorrectedSumWithTokenSetCoverage) {
  // Passage 0: a title key, two body keys sharing tokens 21 22, a pq key whose 20 and @@ are covered.
  // Coverage (alpha 0.8): {10 11 @@} 3/3 -> 1; {20 21 22} 3/3 -> 1; {21 22 23} 1/3 -> 0.2 + 0.8/3;
  // {|| 12 20 @@} 2/4 -> 0.6. Passage 1 shares a body key with passage 0 (scored once, same value).
  const std::vector<data::CachedKey> p0{cached({10, 11, E}, View::title, 1), cached({20, 21, 22}, View::body, 2),
                                            cached({21, 22, 23}, View::body, 3), cached({P, 12, 20, E}, View::pq, 1)};
  const std::vector<data::CachedKey> p1{cached({20, 21, 22}, View::body, 2), cached({10, E}, View::title, 4)};
  const std::vector<std::span<const data::CachedKey>> passages{p0, p1, {}};
  torch::NoGradGuard no_grad;
  const auto got = values(surrogate_scores(*model, query, passages, options));
  ModelScorer scorer(model);
  const double e0 = expected_score(scorer, query, p0, {1, 1, 0.2 + 0.8 / 3, 0.6}, options);
  const double e1 = expected_score(scorer, query, p1, {1, 1}, options);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_GT(e0, 0);
  EXPECT_NEAR(got[0], e0, 1e-4 * e0);
  EXPECT_NEAR(got[1], e1, 1e-4 * std::max(1.0, e1));
  EXPECT_EQ(got[2], 0.0);  // no keys, no score

  // The released behaviour: pq keys keep their cached score.
  auto p0_cached = p0;
  p0_cached[3].score = -20.0f;
  options.rescore_pq = false;
  const auto released = values(surrogate_scores(*model, query, std::vector<std::span<const data::CachedKey>>{p0_cached}, options));
  const double pq_weight = retrieval::key_weight(retrieval::adjusted_log_prob(-20.0, View::pq, options.scoring), 1,
                                                 options.total_tokens, options.scoring);
  const double without_pq = expected_score(scorer, query, std::vector<data::CachedKey>(p0.begin(), p0.begin() + 3),
                                           {1, 1, 0.2 + 0.8 / 3}, options);
  EXPECT_NEAR(released[0], without_pq + 0.6 * pq_weight, 1e-4 * released[0]);
}

TEST_F(Surrogate, OnlyTheFirstMaxKeysCountAndNothingIsPadded) {
  std::mt19937 rng(5);
  std::vector<data::CachedKey> many;
  for (int k = 0; k < 45; ++k) {
    many.push_back(cached({static_cast<int32_t>(10 + rng() % 30), static_cast<int32_t>(10 + rng() % 30)}, View::body,
                          1 + rng() % 5));
  }
  const std::vector<data::CachedKey> first(many.begin(), many.begin() + 40);
  const std::vector<data::CachedKey> few(many.begin(), many.begin() + 3);
  torch::NoGradGuard no_grad;
  const auto got = values(surrogate_scores(*model, query, std::vector<std::span<const data::CachedKey>>{many, first, few}, options));
  // Equal up to float rounding: a decoder batch of other targets may round differently.
  auto near = [](double a, double b) { return std::abs(a - b) <= 1e-6 * std::max(1.0, std::abs(b)); };
  EXPECT_PRED2(near, got[0], got[1]);
  EXPECT_GT(got[0], got[2]);
  options.max_keys = 3;
  EXPECT_PRED2(near, values(surrogate_scores(*model, query, std::vector<std::span<const data::CachedKey>>{many}, options))[0],
               got[2]);
  // The example overload: repeated candidates score the same.
  data::DistillExample example;
  example.qid = "q";
  example.query_tokens = query;
  example.candidates.resize(2);
  example.candidates[0].keys = few;
  example.candidates[1].keys = first;
  options.max_keys = 40;
  const auto by_candidate = values(surrogate_scores(*model, example, std::vector<int32_t>{1, 0, 1}, options));
  EXPECT_PRED2(near, by_candidate[0], got[1]);
  EXPECT_PRED2(near, by_candidate[1], got[2]);
  EXPECT_EQ(by_candidate[2], by_candidate[0]);
  EXPECT_THROW(surrogate_scores(*model, example, std::vector<int32_t>{2}, options), Error);
  // Bad keys are data errors.
  const std::vector<data::CachedKey> bad_view{cached({10}, static_cast<View>(3), 1)};
  EXPECT_THROW(surrogate_scores(*model, query, std::vector<std::span<const data::CachedKey>>{bad_view}, options),
               DataError);
}

// Sum of the squared gradient norms, and whether every gradient is finite.
std::pair<double, bool> gradient_norm2(Seq2Seq& model) {
  double total = 0;
  bool finite = true;
  for (const auto& p : model.parameters()) {
    if (!p.grad().defined()) continue;
    finite &= torch::isfinite(p.grad()).all().item<bool>();
    total += p.grad().pow(2).sum().item<double>();
  }
  return {total, finite};
}

TEST_F(Surrogate, HasAGradientThatMatchesFiniteDifferences) {
  const std::vector<data::CachedKey> keys{cached({10, 11, E}, View::title, 1), cached({20, 21, 22}, View::body, 2),
                                              cached({21, 22, 23}, View::body, 3), cached({P, 12, 20, E}, View::pq, 1)};
  const std::vector<std::span<const data::CachedKey>> passages{keys};
  model->train();  // the test preset has no dropout: train and eval agree
  model->zero_grad();
  auto s = surrogate_scores(*model, query, passages, options);
  ASSERT_TRUE(s.requires_grad());
  s.sum().backward();
  const auto [norm2, finite] = gradient_norm2(*model);
  EXPECT_TRUE(finite);
  ASSERT_GT(norm2, 0);
  // Directional derivative along the gradient: (S(theta + eps g) - S(theta - eps g)) / 2 eps = |g|^2.
  std::vector<torch::Tensor> grads;
  for (const auto& p : model->parameters()) grads.push_back(p.grad().clone());
  const double eps = 1e-3 / std::sqrt(norm2);
  auto shifted = [&](double step) {
    torch::NoGradGuard no_grad;
    auto params = model->parameters();
    for (size_t i = 0; i < params.size(); ++i) params[i].add_(grads[i], step);
    const double v = surrogate_scores(*model, query, passages, options).item<double>();
    for (size_t i = 0; i < params.size(); ++i) params[i].sub_(grads[i], step);
    return v;
  };
  const double slope = (shifted(eps) - shifted(-eps)) / (2 * eps);
  EXPECT_NEAR(slope, norm2, 0.05 * norm2);
}

TEST_F(Surrogate, NoGradientAboveTheCapsOrBelowTheReluBoundary) {
  const std::vector<data::CachedKey> pq_only{cached({P, 12, 20, E}, View::pq, 1), cached({P, 13, E}, View::pq, 2)};
  const std::vector<std::span<const data::CachedKey>> passages{pq_only};
  auto run = [&](const SurrogateOptions& o) {
    model->zero_grad();
    auto s = surrogate_scores(*model, query, passages, o);
    s.sum().backward();
    return std::make_pair(s.item<double>(), gradient_norm2(*model));
  };
  // pq offset so large that every pq key sits at pq_cap: S = w(pq_cap) (c = 1, then 1 - 0.8 + 0.8 * 1/3
  // for the second key, whose || and @@ are covered), gradient exactly 0.
  SurrogateOptions o = options;
  o.scoring.pq_offset = 1000;
  auto [capped, capped_grad] = run(o);
  const double w1 = retrieval::key_weight(o.scoring.pq_cap, 1, o.total_tokens, o.scoring);
  const double w2 = retrieval::key_weight(o.scoring.pq_cap, 2, o.total_tokens, o.scoring);
  EXPECT_NEAR(capped, w1 + (0.2 + 0.8 / 3) * w2, 1e-9 * capped);
  EXPECT_EQ(capped_grad.first, 0.0);
  EXPECT_TRUE(capped_grad.second);
  // max_log_prob below every s (one-token body keys, a corpus large enough that w stays > 0): S is a
  // constant, the gradient exactly 0.
  const std::vector<data::CachedKey> body{cached({20}, View::body, 1), cached({21}, View::body, 1)};
  o = options;
  o.scoring.max_log_prob = -30;
  o.total_tokens = 1'000'000'000'000'000'000ull;
  model->zero_grad();
  auto at_max = surrogate_scores(*model, query, std::vector<std::span<const data::CachedKey>>{body}, o);
  at_max.sum().backward();
  EXPECT_NEAR(at_max.item<double>(), 2 * retrieval::key_weight(-30, 1, o.total_tokens, o.scoring), 1e-9 * at_max.item<double>());
  EXPECT_GT(at_max.item<double>(), 0);
  EXPECT_EQ(gradient_norm2(*model).first, 0.0);
  // A corpus so small that every key is more frequent than the model believes: w = 0, S = 0, gradient 0.
  o = options;
  o.total_tokens = 10;
  auto [zero, zero_grad] = run(o);
  EXPECT_EQ(zero, 0.0);
  EXPECT_EQ(zero_grad.first, 0.0);
  EXPECT_TRUE(zero_grad.second);
}

TEST_F(Surrogate, FusedSequenceLogProbsMatchTokenLogProbsWithGradient) {
  // Seq2Seq::sequence_log_probs_with_grad (the surrogate's re-scoring) against the unfused
  // token_log_probs(...).sum(1): values and parameter gradients under a weighted sum.
  const auto src = torch::tensor(std::vector<int64_t>{10, 11, 12, kBodyView, 3}).unsqueeze(0);
  const auto tgt = torch::tensor(std::vector<int64_t>{20, 21, 22, 0, 0, 30, 31, 32, 33, 34, 12, 0, 0, 0, 0}).view({3, 5});
  const auto weights = torch::tensor(std::vector<float>{1.5f, -0.5f, 2.0f});
  model->train();
  auto gradients = [&](const torch::Tensor& sums) {
    model->zero_grad();
    (sums * weights).sum().backward();
    std::vector<torch::Tensor> out;
    for (const auto& p : model->parameters()) out.push_back(p.grad().clone());
    return out;
  };
  const auto fused = model->sequence_log_probs_with_grad(src, tgt);
  const auto plain = model->token_log_probs(src, tgt).sum(1);
  ASSERT_EQ(fused.sizes(), plain.sizes());
  EXPECT_TRUE(torch::allclose(fused, plain, 1e-5, 1e-5));
  const auto g_fused = gradients(fused);
  const auto g_plain = gradients(plain);
  for (size_t i = 0; i < g_fused.size(); ++i) EXPECT_TRUE(torch::allclose(g_fused[i], g_plain[i], 1e-4, 1e-6)) << i;
}

// A corpus where the tiny model's keys get positive weights: many passages, so that a key's corpus
// probability is small next to the model's.
std::vector<retrieval::PassageTokens> corpus(int passages, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  auto word = [&] { return static_cast<int32_t>(10 + rng() % static_cast<uint32_t>(vocab - 10)); };
  std::vector<retrieval::PassageTokens> out;
  for (int p = 0; p < passages; ++p) {
    retrieval::PassageTokens passage;
    for (int i = 0, n = 2 + static_cast<int>(rng() % 2); i < n; ++i) passage.title.push_back(word());
    for (int i = 0; i < 16; ++i) passage.body.push_back(word());
    if (p % 2 == 0) passage.pseudo_queries.push_back({word(), word(), word()});
    out.push_back(std::move(passage));
  }
  return out;
}

TEST_F(Surrogate, EqualsTheRetrievalScoreOfARetrievedPassage) {
  const int vocab = 60;
  model = tiny_model(vocab, 11);
  const auto passages = corpus(80, vocab, 2);
  // Title and pseudo-query keys are complete identifiers (method.md section 4): a random model gives them
  // weight 0, so the model first learns the titles and pseudo-queries of the six query passages (a few
  // steps of the generation loss).
  {
    std::vector<std::vector<int32_t>> sources, targets;
    for (int q = 0; q < 6; ++q) {
      const auto& p = passages[static_cast<size_t>(q * 7)];
      std::vector<int32_t> query(p.title);
      query.insert(query.end(), p.body.begin(), p.body.begin() + 4);
      sources.push_back(retrieval::make_source(query, View::title, specials(), retrieval::ViewLimits{}));
      targets.push_back(retrieval::title_target(p, specials(), retrieval::ViewLimits{}));
      if (!p.pseudo_queries.empty()) {  // and its pseudo-query ("||" pq "@@", as pq keys are complete too)
        sources.push_back(retrieval::make_source(query, View::pq, specials(), retrieval::ViewLimits{}));
        std::vector<int32_t> target{specials().pq_start};
        target.insert(target.end(), p.pseudo_queries[0].begin(), p.pseudo_queries[0].end());
        target.push_back(specials().end_id);
        targets.push_back(std::move(target));
      }
    }
    std::vector<const std::vector<int32_t>*> src, tgt;
    for (size_t i = 0; i < sources.size(); ++i) {
      src.push_back(&sources[i]);
      tgt.push_back(&targets[i]);
    }
    const torch::Tensor src_batch = pad_batch(src, 0, false), tgt_batch = pad_batch(tgt, 0, false);
    torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(1e-2));
    model->train();
    for (int step = 0; step < 60; ++step) {
      adam.zero_grad();
      model->loss(src_batch, tgt_batch, 0.0).backward();
      adam.step();
    }
  }
  model->eval();
  std::vector<std::vector<int32_t>> sequences;
  for (const auto& p : passages) sequences.push_back(retrieval::index_sequence(p, specials()));
  const auto index = retrieval::FMIndex::build(sequences, B);
  retrieval::RetrieverOptions ro;
  ro.beam.beam_size = 5;
  ro.unigram_keys = false;  // unigram keys are scored without coverage at retrieval time (see surrogate.h)
  ro.scoring.top_k = 80;  // every passage a key hits (pq-matched ones score below the taught titles)
  const retrieval::Retriever retriever(index, specials(), std::vector<bool>(static_cast<size_t>(vocab), true), ro);
  ModelScorer scorer(model);
  SurrogateOptions so;
  so.special = specials();
  so.limits = ro.limits;
  so.scoring = ro.scoring;
  so.total_tokens = index.total_tokens();

  int compared = 0;
  double max_relative_error = 0;
  int partial_coverage = 0;  // keys with c < 1: the coverage rule was exercised
  std::set<int> views;
  for (int q = 0; q < 6; ++q) {
    const auto& source_passage = passages[static_cast<size_t>(q * 7)];
    std::vector<int32_t> query(source_passage.title);
    query.insert(query.end(), source_passage.body.begin(), source_passage.body.begin() + 4);
    for (const retrieval::RetrievedPassage& passage : retriever.retrieve(scorer, query)) {
      if (passage.keys.empty() || passage.keys.size() > 40) continue;
      std::vector<data::CachedKey> keys;
      for (const retrieval::MatchedKey& m : passage.keys) {
        keys.push_back(cached(m.key.tokens, m.key.view, m.key.count, static_cast<float>(m.key.score)));
        views.insert(static_cast<int>(m.key.view));
        partial_coverage += m.coverage < 1.0 ? 1 : 0;
      }
      torch::NoGradGuard no_grad;
      const double s = surrogate_scores(*model, query, std::vector<std::span<const data::CachedKey>>{keys}, so).item<double>();
      EXPECT_NEAR(s, passage.score, 1e-3 * std::max(1.0, std::abs(passage.score))) << "query " << q << " doc " << passage.doc;
      max_relative_error = std::max(max_relative_error, std::abs(s - passage.score) / std::max(1.0, std::abs(passage.score)));
      ++compared;
    }
  }
  EXPECT_GE(compared, 10);
  EXPECT_EQ(views.size(), 3u) << "keys of every view were compared: " << (views.count(0) ? "title " : "") << (views.count(1) ? "body " : "") << (views.count(2) ? "pq" : "");
  RecordProperty("passages_compared", compared);
  EXPECT_GT(partial_coverage, 0);
  RecordProperty("keys_with_partial_coverage", partial_coverage);
  RecordProperty("max_relative_error", fmt::format("{:.3g}", max_relative_error));
}


// Not run by default (--gtest_also_run_disabled_tests): the cost of one stage-2 query with the "cpu"
// preset, 8000 tokens, 6 passages x 40 keys of the three views, forward and backward.
TEST(SurrogateBenchmark, DISABLED_CpuPresetOneQuery) {
  torch::set_num_threads(1);
  torch::manual_seed(1);
  const int vocab = 8000;
  auto model = std::make_shared<Seq2Seq>(model_preset("cpu", vocab));
  model->train();
  std::mt19937 rng(3);
  auto word = [&] { return static_cast<int32_t>(20 + rng() % (vocab - 20)); };
  std::vector<std::vector<data::CachedKey>> passages(6);
  for (auto& keys : passages) {
    for (int k = 0; k < 40; ++k) {
      const View view = static_cast<View>(k % 3);
      std::vector<int32_t> tokens;
      const int length = view == View::body ? 10 : view == View::title ? 6 : 12;
      if (view == View::pq) tokens.push_back(P);
      while (static_cast<int>(tokens.size()) < length) tokens.push_back(word());
      if (view != View::body) tokens.push_back(E);
      keys.push_back(cached(tokens, view, 1 + rng() % 100, -10));
    }
  }
  // Half of the negatives' keys repeat another passage's (lists share negatives and P_a may be P_b).
  for (int k = 0; k < 20; ++k) passages[5][static_cast<size_t>(k)] = passages[4][static_cast<size_t>(k)];
  std::vector<std::span<const data::CachedKey>> spans(passages.begin(), passages.end());
  std::vector<int32_t> query;
  for (int i = 0; i < 10; ++i) query.push_back(word());
  SurrogateOptions options;
  options.special = specials();
  options.total_tokens = 2'400'000;
  // Against the same tokens through the fused cross-entropy of Seq2Seq::loss (the log-softmax costs).
  {
    std::vector<std::vector<int32_t>> all;
    for (const auto& keys : passages)
      for (const auto& k : keys) all.push_back(k.tokens);
    auto tgt = torch::zeros({static_cast<int64_t>(all.size()), 14}, torch::kLong);
    for (size_t i = 0; i < all.size(); ++i)
      for (size_t t = 0; t < all[i].size(); ++t) tgt[static_cast<int64_t>(i)][static_cast<int64_t>(t)] = all[i][t];
    auto src = torch::tensor(std::vector<int64_t>(query.begin(), query.end())).unsqueeze(0);
    for (int round = 0; round < 3; ++round) {
      auto t0 = std::chrono::steady_clock::now();
      model->zero_grad();
      auto l = model->loss(src, tgt, 0.0);
      auto t1 = std::chrono::steady_clock::now();
      l.backward();
      auto t2 = std::chrono::steady_clock::now();
      model->zero_grad();
      auto m = model->token_log_probs(src, tgt).sum();
      auto t3 = std::chrono::steady_clock::now();
      m.backward();
      auto t4 = std::chrono::steady_clock::now();
      model->zero_grad();
      auto f = model->sequence_log_probs_with_grad(src, tgt).sum();
      auto t5 = std::chrono::steady_clock::now();
      f.backward();
      auto t6 = std::chrono::steady_clock::now();
      std::printf("%lld tokens: loss() %.1f + %.1f ms, token_log_probs %.1f + %.1f ms, fused %.1f + %.1f ms\n",
                  static_cast<long long>(tgt.ne(0).sum().item<int64_t>()),
                  std::chrono::duration<double, std::milli>(t1 - t0).count(),
                  std::chrono::duration<double, std::milli>(t2 - t1).count(),
                  std::chrono::duration<double, std::milli>(t3 - t2).count(),
                  std::chrono::duration<double, std::milli>(t4 - t3).count(),
                  std::chrono::duration<double, std::milli>(t5 - t4).count(),
                  std::chrono::duration<double, std::milli>(t6 - t5).count());
    }
  }
  for (int round = 0; round < 4; ++round) {
    const auto start = std::chrono::steady_clock::now();
    model->zero_grad();
    auto s = surrogate_scores(*model, query, spans, options);
    const auto forward = std::chrono::steady_clock::now();
    s.sum().backward();
    const auto end = std::chrono::steady_clock::now();
    std::printf("surrogate forward %.1f ms, backward %.1f ms\n",
                std::chrono::duration<double, std::milli>(forward - start).count(),
                std::chrono::duration<double, std::milli>(end - forward).count());
  }
}

}  // namespace
}  // namespace dgr::trainer
