#include "trainer/stage1_data.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include <fmt/format.h>

#include "common/error.h"

namespace dgr::trainer {
namespace {

using retrieval::View;

uint64_t splitmix(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t uniform(uint64_t& state, uint64_t n) { return n == 0 ? 0 : splitmix(state) % n; }

double unit(uint64_t& state) { return static_cast<double>(splitmix(state) >> 11) * 0x1.0p-53; }

}  // namespace

Stage1Data::Stage1Data(std::vector<retrieval::PassageTokens> passages, std::vector<TrainingQuery> queries,
                       retrieval::SpecialTokens special, Stage1DataOptions options, uint64_t seed)
    : passages_(std::move(passages)), queries_(std::move(queries)), special_(special), options_(options),
      seed_(seed) {
  const bool title = options_.views[0], body = options_.views[1], pq = options_.views[2];
  DGR_CHECK_AS(ConfigError, title || body || pq, "stage 1 needs at least one view (title, body or pq)");
  DGR_CHECK_AS(ConfigError, options_.indexing_source_min >= 1 && options_.indexing_source_max >= options_.indexing_source_min,
               "indexing source length range [{}, {}] is empty", options_.indexing_source_min, options_.indexing_source_max);
  for (int32_t q = 0; q < static_cast<int32_t>(queries_.size()); ++q) {
    const auto& passage = passages_.at(static_cast<size_t>(queries_[static_cast<size_t>(q)].positive));
    if (title) for (int c = 0; c < options_.title_copies; ++c) entries_.push_back({Kind::query, View::title, q});
    if (body && !passage.body.empty())
      for (int c = 0; c < options_.body_spans; ++c) entries_.push_back({Kind::query, View::body, q});
    if (pq && !passage.pseudo_queries.empty())
      for (int c = 0; c < options_.pq_copies; ++c) entries_.push_back({Kind::query, View::pq, q});
  }
  for (int32_t p = 0; p < static_cast<int32_t>(passages_.size()); ++p) {
    const auto& passage = passages_[static_cast<size_t>(p)];
    if (passage.body.empty()) continue;  // nothing to use as the source
    for (int c = 0; c < options_.indexing_pairs; ++c) {
      if (title) entries_.push_back({Kind::indexing, View::title, p});
      if (body) entries_.push_back({Kind::indexing, View::body, p});
      if (pq && !passage.pseudo_queries.empty()) entries_.push_back({Kind::indexing, View::pq, p});
    }
  }
  DGR_CHECK_AS(DataError, !entries_.empty(),
               "stage 1 has no training pairs: no training query has a positive passage and no passage has text");
}

// The start of a body span of body_length tokens. With a query, starts are sampled by a softmax over the
// span's overlap with the query: distinct query tokens in the span plus query bigrams in it (a token-level
// stand-in for MINDER's fuzzy character 3-gram overlap); without one, uniformly.
std::vector<int32_t> query_body_span(const retrieval::PassageTokens& passage, const std::vector<int32_t>* query,
                                     const retrieval::ViewLimits& limits, double temperature, uint64_t rng_state) {
  const auto& body = passage.body;
  const size_t length = static_cast<size_t>(limits.body_length);
  if (body.size() <= length) return body;
  const size_t starts = body.size() - length + 1;
  size_t start = 0;
  if (query == nullptr || query->empty()) {
    start = uniform(rng_state, starts);
  } else {
    std::unordered_set<int32_t> unigrams(query->begin(), query->end());
    std::unordered_set<uint64_t> bigrams;
    for (size_t i = 0; i + 1 < query->size(); ++i)
      bigrams.insert((static_cast<uint64_t>(static_cast<uint32_t>((*query)[i])) << 32) |
                     static_cast<uint32_t>((*query)[i + 1]));
    std::vector<double> weight(starts);
    double best = 0;
    for (size_t s = 0; s < starts; ++s) {
      std::unordered_set<int32_t> seen;
      double score = 0;
      for (size_t t = s; t < s + length; ++t) {
        if (unigrams.count(body[t]) && seen.insert(body[t]).second) score += 1;
        if (t + 1 < s + length &&
            bigrams.count((static_cast<uint64_t>(static_cast<uint32_t>(body[t])) << 32) |
                          static_cast<uint32_t>(body[t + 1])))
          score += 1;
      }
      weight[s] = score / temperature;
      best = std::max(best, weight[s]);
    }
    double total = 0;
    for (auto& w : weight) total += (w = std::exp(w - best));
    double pick = unit(rng_state) * total;
    for (start = 0; start + 1 < starts && pick >= weight[start]; ++start) pick -= weight[start];
  }
  return {body.begin() + static_cast<std::ptrdiff_t>(start),
          body.begin() + static_cast<std::ptrdiff_t>(start + length)};
}

Pair Stage1Data::pair(int64_t epoch, int64_t index) const {
  DGR_CHECK(index >= 0 && index < size(), "pair index {} out of range [0, {})", index, size());
  const Entry& entry = entries_[static_cast<size_t>(index)];
  uint64_t rng = seed_ * 0x100000001B3ull ^ (static_cast<uint64_t>(epoch) << 40) ^ static_cast<uint64_t>(index);
  splitmix(rng);
  Pair out;
  out.view = entry.view;
  const retrieval::PassageTokens* passage = nullptr;
  std::vector<int32_t> query;
  if (entry.kind == Kind::query) {
    const auto& q = queries_[static_cast<size_t>(entry.item)];
    passage = &passages_[static_cast<size_t>(q.positive)];
    query = q.tokens;
  } else {
    passage = &passages_[static_cast<size_t>(entry.item)];
    // The source of an indexing pair is a window of the body standing in for a query.
    const auto& body = passage->body;
    const size_t lo = static_cast<size_t>(std::max(1, options_.indexing_source_min));
    const size_t hi = std::max(lo, static_cast<size_t>(options_.indexing_source_max));
    size_t length = std::min(body.size(), lo + uniform(rng, hi - lo + 1));
    size_t start = unit(rng) < options_.indexing_prefix_probability ? 0 : uniform(rng, body.size() - length + 1);
    query.assign(body.begin() + static_cast<std::ptrdiff_t>(start),
                 body.begin() + static_cast<std::ptrdiff_t>(start + length));
  }
  out.source = retrieval::make_source(query, entry.view, special_, options_.limits);
  switch (entry.view) {
    case View::title: out.target = retrieval::title_target(*passage, special_, options_.limits); break;
    case View::body:
      out.target = query_body_span(*passage, entry.kind == Kind::query ? &query : nullptr, options_.limits,
                                   options_.span_temperature, splitmix(rng));
      break;
    case View::pq: {
      const auto& pqs = passage->pseudo_queries;
      const auto& pq = pqs[uniform(rng, pqs.size())];
      size_t keep = std::min(pq.size(), static_cast<size_t>(std::max(options_.limits.max_pq - 2, 1)));
      out.target.push_back(special_.pq_start);
      out.target.insert(out.target.end(), pq.begin(), pq.begin() + static_cast<std::ptrdiff_t>(keep));
      if (keep == pq.size()) out.target.push_back(special_.end_id);
      break;
    }
  }
  return out;
}

std::string Stage1Data::describe() const {
  int64_t counts[2][retrieval::kNumViews] = {};
  for (const auto& e : entries_) ++counts[e.kind == Kind::query ? 0 : 1][static_cast<int>(e.view)];
  return fmt::format("{} pairs per epoch: query pairs title {} body {} pq {}, indexing pairs title {} body {} pq {}",
                     size(), counts[0][0], counts[0][1], counts[0][2], counts[1][0], counts[1][1], counts[1][2]);
}

}  // namespace dgr::trainer
