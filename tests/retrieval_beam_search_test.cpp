// Tests of the FM-index-constrained beam search (retrieval/beam_search.h, method.md sections 2 and 4) with
// a hand-made model: log-probabilities are a fixed pseudo-random function of (source, decoder prefix),
// log-softmax normalised, so that teacher forcing (score) and incremental decoding (step) must agree.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <set>
#include <span>
#include <vector>

#include <gtest/gtest.h>

#include "common/error.h"
#include "retrieval/beam_search.h"
#include "retrieval/fm_index.h"
#include "retrieval/seq2seq.h"
#include "retrieval/views.h"

namespace dgr::retrieval {
namespace {

constexpr int32_t kVocab = 40;

SpecialTokens specials() {
  SpecialTokens s;
  s.title_view = 4;
  s.body_view = 5;
  s.pq_view = 6;
  s.end_id = 7;
  s.pq_start = 8;
  s.boundary = 9;
  return s;
}

uint64_t mix(uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// log p(. | prefix, source) for prefix = bos + target[:t]: logits are pseudo-random in [-2, 2], plus
// `boost` for tokens that occur in the source (a model that copies from its input).
class MockModel : public Seq2SeqScorer {
 public:
  explicit MockModel(double boost = 0.0) : boost_(boost) {}
  int32_t vocab_size() const override { return kVocab; }

  std::vector<float> log_probs(std::span<const int32_t> source, std::span<const int32_t> prefix) const {
    uint64_t h = 1469598103934665603ULL;
    for (int32_t t : source) h = mix(h ^ static_cast<uint64_t>(t + 1));
    h = mix(h ^ 0xabcdefULL);
    for (int32_t t : prefix) h = mix(h ^ static_cast<uint64_t>(t + 1));
    std::vector<double> logits(kVocab);
    for (int32_t v = 0; v < kVocab; ++v) {
      logits[static_cast<size_t>(v)] = static_cast<double>(mix(h ^ static_cast<uint64_t>(v * 7919 + 1)) % 4001) / 1000.0 - 2.0;
      if (std::find(source.begin(), source.end(), v) != source.end()) logits[static_cast<size_t>(v)] += boost_;
    }
    double max = *std::max_element(logits.begin(), logits.end());
    double sum = 0;
    for (double l : logits) sum += std::exp(l - max);
    std::vector<float> out(kVocab);
    for (size_t v = 0; v < out.size(); ++v) out[v] = static_cast<float>(logits[v] - max - std::log(sum));
    return out;
  }

  class Decoding : public Seq2SeqScorer::Decoding {
   public:
    Decoding(MockModel& model, std::span<const int32_t> source)
        : model_(model), source_(source.begin(), source.end()), beams_(1) {}
    const std::vector<float>& step(std::span<const int32_t> parents, std::span<const int32_t> tokens) override {
      EXPECT_EQ(parents.size(), tokens.size());
      if (model_.steps == 0) {
        EXPECT_EQ(parents.size(), 1u);
        EXPECT_EQ(tokens[0], specials().decoder_start);  // the first call is step({0}, {decoder start})
      }
      ++model_.steps;
      model_.rows += parents.size();
      std::vector<std::vector<int32_t>> next;
      out_.clear();
      for (size_t i = 0; i < parents.size(); ++i) {
        EXPECT_LT(static_cast<size_t>(parents[i]), beams_.size());
        std::vector<int32_t> beam = beams_.at(static_cast<size_t>(parents[i]));
        beam.push_back(tokens[i]);
        std::vector<float> row = model_.log_probs(source_, beam);
        out_.insert(out_.end(), row.begin(), row.end());
        next.push_back(std::move(beam));
      }
      beams_ = std::move(next);
      return out_;
    }

   private:
    MockModel& model_;
    std::vector<int32_t> source_;
    std::vector<std::vector<int32_t>> beams_;
    std::vector<float> out_;
  };

  std::unique_ptr<Seq2SeqScorer::Decoding> start(std::span<const int32_t> source) override {
    ++starts;
    steps = 0;
    return std::make_unique<Decoding>(*this, source);
  }

  std::vector<float> score(std::span<const int32_t> source, const std::vector<std::vector<int32_t>>& targets) override {
    std::vector<float> out;
    for (const auto& target : targets) {
      std::vector<int32_t> prefix{specials().bos};
      double sum = 0;
      for (int32_t t : target) {
        sum += log_probs(source, prefix)[static_cast<size_t>(t)];
        prefix.push_back(t);
      }
      out.push_back(static_cast<float>(sum));
    }
    return out;
  }

  int starts = 0;
  int steps = 0;
  size_t rows = 0;

 private:
  double boost_;
};

// Titles share prefixes (10 11 / 10 11 12 / 10 13), p5 repeats p0's title, p4's title is longer than
// max_title, p6's body is shorter than a body span; p0 and p2 have pseudo-queries.
std::vector<PassageTokens> corpus_passages() {
  return {
      {{10, 11}, {20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31}, {{12, 20, 21}, {13, 14}}},
      {{10, 11, 12}, {21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 32, 33, 34}, {}},
      {{10, 13}, {20, 21, 22, 23, 24, 35, 36, 37, 38, 39, 20, 21, 22}, {{10, 20, 21, 22}}},
      {{14}, {30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 10, 11}, {}},
      {{15, 16, 17, 18, 19, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21}, {22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}, {}},
      {{10, 11}, {25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35}, {}},
      {{16, 17}, {20, 21}, {}},
  };
}

struct Fixture {
  std::vector<PassageTokens> passages;
  std::vector<std::vector<int32_t>> sequences;
  std::vector<int32_t> text;  // B d0 B d1 ... B, as the index holds it
  FMIndex index;
};

Fixture make_fixture(std::vector<PassageTokens> passages) {
  std::vector<std::vector<int32_t>> sequences;
  for (const auto& p : passages) sequences.push_back(index_sequence(p, specials()));
  std::vector<int32_t> text{specials().boundary};
  for (const auto& s : sequences) {
    text.insert(text.end(), s.begin(), s.end());
    text.push_back(specials().boundary);
  }
  FMIndex index = FMIndex::build(sequences, specials().boundary);
  return {std::move(passages), std::move(sequences), std::move(text), std::move(index)};
}

uint64_t brute_count(const std::vector<int32_t>& text, const std::vector<int32_t>& pattern) {
  if (pattern.empty() || pattern.size() > text.size()) return 0;
  uint64_t n = 0;
  for (size_t i = 0; i + pattern.size() <= text.size(); ++i) {
    n += std::equal(pattern.begin(), pattern.end(), text.begin() + static_cast<std::ptrdiff_t>(i)) ? 1 : 0;
  }
  return n;
}

bool is_prefix(const std::vector<int32_t>& prefix, const std::vector<int32_t>& of) {
  return prefix.size() <= of.size() && std::equal(prefix.begin(), prefix.end(), of.begin());
}

// Checks shared by every view: keys occur (FM count and brute force agree), are unique, scores equal
// teacher forcing, and no length holds more than beam_size keys. Body view (min_prefix > 0): every prefix
// of the history is a key as well.
void check_common(const Fixture& f, MockModel& model, const std::vector<int32_t>& source, View view,
                  const std::vector<Key>& keys, int beam_size, size_t min_prefix) {
  ASSERT_FALSE(keys.empty());
  std::set<std::vector<int32_t>> all;
  std::map<size_t, int> per_length;
  for (const Key& key : keys) {
    EXPECT_EQ(key.view, view);
    EXPECT_EQ(key.origin, KeyOrigin::beam);
    EXPECT_TRUE(all.insert(key.tokens).second) << "duplicate key";
    EXPECT_GT(key.count, 0u);
    EXPECT_EQ(key.count, f.index.count(key.string));
    EXPECT_EQ(key.count, brute_count(f.text, key.string));
    ++per_length[key.tokens.size()];
  }
  for (const auto& [length, n] : per_length) EXPECT_LE(n, beam_size) << "length " << length;
  for (const Key& key : keys) {
    if (min_prefix == 0) break;
    for (size_t n = min_prefix; n < key.tokens.size(); ++n) {
      std::vector<int32_t> prefix(key.tokens.begin(), key.tokens.begin() + static_cast<std::ptrdiff_t>(n));
      EXPECT_TRUE(all.count(prefix)) << "a prefix of length " << n << " of a key is missing";
    }
  }
  std::vector<std::vector<int32_t>> targets;
  for (const Key& key : keys) targets.push_back(key.tokens);
  const std::vector<float> forced = model.score(source, targets);
  for (size_t i = 0; i < keys.size(); ++i) EXPECT_NEAR(keys[i].score, forced[i], 1e-5);
}

// method.md section 4: a title key is a complete title ("@@" at the end), anchored at the boundary; the
// prefixes the beams passed through are not keys. p4's title is longer than max_title: its key is its
// first max_title tokens, as far as its training target goes.
TEST(BeamSearch, TitleKeysAreCompleteTitlesAnchoredAtABoundary) {
  const Fixture f = make_fixture(corpus_passages());
  const SpecialTokens s = specials();
  const ViewLimits limits;  // max_title 15
  const auto max_title = static_cast<size_t>(limits.max_title);
  const std::vector<int32_t> query{20, 21, 12};
  const auto source = make_source(query, View::title, s, limits);
  std::set<std::vector<int32_t>> complete;  // every title + "@@", cut at max_title tokens
  for (const auto& p : f.passages) {
    std::vector<int32_t> title_end = p.title;
    title_end.push_back(s.end_id);
    if (title_end.size() > max_title) title_end.resize(max_title);
    complete.insert(title_end);
  }
  for (int beam : {1, 3, 100}) {
    MockModel model;
    const auto keys = constrained_beam_search(model, source, View::title, f.index, s, limits, {beam});
    check_common(f, model, source, View::title, keys, beam, 0);
    for (const Key& key : keys) {
      ASSERT_FALSE(key.string.empty());
      EXPECT_EQ(key.string.front(), s.boundary);
      EXPECT_EQ(std::vector<int32_t>(key.string.begin() + 1, key.string.end()), key.tokens);
      EXPECT_TRUE(complete.count(key.tokens)) << "a title key that is not a complete title";
      EXPECT_EQ(key.finished, key.tokens.back() == s.end_id);
      EXPECT_TRUE(key.finished || key.tokens.size() == max_title);
    }
    if (beam == 100) {
      // A beam wider than the corpus finds every title.
      std::set<std::vector<int32_t>> got;
      for (const Key& key : keys) got.insert(key.tokens);
      EXPECT_EQ(got, complete);
      // The duplicated title "10 11 @@" (p0, p5) counts twice; "10 11" itself, a prefix of p1's title
      // "10 11 12", is not a key.
      for (const Key& key : keys) {
        if (key.tokens == std::vector<int32_t>{10, 11, s.end_id}) EXPECT_EQ(key.count, 2u);
        EXPECT_NE(key.tokens, (std::vector<int32_t>{10, 11}));
      }
    }
  }
}

// BeamOptions::partial_keys (SEAL's partial_titles): every prefix of the title history is a key, so a beam
// wider than the corpus returns every title prefix up to max_title tokens.
TEST(BeamSearch, PartialKeysReturnEveryTitlePrefix) {
  const Fixture f = make_fixture(corpus_passages());
  const SpecialTokens s = specials();
  const ViewLimits limits;
  const auto source = make_source(std::vector<int32_t>{20, 21, 12}, View::title, s, limits);
  MockModel model;
  BeamOptions options{100};
  options.partial_keys = true;
  const auto keys = constrained_beam_search(model, source, View::title, f.index, s, limits, options);
  check_common(f, model, source, View::title, keys, 100, 1);
  std::set<std::vector<int32_t>> got, expected;
  for (const Key& key : keys) got.insert(key.tokens);
  for (const auto& p : f.passages) {
    std::vector<int32_t> title_end = p.title;
    title_end.push_back(s.end_id);
    for (size_t n = 1; n <= std::min(title_end.size(), static_cast<size_t>(limits.max_title)); ++n) {
      expected.insert(std::vector<int32_t>(title_end.begin(), title_end.begin() + static_cast<std::ptrdiff_t>(n)));
    }
  }
  EXPECT_EQ(got, expected);
}

TEST(BeamSearch, BodyKeysHaveExactLengthAndNoReservedToken) {
  const Fixture f = make_fixture(corpus_passages());
  const SpecialTokens s = specials();
  for (int body_length : {4, 10}) {
    ViewLimits limits;
    limits.body_length = body_length;
    const std::vector<int32_t> query{22, 23, 30};
    const auto source = make_source(query, View::body, s, limits);
    for (int beam : {1, 4, 1000}) {
      MockModel model;
      std::vector<float> first;
      const auto keys = constrained_beam_search(model, source, View::body, f.index, s, limits, {beam}, &first);
      check_common(f, model, source, View::body, keys, beam, 1);
      // One batched step per length: bos, then one call per non-final length.
      EXPECT_LE(model.steps, body_length);
      EXPECT_EQ(first, model.log_probs(source, std::vector<int32_t>{s.bos}));
      bool any_finished = false;
      for (const Key& key : keys) {
        EXPECT_EQ(key.string, key.tokens);
        EXPECT_LE(key.tokens.size(), static_cast<size_t>(body_length));
        EXPECT_EQ(key.finished, key.tokens.size() == static_cast<size_t>(body_length));
        any_finished |= key.finished;
        for (int32_t t : key.tokens) EXPECT_FALSE(is_reserved_token(t, s)) << t;
      }
      EXPECT_TRUE(any_finished);
      if (beam == 1000 && body_length == 4) {
        // Exhaustive: every substring of 1..4 tokens without a reserved token.
        std::set<std::vector<int32_t>> expected, got;
        for (size_t i = 0; i < f.text.size(); ++i) {
          for (size_t n = 1; n <= 4 && i + n <= f.text.size(); ++n) {
            std::vector<int32_t> sub(f.text.begin() + static_cast<std::ptrdiff_t>(i),
                                     f.text.begin() + static_cast<std::ptrdiff_t>(i + n));
            if (std::none_of(sub.begin(), sub.end(), [&](int32_t t) { return is_reserved_token(t, s); })) {
              expected.insert(sub);
            }
          }
        }
        for (const Key& key : keys) got.insert(key.tokens);
        EXPECT_EQ(got, expected);
      }
    }
  }
}

TEST(BeamSearch, FirstStepKeepsTheBestAllowedTokensByRawLogProb) {
  // The first step of the body view may use any token of the text except the reserved ones; the beam keeps
  // the best `beam` of them by the model's own log p (no renormalisation over the allowed set).
  const Fixture f = make_fixture(corpus_passages());
  const SpecialTokens s = specials();
  ViewLimits limits;
  const auto source = make_source(std::vector<int32_t>{11, 12}, View::body, s, limits);
  MockModel model;
  const auto keys = constrained_beam_search(model, source, View::body, f.index, s, limits, {3});
  const auto first = model.log_probs(source, std::vector<int32_t>{s.bos});
  std::vector<int32_t> allowed;
  for (int32_t t : std::set<int32_t>(f.text.begin(), f.text.end())) {
    if (!is_reserved_token(t, s)) allowed.push_back(t);
  }
  std::sort(allowed.begin(), allowed.end(), [&](int32_t a, int32_t b) { return first[static_cast<size_t>(a)] > first[static_cast<size_t>(b)]; });
  std::set<int32_t> expected(allowed.begin(), allowed.begin() + 3), got;
  for (const Key& key : keys) {
    if (key.tokens.size() == 1) {
      got.insert(key.tokens[0]);
      EXPECT_FLOAT_EQ(static_cast<float>(key.score), first[static_cast<size_t>(key.tokens[0])]);
    }
  }
  EXPECT_EQ(got, expected);
}

TEST(BeamSearch, PseudoQueryKeysStartWithTheForcedMarkerAndEndWithEnd) {
  const Fixture f = make_fixture(corpus_passages());
  const SpecialTokens s = specials();
  for (int max_pq : {4, 30}) {
    ViewLimits limits;
    limits.max_pq = max_pq;
    const auto source = make_source(std::vector<int32_t>{20, 21}, View::pq, s, limits);
    for (int beam : {2, 100}) {
      MockModel model;
      const auto keys = constrained_beam_search(model, source, View::pq, f.index, s, limits, {beam});
      // Complete pseudo-queries only (method.md section 4), cut at max_pq tokens when longer.
      check_common(f, model, source, View::pq, keys, beam, 0);
      for (const Key& key : keys) {
        ASSERT_GE(key.tokens.size(), 2u);
        EXPECT_EQ(key.tokens.front(), s.pq_start);
        EXPECT_EQ(key.string, key.tokens);
        EXPECT_LE(key.tokens.size(), static_cast<size_t>(max_pq));
        EXPECT_EQ(key.finished, key.tokens.back() == s.end_id);
        EXPECT_TRUE(key.finished || key.tokens.size() == static_cast<size_t>(max_pq));
      }
      if (beam == 100) {
        std::set<std::vector<int32_t>> expected, got;
        for (const auto& p : f.passages) {
          for (const auto& pq : p.pseudo_queries) {
            std::vector<int32_t> target{s.pq_start};
            target.insert(target.end(), pq.begin(), pq.end());
            target.push_back(s.end_id);
            if (target.size() > static_cast<size_t>(max_pq)) target.resize(static_cast<size_t>(max_pq));
            expected.insert(target);
          }
        }
        for (const Key& key : keys) got.insert(key.tokens);
        EXPECT_EQ(got, expected);
      }
    }
  }
}

TEST(BeamSearch, PseudoQueryViewOnACorpusWithoutPseudoQueriesFindsNothing) {
  auto passages = corpus_passages();
  for (auto& p : passages) p.pseudo_queries.clear();
  const Fixture f = make_fixture(passages);
  MockModel model;
  const auto source = make_source(std::vector<int32_t>{20}, View::pq, specials(), {});
  EXPECT_TRUE(constrained_beam_search(model, source, View::pq, f.index, specials(), {}, {}).empty());
}

TEST(BeamSearch, BoostedModelFindsTheTitleItCopies) {
  // A model that favours the tokens of its source decodes the title the query spells first.
  const Fixture f = make_fixture(corpus_passages());
  const SpecialTokens s = specials();
  const auto source = make_source(std::vector<int32_t>{10, 13, 7}, View::title, s, {});
  MockModel model(8.0);
  const auto keys = constrained_beam_search(model, source, View::title, f.index, s, {}, {2});
  const Key* best = nullptr;
  for (const Key& key : keys) {
    if (key.finished && (best == nullptr || key.score > best->score)) best = &key;
  }
  ASSERT_NE(best, nullptr);
  EXPECT_EQ(best->tokens, (std::vector<int32_t>{10, 13, s.end_id}));
}

TEST(BeamSearch, RejectsBadOptions) {
  const Fixture f = make_fixture(corpus_passages());
  MockModel model;
  const auto source = make_source(std::vector<int32_t>{20}, View::body, specials(), {});
  EXPECT_THROW(constrained_beam_search(model, source, View::body, f.index, specials(), {}, {0}), ConfigError);
  ViewLimits limits;
  limits.body_length = 0;
  EXPECT_THROW(constrained_beam_search(model, source, View::body, f.index, specials(), limits, {}), ConfigError);
}

}  // namespace
}  // namespace dgr::retrieval
