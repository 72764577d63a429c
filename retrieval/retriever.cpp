// Retrieval for one query (method.md section 4): keys from every enabled view, extra body keys, scores.
#include "retrieval/retriever.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <set>
#include <utility>

#include "common/error.h"

namespace dgr::retrieval {

std::vector<bool> word_start_table(const Tokenizer& tokenizer) {
  static constexpr std::string_view kWordStart = "\xE2\x96\x81";  // U+2581, SentencePiece's space
  std::vector<bool> table(static_cast<size_t>(std::max(tokenizer.vocab_size(), 0)));
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id) {
    table[static_cast<size_t>(id)] = tokenizer.piece(id).starts_with(kWordStart);
  }
  return table;
}

std::string key_text(const Key& key, const Tokenizer& tokenizer) { return tokenizer.decode(key.string); }

Retriever::Retriever(const FMIndex& index, const SpecialTokens& special, std::vector<bool> word_start,
                     RetrieverOptions options)
    : index_(index), special_(special), word_start_(std::move(word_start)), options_(std::move(options)) {
  DGR_CHECK_AS(ConfigError, options_.max_ngram_words >= 1, "max_ngram_words must be at least 1 (got {})",
               options_.max_ngram_words);
  DGR_CHECK_AS(ConfigError, options_.num_unigrams >= 0, "num_unigrams must not be negative (got {})",
               options_.num_unigrams);
  DGR_CHECK_AS(ConfigError, options_.scoring.top_k >= 1, "top_k must be at least 1");
  DGR_CHECK_AS(ConfigError, options_.scoring.coverage_alpha >= 0 && options_.scoring.coverage_alpha <= 1,
               "coverage_alpha must lie in [0, 1] (got {})", options_.scoring.coverage_alpha);
}

Retriever::Retriever(const FMIndex& index, const Tokenizer& tokenizer, RetrieverOptions options)
    : Retriever(index, tokenizer.special(), word_start_table(tokenizer), std::move(options)) {}

std::vector<std::vector<int32_t>> Retriever::query_ngrams(std::span<const int32_t> query, int max_words) const {
  // Word w spans query[starts[w] .. starts[w+1]). A token continues the current word unless its piece
  // starts with U+2581; the first token always starts one.
  std::vector<size_t> starts;
  for (size_t i = 0; i < query.size(); ++i) {
    const auto t = static_cast<size_t>(query[i]);
    if (i == 0 || query[i] < 0 || t >= word_start_.size() || word_start_[t]) starts.push_back(i);
  }
  starts.push_back(query.size());
  const size_t words = starts.size() - 1;
  std::vector<std::vector<int32_t>> out;
  std::set<std::vector<int32_t>> seen;
  for (size_t n = 1; n <= static_cast<size_t>(max_words) && n <= words; ++n) {
    for (size_t w = 0; w + n <= words; ++w) {
      std::vector<int32_t> gram(query.begin() + static_cast<std::ptrdiff_t>(starts[w]),
                                query.begin() + static_cast<std::ptrdiff_t>(starts[w + n]));
      if (seen.insert(gram).second) out.push_back(std::move(gram));
    }
  }
  return out;
}

