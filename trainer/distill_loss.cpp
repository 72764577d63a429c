// Ranking losses of stage 2 over surrogate scores; formulas in distill_loss.h.
#include "trainer/distill_loss.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include <fmt/ranges.h>

#include "common/error.h"

namespace dgr::trainer {
namespace {

using torch::Tensor;

const std::vector<std::pair<DistillLossKind, const char*>> kKinds = {
    {DistillLossKind::dgr, "dgr"},       {DistillLossKind::ltrgr, "ltrgr"},
    {DistillLossKind::listnet, "listnet"}, {DistillLossKind::listmle, "listmle"},
    {DistillLossKind::lambdaloss, "lambdaloss"}, {DistillLossKind::kl, "kl"},
    {DistillLossKind::generation, "generation"}};

void check_list(const Tensor& scores, const Tensor* teacher, const char* what) {
  DGR_CHECK(scores.defined() && scores.dim() == 1 && scores.is_floating_point(),
            "{}: student scores must be a 1-d floating tensor", what);
  if (teacher != nullptr) {
    DGR_CHECK(teacher->defined() && teacher->dim() == 1 && teacher->size(0) == scores.size(0),
              "{}: {} student scores but {} teacher scores", what, scores.size(0),
              teacher->defined() ? teacher->numel() : 0);
  }
}

std::vector<double> to_vector(const Tensor& t) {
  Tensor c = t.detach().to(torch::kCPU, torch::kDouble).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

// Positions by descending value, ties by position (stable).
std::vector<int64_t> descending_order(const std::vector<double>& values) {
  std::vector<int64_t> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return values[static_cast<size_t>(a)] > values[static_cast<size_t>(b)];
  });
  return order;
}

// On the student's device (the model's), like every tensor a loss combines with the scores.
Tensor teacher_tensor(const std::vector<double>& scores, const Tensor& student) {
  return torch::tensor(scores, torch::kDouble).to(student.device());
}

// int64 positions on the device of `like`, for index_select.
Tensor index_tensor(const std::vector<int64_t>& positions, const Tensor& like) {
  return torch::tensor(positions, torch::kLong).to(like.device());
}

}  // namespace

const char* distill_loss_kind_name(DistillLossKind kind) {
  for (const auto& [k, name] : kKinds) {
    if (k == kind) return name;
  }
  return "?";
}

DistillLossKind parse_distill_loss_kind(const std::string& name) {
  std::vector<std::string> names;
  for (const auto& [k, n] : kKinds) {
    if (name == n) return k;
    names.emplace_back(n);
  }
  throw ConfigError(fmt::format("unknown distillation loss '{}' (valid: {})", name, fmt::join(names, ", ")));
}

void DistillLossOptions::validate() const {
  DGR_CHECK_AS(ConfigError, margin >= 0 && margin_step >= 0, "distill loss: margin ({}) and margin_step ({}) must be >= 0",
               margin, margin_step);
  DGR_CHECK_AS(ConfigError, head_weight > 0, "distill loss: head_weight must be > 0, found {}", head_weight);
  DGR_CHECK_AS(ConfigError, ltrgr_top_margin >= 0 && ltrgr_random_margin >= 0,
               "distill loss: ltrgr margins must be >= 0, found {} and {}", ltrgr_top_margin, ltrgr_random_margin);
  DGR_CHECK_AS(ConfigError, student_temperature > 0 && teacher_temperature > 0,
               "distill loss: temperatures must be > 0, found student {} and teacher {}", student_temperature,
               teacher_temperature);
  DGR_CHECK_AS(ConfigError, !gen_weight || *gen_weight >= 0, "distill loss: gen_weight must be >= 0, found {}",
               gen_weight.value_or(0));
}

double generation_weight(const DistillLossOptions& options) {
  if (options.gen_weight) return *options.gen_weight;
  switch (options.kind) {
    case DistillLossKind::ltrgr: return 1000.0;
    case DistillLossKind::generation: return 1.0;
    default: return 500.0;
  }
}

Tensor distilled_ranknet(const Tensor& scores, const DistillLossOptions& options) {
  check_list(scores, nullptr, "distilled RankNet");
  const int64_t n = scores.size(0);
  std::vector<int64_t> first, second;
  std::vector<double> offset, weight;  // [pair] M + (j-i-1) D, w_i
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i + 1; j < n; ++j) {
      first.push_back(i);
      second.push_back(j);
      offset.push_back(options.margin + static_cast<double>(j - i - 1) * options.margin_step);
      weight.push_back(i == 0 ? options.head_weight : 1.0 / static_cast<double>(i + 1));
    }
  }
  if (first.empty()) return scores.sum() * 0;
  const auto opts = scores.options();
  Tensor v = scores.index_select(0, index_tensor(second, scores)) -
             scores.index_select(0, index_tensor(first, scores)) + torch::tensor(offset, opts);
  // Violated iff v > 0; relu's gradient is 0 at v = 0, so non-violated pairs add neither value nor gradient,
  // and the mean's denominator is at least 1 (no NaN when nothing is violated).
  const int64_t violated = v.detach().gt(0).sum().item<int64_t>();
  return (torch::relu(v) * torch::tensor(weight, opts)).sum() / static_cast<double>(std::max<int64_t>(violated, 1));
}

Tensor ltrgr_loss(const Tensor& top_positive, const Tensor& top_negative, const Tensor& random_positive,
                  const Tensor& random_negative, const DistillLossOptions& options) {
  return 0.5 * torch::relu(top_negative - top_positive + options.ltrgr_top_margin) +
         0.5 * torch::relu(random_negative - random_positive + options.ltrgr_random_margin);
}

