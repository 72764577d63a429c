// The surrogate passage score: keys deduplicated per view, one teacher-forced pass per view, the corpus
// correction of retrieval/scoring.cpp in double-precision torch ops, constant coverage factors. Every tensor
// is on the model's device; so are the returned scores.
#include "trainer/surrogate.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numbers>

#include "common/error.h"
#include "trainer/model.h"

namespace dgr::trainer {
namespace {

using torch::Tensor;

// log(1 - e^x) for x < 0 (Maechler's split, as retrieval/scoring.cpp's log1mexp): log(-expm1(x)) near 0,
// log1p(-exp(x)) far from it. Both branches and their derivatives are finite for every x < 0, so the
// branch torch::where does not take contributes a zero gradient, never NaN.
Tensor log1mexp(const Tensor& x) {
  return torch::where(x.gt(-std::numbers::ln2), x.expm1().neg().log(), x.exp().neg().log1p());
}

double log1mexp(double x) { return std::log(-std::expm1(x)); }

// A key as one term of one passage's sum.
struct KeyRef {
  int64_t passage = 0;
  int64_t unique = 0;  // index into the distinct (view, tokens) of every view, views in order
  int view = 0;
  uint64_t count = 0;
  float cached_score = 0;
  double coverage = 1;
};

}  // namespace

void SurrogateOptions::validate() const {
  DGR_CHECK_AS(ConfigError, total_tokens > 0,
               "surrogate: total_tokens must be the FM-index's FMIndex::total_tokens() (> 0), found {}", total_tokens);
  DGR_CHECK_AS(ConfigError, max_keys >= 1, "surrogate: max_keys must be >= 1, found {}", max_keys);
  DGR_CHECK_AS(ConfigError, scoring.max_log_prob < 0,
               "surrogate: max_log_prob must be < 0 (log(1 - e^s) is -inf at s = 0), found {}", scoring.max_log_prob);
  DGR_CHECK_AS(ConfigError, scoring.smoothing >= 0, "surrogate: smoothing must be >= 0, found {}", scoring.smoothing);
  DGR_CHECK_AS(ConfigError, scoring.coverage_alpha >= 0 && scoring.coverage_alpha <= 1,
               "surrogate: coverage_alpha must be in [0, 1], found {}", scoring.coverage_alpha);
}

SurrogateOptions stage2_surrogate_options(const retrieval::SpecialTokens& special, uint64_t total_tokens,
                                          const retrieval::ViewLimits& limits, int max_keys) {
  SurrogateOptions o;
  o.limits = limits;
  o.special = special;
  o.total_tokens = total_tokens;
  o.max_keys = max_keys;
  o.validate();
  return o;
}

torch::Tensor surrogate_scores(Seq2Seq& model, std::span<const int32_t> query_tokens,
                               std::span<const std::span<const data::CachedKey>> passages,
                               const SurrogateOptions& options) {
  options.validate();
  const double alpha = options.scoring.coverage_alpha;
  const int32_t boundary = options.special.boundary;
  const int64_t pad = model.config().pad_id;

  // Distinct targets per view, and every kept key as a reference to one of them with its coverage.
  std::map<std::vector<int32_t>, int64_t> distinct[retrieval::kNumViews];  // tokens -> index within the view
  std::vector<KeyRef> refs;
  std::vector<int32_t> covered, tokens;  // sorted distinct tokens of the passage's earlier keys; scratch
  for (size_t p = 0; p < passages.size(); ++p) {
    covered.clear();
    const size_t kept = std::min(passages[p].size(), static_cast<size_t>(options.max_keys));
    for (size_t k = 0; k < kept; ++k) {
      const data::CachedKey& key = passages[p][k];
      DGR_CHECK_AS(DataError, key.view >= 0 && key.view < retrieval::kNumViews,
                   "cached key {} of passage {} has view {} (expected 0 title, 1 body or 2 pq)", k, p, key.view);
      DGR_CHECK_AS(DataError, std::find(key.tokens.begin(), key.tokens.end(), pad) == key.tokens.end(),
                   "cached key {} of passage {} contains the pad id {} (is the distillation data from this index?)",
                   k, p, pad);
      tokens.clear();
      for (int32_t t : key.tokens) {
        if (t != boundary) tokens.push_back(t);
      }
      std::sort(tokens.begin(), tokens.end());
      tokens.erase(std::unique(tokens.begin(), tokens.end()), tokens.end());
      if (tokens.empty()) continue;  // covers no passage position (Note [Surrogate coverage])
      size_t fresh = 0;
      for (int32_t t : tokens) fresh += std::binary_search(covered.begin(), covered.end(), t) ? 0 : 1;
      std::vector<int32_t> merged;
      std::set_union(covered.begin(), covered.end(), tokens.begin(), tokens.end(), std::back_inserter(merged));
      covered.swap(merged);

      KeyRef ref;
      ref.passage = static_cast<int64_t>(p);
      ref.view = key.view;
      ref.count = key.count;
      ref.cached_score = key.score;
      ref.coverage = 1.0 - alpha + alpha * static_cast<double>(fresh) / static_cast<double>(tokens.size());
      auto& table = distinct[key.view];
      ref.unique = table.emplace(key.tokens, static_cast<int64_t>(table.size())).first->second;
      refs.push_back(ref);
    }
  }
  const torch::Device device = model.embedding().device();
  const auto f64 = torch::TensorOptions().dtype(torch::kDouble).device(device);
  if (refs.empty()) return torch::zeros({static_cast<int64_t>(passages.size())}, f64);

  // s of every distinct key: one encoder pass and one batched decoder pass per view.
  std::vector<Tensor> per_view;
  int64_t view_offset[retrieval::kNumViews] = {0, 0, 0};
  int64_t offset = 0;
  for (int v = 0; v < retrieval::kNumViews; ++v) {
    view_offset[v] = offset;
    const auto& table = distinct[v];
    if (table.empty()) continue;
    offset += static_cast<int64_t>(table.size());
    const auto view = static_cast<retrieval::View>(v);
    if (view == retrieval::View::pq && !options.rescore_pq) {
      per_view.push_back(torch::zeros({static_cast<int64_t>(table.size())}, f64));  // replaced below
      continue;
    }
    size_t longest = 0;
    for (const auto& [target, index] : table) longest = std::max(longest, target.size());
    auto tgt = torch::full({static_cast<int64_t>(table.size()), static_cast<int64_t>(longest)}, pad, torch::kLong);
    auto acc = tgt.accessor<int64_t, 2>();
    for (const auto& [target, index] : table) {
      for (size_t t = 0; t < target.size(); ++t) acc[index][static_cast<int64_t>(t)] = target[t];
    }
    const std::vector<int32_t> source = retrieval::make_source(query_tokens, view, options.special, options.limits);
    const Tensor src = torch::tensor(std::vector<int64_t>(source.begin(), source.end()), torch::kLong).unsqueeze(0);
    per_view.push_back(
        model.sequence_log_probs_with_grad(src.to(device), tgt.to(device)).to(torch::kDouble));
  }
  const Tensor unique_scores = torch::cat(per_view);  // [distinct keys]

  // Per reference: the constants of the corpus correction and the coverage factor.
  const auto n = static_cast<int64_t>(refs.size());
  std::vector<int64_t> unique_index(refs.size()), passage_index(refs.size());
  std::vector<uint8_t> is_pq(refs.size()), informative(refs.size());  // informative: s_u < 0 (else w = 0)
  std::vector<double> cached(refs.size()), corpus_term(refs.size()), coverage(refs.size());
  const double log_total = std::log(static_cast<double>(options.total_tokens) + options.scoring.smoothing);
  for (size_t i = 0; i < refs.size(); ++i) {
    const KeyRef& r = refs[i];
    unique_index[i] = view_offset[r.view] + r.unique;
    passage_index[i] = r.passage;
    is_pq[i] = r.view == static_cast<int>(retrieval::View::pq);
    cached[i] = static_cast<double>(r.cached_score);
    const double s_u = std::log(static_cast<double>(r.count) + options.scoring.smoothing) - log_total;
    informative[i] = s_u < 0.0;
    corpus_term[i] = s_u < 0.0 ? log1mexp(s_u) - s_u : 0.0;  // log(1 - e^{s_u}) - s_u
    coverage[i] = r.coverage;
  }
  auto tensor = [n, &device](auto& values, torch::Dtype dtype) {
    return torch::from_blob(values.data(), {n}, dtype).clone().to(device);
  };
  const Tensor pq_mask = tensor(is_pq, torch::kUInt8).to(torch::kBool);
  const Tensor informative_mask = tensor(informative, torch::kUInt8).to(torch::kBool);

  Tensor s = unique_scores.index_select(0, tensor(unique_index, torch::kLong));
  if (!options.rescore_pq) s = torch::where(pq_mask, tensor(cached, torch::kDouble), s);
  s = torch::where(pq_mask, (s + options.scoring.pq_offset).clamp_max(options.scoring.pq_cap), s);
  s = s.clamp_max(options.scoring.max_log_prob);
  Tensor w = torch::relu(s + tensor(corpus_term, torch::kDouble) - log1mexp(s));
  if (options.scoring.square_weights) w = w * w;
  w = torch::where(informative_mask, w, torch::zeros_like(w));
  return torch::zeros({static_cast<int64_t>(passages.size())}, f64)
      .index_add(0, tensor(passage_index, torch::kLong), w * tensor(coverage, torch::kDouble));
}

torch::Tensor surrogate_scores(Seq2Seq& model, const data::DistillExample& example,
                               std::span<const int32_t> candidates, const SurrogateOptions& options) {
  std::vector<std::span<const data::CachedKey>> passages;
  passages.reserve(candidates.size());
  for (int32_t c : candidates) {
    DGR_CHECK(c >= 0 && static_cast<size_t>(c) < example.candidates.size(),
              "query '{}': candidate index {} out of range [0, {})", example.qid, c, example.candidates.size());
    passages.emplace_back(example.candidates[static_cast<size_t>(c)].keys);
  }
  return surrogate_scores(model, example.query_tokens, passages, options);
}

}  // namespace dgr::trainer
