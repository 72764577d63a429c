// Corpus correction and passage scores (method.md section 4); the open decisions are listed in scoring.h.
#include "retrieval/scoring.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "common/error.h"

namespace dgr::retrieval {

namespace {

// log(1 - e^x) for x <= 0; expm1 keeps it exact when x is close to 0 (1 - e^x would cancel).
double log1mexp(double x) { return std::log(-std::expm1(x)); }

}  // namespace

double key_weight(double s, uint64_t count, uint64_t total_tokens, const ScoringOptions& options) {
  if (std::isnan(s)) return 0.0;
  s = std::min(s, options.max_log_prob);
  const double s_u = std::log(static_cast<double>(count) + options.smoothing) -
                     std::log(static_cast<double>(total_tokens) + options.smoothing);
  // F >= N: the key is (as frequent as) the whole text, log(1 - e^{s_u}) = -inf, so it says nothing.
  if (!(s_u < 0.0)) return 0.0;
  const double w = (s + log1mexp(s_u)) - (s_u + log1mexp(s));
  if (!(w > 0.0)) return 0.0;  // also s = -inf (w = -inf)
  return options.square_weights ? w * w : w;
}

double adjusted_log_prob(double s, View view, const ScoringOptions& options) {
  return view == View::pq ? std::min(s + options.pq_offset, options.pq_cap) : s;
}

std::vector<double> key_weights(std::span<const Key> keys, uint64_t total_tokens, const ScoringOptions& options) {
  std::vector<double> weights(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    weights[i] = key_weight(adjusted_log_prob(keys[i].score, keys[i].view, options), keys[i].count,
                            total_tokens, options);
  }
  return weights;
}

PassageScorer::PassageScorer(std::span<const Key> keys, std::span<const double> weights, int32_t boundary,
                             const ScoringOptions& options)
    : keys_(keys), weights_(weights), boundary_(boundary), alpha_(options.coverage_alpha) {
  DGR_CHECK(keys.size() == weights.size(), "{} keys but {} weights", keys.size(), weights.size());
  DGR_CHECK(keys.size() < std::numeric_limits<uint32_t>::max(), "too many keys ({})", keys.size());
  int32_t max_token = -1;
  for (uint32_t i = 0; i < keys.size(); ++i) {
    const Key& key = keys[i];
    if (!(weights[i] > 0.0) || key.string.empty()) continue;  // w = 0 takes no position
    if (key.origin == KeyOrigin::unigram) {
      if (key.string.size() != 1) continue;
      const int32_t token = key.string[0];
      if (token < 0 || token == boundary) continue;
      if (static_cast<size_t>(token) >= unigram_key_.size()) unigram_key_.resize(static_cast<size_t>(token) + 1, -1);
      int32_t& slot = unigram_key_[static_cast<size_t>(token)];
      if (slot < 0 || weights[i] > weights[static_cast<size_t>(slot)]) slot = static_cast<int32_t>(i);
      continue;
    }
    // A key made of boundaries only covers no passage position.
    if (std::all_of(key.string.begin(), key.string.end(), [&](int32_t t) { return t == boundary; })) continue;
    greedy_.push_back(i);
    max_token = std::max(max_token, key.string[0]);
  }
  std::sort(greedy_.begin(), greedy_.end(), [&](uint32_t a, uint32_t b) {
    if (weights[a] != weights[b]) return weights[a] > weights[b];
    return a < b;
  });
  // Group the greedy ranks by first token (counting sort), so that a passage position only looks at the
  // keys that can start there. Ranks stay ascending within a group.
  by_first_offsets_.assign(static_cast<size_t>(max_token + 2), 0);
  for (uint32_t key : greedy_) {
    const int32_t first = keys[key].string[0];
    if (first >= 0) ++by_first_offsets_[static_cast<size_t>(first) + 1];
  }
  std::partial_sum(by_first_offsets_.begin(), by_first_offsets_.end(), by_first_offsets_.begin());
  by_first_.assign(by_first_offsets_.back(), 0);
  std::vector<uint32_t> fill(by_first_offsets_.begin(), by_first_offsets_.end() - 1);
  for (uint32_t rank = 0; rank < greedy_.size(); ++rank) {
    const int32_t first = keys[greedy_[rank]].string[0];
    if (first >= 0) by_first_[fill[static_cast<size_t>(first)]++] = rank;
  }
}

PassageScore PassageScorer::score(std::span<const int32_t> passage) const {
  // The passage as it sits in the index: its boundary at position 0, so that title keys (`B title...`)
  // match there. Position p of `text` is passage offset p - 1.
  std::vector<int32_t> text;
  text.reserve(passage.size() + 1);
  text.push_back(boundary_);
  text.insert(text.end(), passage.begin(), passage.end());

  // All occurrences of the greedy keys, as (rank, position).
  std::vector<std::pair<uint32_t, uint32_t>> occurrences;
  const size_t groups = by_first_offsets_.empty() ? 0 : by_first_offsets_.size() - 1;
  for (size_t pos = 0; pos < text.size(); ++pos) {
    const int32_t first = text[pos];
    if (first < 0 || static_cast<size_t>(first) >= groups) continue;
    for (uint32_t i = by_first_offsets_[static_cast<size_t>(first)]; i < by_first_offsets_[static_cast<size_t>(first) + 1]; ++i) {
      const std::vector<int32_t>& string = keys_[greedy_[by_first_[i]]].string;
      if (pos + string.size() <= text.size() &&
          std::equal(string.begin(), string.end(), text.begin() + static_cast<std::ptrdiff_t>(pos))) {
        occurrences.emplace_back(by_first_[i], static_cast<uint32_t>(pos));
      }
    }
  }
  std::sort(occurrences.begin(), occurrences.end());

  PassageScore result;
  std::vector<char> taken(text.size(), 0);
  std::vector<int32_t> covered;  // sorted distinct tokens of the keys taken so far
  std::vector<int32_t> distinct;
  for (size_t at = 0; at < occurrences.size();) {
    const uint32_t rank = occurrences[at].first;
    size_t end = at;
    while (end < occurrences.size() && occurrences[end].first == rank) ++end;
    const uint32_t key_index = greedy_[rank];
    const std::vector<int32_t>& string = keys_[key_index].string;
    for (size_t o = at; o < end; ++o) {
      const uint32_t pos = occurrences[o].second;
      bool free = true;
      for (size_t j = pos; j < pos + string.size() && free; ++j) free = text[j] == boundary_ || !taken[j];
      if (!free) continue;
      for (size_t j = pos; j < pos + string.size(); ++j) {
        if (text[j] != boundary_) taken[j] = 1;
      }
      distinct.clear();
      for (int32_t t : string) {
        if (t != boundary_) distinct.push_back(t);
      }
      std::sort(distinct.begin(), distinct.end());
      distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
      size_t fresh = 0;
      for (int32_t t : distinct) fresh += std::binary_search(covered.begin(), covered.end(), t) ? 0 : 1;
      const double coverage =
          1.0 - alpha_ + alpha_ * static_cast<double>(fresh) / static_cast<double>(distinct.size());
      const double weight = weights_[key_index];
      result.score += weight * coverage;
      result.matches.push_back({key_index, static_cast<int32_t>(pos) - 1, weight, coverage, weight * coverage});
      std::vector<int32_t> merged;
      merged.reserve(covered.size() + distinct.size());
      std::set_union(covered.begin(), covered.end(), distinct.begin(), distinct.end(), std::back_inserter(merged));
      covered.swap(merged);
      break;  // one occurrence per key
    }
    at = end;
  }

  // Unigram keys on the positions no key took, each distinct token once.
  if (!unigram_key_.empty()) {
    std::vector<int32_t> seen;
    for (size_t pos = 1; pos < text.size(); ++pos) {
      const int32_t t = text[pos];
      if (taken[pos] || t < 0 || static_cast<size_t>(t) >= unigram_key_.size()) continue;
      const int32_t key_index = unigram_key_[static_cast<size_t>(t)];
      if (key_index < 0 || std::find(seen.begin(), seen.end(), t) != seen.end()) continue;
      seen.push_back(t);
      const double weight = weights_[static_cast<size_t>(key_index)];
      result.score += weight;
      result.matches.push_back({static_cast<uint32_t>(key_index), static_cast<int32_t>(pos) - 1, weight, 1.0, weight});
    }
  }
  return result;
}

PassageScore score_passage(std::span<const int32_t> passage, std::span<const Key> keys,
                           std::span<const double> weights, int32_t boundary, const ScoringOptions& options) {
  return PassageScorer(keys, weights, boundary, options).score(passage);
}

std::vector<RetrievedPassage> score_passages(const FMIndex& index, std::span<const Key> keys,
                                             const ScoringOptions& options, std::span<const int32_t> also_docs) {
  const std::vector<double> weights = key_weights(keys, index.total_tokens(), options);

  // Candidates: the passages located by the rare keys; bound = sum of w over the distinct keys locating it.
  std::vector<double> bound(index.num_passages(), 0.0);
  std::vector<int32_t> last_key(index.num_passages(), -1);
  std::vector<int32_t> touched;
  for (size_t i = 0; i < keys.size(); ++i) {
    const Key& key = keys[i];
    if (!(weights[i] > 0.0) || key.count == 0 || key.count > options.max_key_count) continue;
    if (key.origin == KeyOrigin::unigram && !options.unigrams_locate_candidates) continue;
    for (const FMIndex::Occurrence& occ : index.locate(index.find(key.string))) {
      auto doc = static_cast<size_t>(occ.doc);
      if (last_key[doc] == static_cast<int32_t>(i)) continue;
      if (last_key[doc] < 0) touched.push_back(occ.doc);
      last_key[doc] = static_cast<int32_t>(i);
      bound[doc] += weights[i];
    }
  }
  auto by_bound = [&](int32_t a, int32_t b) {
    if (bound[static_cast<size_t>(a)] != bound[static_cast<size_t>(b)]) {
      return bound[static_cast<size_t>(a)] > bound[static_cast<size_t>(b)];
    }
    return a < b;
  };
  if (touched.size() > options.max_candidates) {
    std::partial_sort(touched.begin(), touched.begin() + static_cast<std::ptrdiff_t>(options.max_candidates),
                      touched.end(), by_bound);
    touched.resize(options.max_candidates);
  }

  const PassageScorer scorer(keys, weights, index.boundary(), options);
  std::vector<std::pair<int32_t, PassageScore>> scored;
  scored.reserve(touched.size());
  for (int32_t doc : touched) scored.emplace_back(doc, scorer.score(index.passage(doc)));
  auto by_score = [](const auto& a, const auto& b) {
    if (a.second.score != b.second.score) return a.second.score > b.second.score;
    return a.first < b.first;
  };
  const size_t keep = std::min(scored.size(), options.top_k);
  std::partial_sort(scored.begin(), scored.begin() + static_cast<std::ptrdiff_t>(keep), scored.end(), by_score);
  scored.resize(keep);
  for (int32_t doc : also_docs) {
    DGR_CHECK(doc >= 0 && static_cast<size_t>(doc) < index.num_passages(), "also_docs: passage {} of {}", doc,
              index.num_passages());
    bool listed = false;
    for (const auto& s : scored) listed = listed || s.first == doc;
    if (listed) continue;
    PassageScore score = scorer.score(index.passage(doc));
    if (score.score > 0) scored.emplace_back(doc, std::move(score));
  }
  std::sort(scored.begin(), scored.end(), by_score);

  std::vector<RetrievedPassage> out;
  out.reserve(scored.size());
  for (auto& [doc, score] : scored) {
    RetrievedPassage passage;
    passage.doc = doc;
    passage.score = score.score;
    passage.keys.reserve(score.matches.size());
    for (const KeyMatch& m : score.matches) {
      passage.keys.push_back({keys[m.key], m.weight, m.coverage, m.contribution, m.offset});
    }
    out.push_back(std::move(passage));
  }
  return out;
}

}  // namespace dgr::retrieval