Tensor listnet_loss(const Tensor& scores, const Tensor& teacher, const DistillLossOptions& options) {
  check_list(scores, &teacher, "ListNet");
  Tensor p = torch::softmax(teacher.detach().to(scores.device(), torch::kDouble) / options.teacher_temperature, 0);
  Tensor log_q = torch::log_softmax(scores / options.student_temperature, 0);
  return -(p * log_q).sum();
}

Tensor kl_loss(const Tensor& scores, const Tensor& teacher, const DistillLossOptions& options) {
  check_list(scores, &teacher, "KL");
  Tensor log_p =
      torch::log_softmax(teacher.detach().to(scores.device(), torch::kDouble) / options.teacher_temperature, 0);
  Tensor p = log_p.exp();
  Tensor log_q = torch::log_softmax(scores / options.student_temperature, 0);
  // 0 log 0 = 0: members the teacher gives probability 0 add nothing.
  Tensor terms = p * (log_p - log_q);
  return torch::where(p.gt(0), terms, torch::zeros_like(terms)).sum();
}

Tensor listmle_loss(const Tensor& scores, const Tensor& teacher, const DistillLossOptions& options) {
  check_list(scores, &teacher, "ListMLE");
  const std::vector<int64_t> order = descending_order(to_vector(teacher));
  Tensor x = scores.index_select(0, index_tensor(order, scores)) / options.student_temperature;
  // -log PL = sum_k [logsumexp(x_k .. x_{n-1}) - x_k]
  Tensor tail_lse = torch::logcumsumexp(x.flip({0}), 0).flip({0});
  return (tail_lse - x).sum();
}

Tensor lambda_loss(const Tensor& scores, const Tensor& teacher, const DistillLossOptions& options) {
  check_list(scores, &teacher, "LambdaLoss");
  const std::vector<double> t = to_vector(teacher);
  const size_t n = t.size();
  // Graded relevance: how many members the teacher scores strictly lower (ties share a grade).
  std::vector<double> gain(n);
  for (size_t i = 0; i < n; ++i) {
    double rel = 0;
    for (size_t j = 0; j < n; ++j) rel += t[j] < t[i] ? 1 : 0;
    gain[i] = std::exp2(rel) - 1.0;
  }
  std::vector<double> ideal = gain;
  std::sort(ideal.begin(), ideal.end(), std::greater<>());
  double idcg = 0;
  for (size_t k = 0; k < n; ++k) idcg += ideal[k] / std::log2(static_cast<double>(k) + 2.0);
  // Discounts at the student's current ranks (constants).
  const std::vector<int64_t> student_order = descending_order(to_vector(scores));
  std::vector<double> discount(n);
  for (size_t k = 0; k < n; ++k) discount[static_cast<size_t>(student_order[k])] = 1.0 / std::log2(static_cast<double>(k) + 2.0);

  std::vector<int64_t> better, worse;
  std::vector<double> delta;  // [pair] |dNDCG|
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) {
      if (!(t[i] > t[j]) || !(idcg > 0)) continue;
      better.push_back(static_cast<int64_t>(i));
      worse.push_back(static_cast<int64_t>(j));
      delta.push_back(std::abs(gain[i] - gain[j]) * std::abs(discount[i] - discount[j]) / idcg);
    }
  }
  if (better.empty()) return scores.sum() * 0;
  Tensor diff = (scores.index_select(0, index_tensor(better, scores)) -
                 scores.index_select(0, index_tensor(worse, scores))) / options.student_temperature;
  return (torch::softplus(-diff) * torch::tensor(delta, scores.options())).sum();
}

Tensor ranking_loss(const Tensor& scores_a, const Tensor& scores_b, const DistillDraw& draw,
                    const DistillLossOptions& options) {
  if (options.kind == DistillLossKind::generation) return torch::zeros({}, torch::kDouble);
  check_list(scores_a, nullptr, "ranking loss (L_a)");
  check_list(scores_b, nullptr, "ranking loss (L_b)");
  DGR_CHECK(scores_a.size(0) == static_cast<int64_t>(draw.a.candidates.size()) &&
                scores_b.size(0) == static_cast<int64_t>(draw.b.candidates.size()),
            "ranking loss: {} and {} scores for lists of {} and {} passages", scores_a.size(0), scores_b.size(0),
            draw.a.candidates.size(), draw.b.candidates.size());
  // A listwise loss of both lists against the teacher's scores, averaged.
  auto mean_of_lists = [&](Tensor (*loss)(const Tensor&, const Tensor&, const DistillLossOptions&)) {
    return 0.5 * loss(scores_a, teacher_tensor(draw.a.teacher_scores, scores_a), options) +
           0.5 * loss(scores_b, teacher_tensor(draw.b.teacher_scores, scores_b), options);
  };
  switch (options.kind) {
    case DistillLossKind::dgr:
      return 0.5 * distilled_ranknet(scores_a, options) + 0.5 * distilled_ranknet(scores_b, options);
    case DistillLossKind::ltrgr:
      return ltrgr_loss(scores_a[0], scores_a[draw.top_negative_position], scores_b[0],
                        scores_b[draw.random_negative_position], options);
    case DistillLossKind::listnet: return mean_of_lists(listnet_loss);
    case DistillLossKind::kl: return mean_of_lists(kl_loss);
    case DistillLossKind::listmle: return mean_of_lists(listmle_loss);
    case DistillLossKind::lambdaloss: return mean_of_lists(lambda_loss);
    case DistillLossKind::generation: break;
  }
  return torch::zeros({}, torch::kDouble);
}

}  // namespace dgr::trainer