std::vector<Key> Retriever::keys(Seq2SeqScorer& model, std::span<const int32_t> query) const {
  std::vector<Key> all;
  std::vector<float> first_step;  // body view: log p of the first target token
  const std::vector<int32_t> body_source = make_source(query, View::body, special_, options_.limits);

  const std::pair<View, bool> views[] = {
      {View::title, options_.title_view}, {View::body, options_.body_view}, {View::pq, options_.pq_view}};
  for (auto [view, enabled] : views) {
    if (!enabled) continue;
    const std::vector<int32_t> source =
        view == View::body ? body_source : make_source(query, view, special_, options_.limits);
    std::vector<Key> keys =
        constrained_beam_search(model, source, view, index_, special_, options_.limits, options_.beam,
                                view == View::body && options_.unigram_keys ? &first_step : nullptr);
    std::move(keys.begin(), keys.end(), std::back_inserter(all));
  }

  // The query n-grams and the unigrams are body-view keys (method.md section 4): scored under the body source,
  // so they exist only when the body view is searched (a title-only search has title keys only).
  if (options_.body_view && options_.ngram_keys) {
    std::vector<std::vector<int32_t>> targets;
    std::vector<uint64_t> counts;
    for (auto& gram : query_ngrams(query, options_.max_ngram_words)) {
      if (std::any_of(gram.begin(), gram.end(), [&](int32_t t) { return is_reserved_token(t, special_); })) continue;
      const uint64_t count = index_.count(gram);
      if (count == 0) continue;
      targets.push_back(std::move(gram));
      counts.push_back(count);
    }
    if (!targets.empty()) {
      // One batched teacher-forcing call under the body source.
      const std::vector<float> scores = model.score(body_source, targets);
      DGR_CHECK(scores.size() == targets.size(), "the model scored {} of {} targets", scores.size(), targets.size());
      for (size_t i = 0; i < targets.size(); ++i) {
        Key key;
        key.string = targets[i];
        key.tokens = std::move(targets[i]);
        key.view = View::body;
        key.origin = KeyOrigin::query_ngram;
        key.score = scores[i];
        key.count = counts[i];
        key.finished = key.tokens.size() == static_cast<size_t>(options_.limits.body_length);
        all.push_back(std::move(key));
      }
    }
  }

  if (options_.body_view && options_.unigram_keys && options_.num_unigrams > 0 && !first_step.empty()) {
    // The tokens that occur in the text (one call: the extensions of the empty string), best first.
    std::vector<FMIndex::Extension> tokens;
    for (const FMIndex::Extension& ext : index_.extensions(index_.full())) {
      if (!is_reserved_token(ext.token, special_) && ext.token >= 0 &&
          static_cast<size_t>(ext.token) < first_step.size() && first_step[static_cast<size_t>(ext.token)] > -1e30f) {
        tokens.push_back(ext);
      }
    }
    const size_t keep = std::min(tokens.size(), static_cast<size_t>(options_.num_unigrams));
    std::partial_sort(tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(keep), tokens.end(),
                      [&](const FMIndex::Extension& a, const FMIndex::Extension& b) {
                        const float la = first_step[static_cast<size_t>(a.token)];
                        const float lb = first_step[static_cast<size_t>(b.token)];
                        return la != lb ? la > lb : a.token < b.token;
                      });
    for (size_t i = 0; i < keep; ++i) {
      Key key;
      key.tokens = {tokens[i].token};
      key.string = key.tokens;
      key.view = View::body;
      key.origin = KeyOrigin::unigram;
      key.score = first_step[static_cast<size_t>(tokens[i].token)];
      key.count = tokens[i].range.count();
      key.finished = options_.limits.body_length == 1;
      all.push_back(std::move(key));
    }
  }

  // Merge keys with the same (view, string): the first wins (beam keys, then n-grams, then unigrams). Their
  // scores agree, since every score is the teacher-forced log p under the same source.
  std::map<std::pair<int, std::vector<int32_t>>, size_t> first;
  std::vector<Key> merged;
  merged.reserve(all.size());
  for (Key& key : all) {
    if (first.emplace(std::make_pair(static_cast<int>(key.view), key.string), merged.size()).second) {
      merged.push_back(std::move(key));
    }
  }
  return merged;
}

std::vector<RetrievedPassage> Retriever::retrieve(Seq2SeqScorer& model, std::span<const int32_t> query,
                                                 std::span<const int32_t> also_docs) const {
  const std::vector<Key> all = keys(model, query);
  return score_passages(index_, all, options_.scoring, also_docs);
}

std::vector<RetrievedPassage> retrieve(Seq2SeqScorer& model, const FMIndex& index, const Tokenizer& tokenizer,
                                       std::span<const int32_t> query_tokens, const RetrieverOptions& options) {
  return Retriever(index, tokenizer, options).retrieve(model, query_tokens);
}

}  // namespace dgr::retrieval
