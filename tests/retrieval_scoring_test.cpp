// Tests of the corpus correction and passage scores (retrieval/scoring.h, method.md section 4) on
// hand-computed numbers, and of the retriever (retrieval/retriever.h) end to end with a hand-made model.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <span>
#include <vector>

#include <gtest/gtest.h>

#include "common/error.h"
#include "retrieval/fm_index.h"
#include "retrieval/retriever.h"
#include "retrieval/scoring.h"
#include "retrieval/seq2seq.h"
#include "retrieval/views.h"

namespace dgr::retrieval {
namespace {

constexpr int32_t B = 9;   // boundary
constexpr int32_t E = 7;   // "@@"
constexpr int32_t P = 8;   // "||"

SpecialTokens specials() {
  SpecialTokens s;
  s.title_view = 4;
  s.body_view = 5;
  s.pq_view = 6;
  s.end_id = E;
  s.pq_start = P;
  s.boundary = B;
  return s;
}

Key make_key(std::vector<int32_t> string, View view, double score, uint64_t count,
             KeyOrigin origin = KeyOrigin::beam) {
  Key key;
  key.tokens = string;
  if (view == View::title) key.tokens.erase(key.tokens.begin());
  key.string = std::move(string);
  key.view = view;
  key.origin = origin;
  key.score = score;
  key.count = count;
  return key;
}

// ---- key_weight ----

TEST(KeyWeight, HandComputed) {
  ScoringOptions o;
  // s = -2, F = 3, N = 1000, smoothing 5:
  //   s_u = log(8 / 1005) = -4.833301;  e^{s_u} = 0.0079602, log(1 - 0.0079602) = -0.0079921
  //   e^{-2} = 0.1353353,  log(1 - 0.1353353) = -0.1454135
  //   w = (-2 - 0.0079921) - (-4.833301 - 0.1454135) = -2.0079921 + 4.9787145 = 2.9707227
  //   w^2 = 8.825193
  EXPECT_NEAR(key_weight(-2.0, 3, 1000, o), 8.825193, 1e-5);
  o.square_weights = false;
  EXPECT_NEAR(key_weight(-2.0, 3, 1000, o), 2.9707227, 1e-6);
  // s = -1, F = 1, N = 1000: s_u = log(6/1005) = -5.120983, log(1 - e^{s_u}) = -0.0059880,
  //   log(1 - e^{-1}) = -0.4586751;  w = (-1 - 0.0059880) - (-5.120983 - 0.4586751) = 4.5736705
  EXPECT_NEAR(key_weight(-1.0, 1, 1000, o), 4.5736705, 1e-6);
  // A key the model finds less likely than the corpus does gets 0 (not negative):
  //   s = -6, F = 1, N = 1000: (-6 - 0.0059880) - (-5.120983 - log(1 - e^{-6}) = -0.0024818) < 0
  EXPECT_EQ(key_weight(-6.0, 1, 1000, o), 0.0);
}

TEST(KeyWeight, GuardsAtCertaintyAndDegenerateCounts) {
  ScoringOptions o;
  // s = 0 would give log(1 - e^0) = -inf and w = inf: s is capped at max_log_prob = -1e-6, where
  // log(1 - e^{-1e-6}) = log(1e-6 - 5e-13) = -13.815511, so w stays finite and equals the weight at the cap.
  const double at_zero = key_weight(0.0, 3, 1000, o);
  EXPECT_TRUE(std::isfinite(at_zero));
  EXPECT_EQ(at_zero, key_weight(-1e-6, 3, 1000, o));
  EXPECT_EQ(at_zero, key_weight(0.5, 3, 1000, o));  // a positive "log-prob" (a bad model) too
  // w = (-1e-6 - 0.0079921) - (-4.833301 - 13.815511) = 18.640820, squared 347.4802
  EXPECT_NEAR(at_zero, 347.4802, 1e-3);
  // Probability 0 and NaN: no weight.
  EXPECT_EQ(key_weight(-std::numeric_limits<double>::infinity(), 3, 1000, o), 0.0);
  EXPECT_EQ(key_weight(std::nan(""), 3, 1000, o), 0.0);
  // F = N: the key is the whole text, s_u = 0, it says nothing.
  EXPECT_EQ(key_weight(-0.1, 1000, 1000, o), 0.0);
  // Rarer keys weigh more at equal s.
  EXPECT_GT(key_weight(-2.0, 1, 1000, o), key_weight(-2.0, 10, 1000, o));
}

TEST(KeyWeight, PseudoQueryOffsetAndCap) {
  ScoringOptions o;
  EXPECT_EQ(adjusted_log_prob(-16.0, View::pq, o), -2.0);   // -16 + 14
  EXPECT_EQ(adjusted_log_prob(-14.5, View::pq, o), -1.0);   // -0.5, capped at -1
  EXPECT_EQ(adjusted_log_prob(-16.0, View::body, o), -16.0);
  EXPECT_EQ(adjusted_log_prob(-16.0, View::title, o), -16.0);
  const std::vector<Key> keys{make_key({P, 40, E}, View::pq, -16.0, 1), make_key({40}, View::body, -16.0, 1)};
  const auto w = key_weights(keys, 1000, o);
  // pq: s = -2, F = 1: s_u = -5.120983, w = (-2 - 0.0059880) - (-5.120983 - 0.1454135) = 3.2604088, ^2 = 10.630265
  EXPECT_NEAR(w[0], 10.630265, 1e-5);
  EXPECT_EQ(w[1], 0.0);  // the same log-prob without the offset is far below s_u
}

// ---- score_passage ----

// offsets:  0   1  2 | 3   4   5   6   7   8   9   10 | 11  12  13 14
// tokens :  20  21 @@| 30  31  32  33  31  34  31  30 | ||  40  41 @@
const std::vector<int32_t> kPassage{20, 21, E, 30, 31, 32, 33, 31, 34, 31, 30, P, 40, 41, E};

TEST(ScorePassage, GreedyOverlapCoveragePseudoQueryAndUnigrams) {
  const ScoringOptions o;  // alpha 0.8, squared weights
  // N = 1000. Weights (w before squaring; s_u = log((F+5)/1005)):
  //  k0 title B 20 21 @@, s -1,   F 1 : (-1 - 0.005988) - (-5.120983 - 0.458675) = 4.573670, ^2 = 20.918461
  //  k1 body 31 32 33,    s -3,   F 2 : (-3 - 0.006990) - (-4.966833 - 0.051069) = 2.010912, ^2 = 4.043768
  //  k2 body 33 31,       s -3.5, F 2 : (-3.5 - 0.006990) - (-4.966833 - 0.030663) = 1.490506, ^2 = 2.221608
  //  k3 body 31 34,       s -4,   F 3 : (-4 - 0.007992) - (-4.833301 - 0.018485) = 0.843795, ^2 = 0.711989
  //  k4 body 31,          s -3,   F 40: (-3 - 0.045810) - (-3.106080 - 0.051069) = 0.111340, ^2 = 0.012397
  //  k5 pq || 40 41 @@,   s -16 -> min(-16 + 14, -1) = -2, F 1: 3.260409, ^2 = 10.630265
  //  u30 unigram 30,      s -1.5, F 2 : (-1.5 - 0.006990) - (-4.966833 - 0.252482) = 3.712326, ^2 = 13.781361
  //  u20 unigram 20,      s -1.5, F 2 : 13.781361 (same numbers)
  //  u99 unigram 99 (not in the passage)
  std::vector<Key> keys{
      make_key({B, 20, 21, E}, View::title, -1.0, 1),        make_key({31, 32, 33}, View::body, -3.0, 2),
      make_key({33, 31}, View::body, -3.5, 2),               make_key({31, 34}, View::body, -4.0, 3),
      make_key({31}, View::body, -3.0, 40),                  make_key({P, 40, 41, E}, View::pq, -16.0, 1),
      make_key({30}, View::body, -1.5, 2, KeyOrigin::unigram), make_key({20}, View::body, -1.5, 2, KeyOrigin::unigram),
      make_key({99}, View::body, -1.5, 2, KeyOrigin::unigram),
  };
  const std::vector<double> w = key_weights(keys, 1000, o);
  const double expected_w[] = {20.918461, 4.043768, 2.221608, 0.711989, 0.012397, 10.630265, 13.781361, 13.781361, 13.781361};
  for (size_t i = 0; i < keys.size(); ++i) EXPECT_NEAR(w[i], expected_w[i], 1e-5) << i;

  const PassageScore got = score_passage(kPassage, keys, w, B, o);
  // Greedy by descending w over the non-unigram keys: k0, k5, k1, k2, k3, k4.
  //  k0 title at offset -1 (the boundary before the passage): takes 0..2, covers {20, 21, @@} (not the
  //     boundary): all 3 new, c = 0.2 + 0.8 * 3/3 = 1               -> 20.918461
  //  k5 pq at 11: takes 11..14; tokens {||, 40, 41, @@}, @@ covered: c = 0.2 + 0.8 * 3/4 = 0.8
  //                                                                    -> 10.630265 * 0.8 = 8.504212
  //  k1 31 32 33 at 4: takes 4..6, all new, c = 1                      ->  4.043768
  //  k2 33 31: its only occurrence (6..7) overlaps 6: skipped
  //  k3 31 34 at 7: free; 31 covered, 34 new: c = 0.2 + 0.8 * 1/2 = 0.6 -> 0.711989 * 0.6 = 0.427194
  //  k4 31: occurrences at 4 and 7 taken, 9 free; 31 covered: c = 0.2  -> 0.012397 * 0.2 = 0.002479
  //  unigrams on free positions 3 and 10 (both 30): u30 once          -> 13.781361; u20's only position
  //  (0) is taken by the title; u99 is absent.
  //  total = 20.918461 + 8.504212 + 4.043768 + 0.427194 + 0.002479 + 13.781361 = 47.677475
  EXPECT_NEAR(got.score, 47.677475, 1e-5);
  ASSERT_EQ(got.matches.size(), 6u);
  const uint32_t order[] = {0, 5, 1, 3, 4, 6};
  const int32_t offsets[] = {-1, 11, 4, 7, 9, 3};
  const double coverage[] = {1.0, 0.8, 1.0, 0.6, 0.2, 1.0};
  double sum = 0;
  for (size_t i = 0; i < got.matches.size(); ++i) {
    EXPECT_EQ(got.matches[i].key, order[i]) << i;
    EXPECT_EQ(got.matches[i].offset, offsets[i]) << i;
    EXPECT_NEAR(got.matches[i].coverage, coverage[i], 1e-12) << i;
    EXPECT_NEAR(got.matches[i].contribution, got.matches[i].weight * got.matches[i].coverage, 1e-12);
    sum += got.matches[i].contribution;
  }
  EXPECT_NEAR(sum, got.score, 1e-9);
}

TEST(ScorePassage, TitleKeyMatchesOnlyAtThePassageStart) {
  // "B 31 32" is not a title here even though "31 32" occurs in the body: a title key needs the boundary.
  const std::vector<Key> keys{make_key({B, 31, 32}, View::title, -1.0, 1), make_key({B, 20}, View::title, -1.0, 1)};
  const std::vector<double> w{2.0, 1.0};
  const PassageScore got = score_passage(kPassage, keys, w, B, {});
  ASSERT_EQ(got.matches.size(), 1u);
  EXPECT_EQ(got.matches[0].key, 1u);
  EXPECT_EQ(got.matches[0].offset, -1);
  EXPECT_DOUBLE_EQ(got.score, 1.0);
}

TEST(ScorePassage, ZeroWeightKeysTakeNoPosition) {
  // w = 0 for "30 31 32": it must not block the unigram 30 at offset 3 (nor anything else).
  const std::vector<Key> keys{make_key({30, 31, 32}, View::body, -9.0, 1),
                              make_key({30}, View::body, -1.0, 2, KeyOrigin::unigram)};
  const std::vector<double> w{0.0, 5.0};
  const PassageScore got = score_passage(kPassage, keys, w, B, {});
  ASSERT_EQ(got.matches.size(), 1u);
  EXPECT_EQ(got.matches[0].key, 1u);
  EXPECT_EQ(got.matches[0].offset, 3);
  EXPECT_DOUBLE_EQ(got.score, 5.0);
}

// ---- score_passages: candidates, top_k, ties ----

FMIndex build(const std::vector<std::vector<int32_t>>& docs) { return FMIndex::build(docs, B); }

Key indexed_key(const FMIndex& index, std::vector<int32_t> string, View view, double score,
                KeyOrigin origin = KeyOrigin::beam) {
  const uint64_t count = index.count(string);
  return make_key(std::move(string), view, score, count, origin);
}

TEST(ScorePassages, CandidatesComeOnlyFromKeysUnderMaxKeyCount) {
  // "20" occurs in docs 0..4 (5 times); "30 31" only in doc 3.
  const FMIndex index = build({{10, E, 20, 21}, {11, E, 20, 22}, {12, E, 20, 23}, {13, E, 20, 30, 31}, {14, E, 20, 24}, {15, E, 25}});
  const std::vector<Key> keys{indexed_key(index, {20}, View::body, -0.5), indexed_key(index, {30, 31}, View::body, -1.0)};
  ASSERT_EQ(keys[0].count, 5u);
  ASSERT_EQ(keys[1].count, 1u);
  ScoringOptions o;
  o.max_key_count = 4;  // "20" locates nothing, but still scores inside doc 3
  auto got = score_passages(index, keys, o);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].doc, 3);
  ASSERT_EQ(got[0].keys.size(), 2u);
  const auto w = key_weights(keys, index.total_tokens(), o);
  EXPECT_NEAR(got[0].score, w[0] + w[1], 1e-9);  // no shared tokens: both c = 1
  EXPECT_EQ(got[0].keys[0].key.string, keys[w[0] > w[1] ? 0 : 1].string);

  o.max_key_count = 5;  // now "20" locates docs 0..4
  got = score_passages(index, keys, o);
  ASSERT_EQ(got.size(), 5u);
  EXPECT_EQ(got[0].doc, 3);
  // Docs 0, 1, 2, 4 tie on the same single key: ascending doc index.
  EXPECT_EQ(got[1].doc, 0);
  EXPECT_EQ(got[2].doc, 1);
  EXPECT_EQ(got[3].doc, 2);
  EXPECT_EQ(got[4].doc, 4);
  EXPECT_EQ(got[1].score, got[4].score);

  o.max_candidates = 1;  // only the best bound (doc 3, hit by both keys) is scored
  got = score_passages(index, keys, o);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].doc, 3);
}

TEST(ScorePassages, UnigramKeysLocateCandidatesOnlyWhenAsked) {
  const FMIndex index = build({{10, E, 20, 21}, {11, E, 25, 22}});
  const std::vector<Key> keys{indexed_key(index, {20, 21}, View::body, -0.5),
                              indexed_key(index, {25}, View::body, -0.5, KeyOrigin::unigram)};
  ScoringOptions o;
  auto got = score_passages(index, keys, o);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].doc, 0);
  o.unigrams_locate_candidates = true;
  got = score_passages(index, keys, o);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1].doc + got[0].doc, 1);
}

TEST(ScorePassages, TopKOrderingAndDeterministicTies) {
  // Docs 1 and 3 are identical (tie), doc 2 has the title the model likes, doc 0 matches nothing.
  const FMIndex index = build({{16, E, 40, 41}, {10, E, 20, 21, 22}, {12, E, 20, 21, 23}, {10, E, 20, 21, 22}});
  const std::vector<Key> keys{indexed_key(index, {B, 12, E}, View::title, -0.1),
                              indexed_key(index, {20, 21}, View::body, -0.3),
                              indexed_key(index, {21, 22}, View::body, -1.0)};
  ScoringOptions o;
  auto got = score_passages(index, keys, o);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].doc, 2);
  EXPECT_EQ(got[1].doc, 1);
  EXPECT_EQ(got[2].doc, 3);
  EXPECT_EQ(got[1].score, got[2].score);
  for (size_t i = 1; i < got.size(); ++i) EXPECT_GE(got[i - 1].score, got[i].score);
  o.top_k = 2;
  got = score_passages(index, keys, o);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].doc, 2);
  EXPECT_EQ(got[1].doc, 1);
}

// Passages asked for besides the top_k (`dgr mine --add-run`): scored by the same keys, listed in score
// order when a key matches them, and neither repeated nor listed when no key matches.
TEST(ScorePassages, AlsoDocsJoinTheListWhenAKeyMatchesThem) {
  // Doc 2 has the liked title, doc 1 and 3 the body key (tied), doc 0 nothing.
  const FMIndex index = build({{16, E, 40, 41}, {10, E, 20, 21, 22}, {12, E, 20, 21, 23}, {10, E, 20, 21, 22}});
  const std::vector<Key> keys{indexed_key(index, {B, 12, E}, View::title, -0.1),
                              indexed_key(index, {20, 21}, View::body, -0.3)};
  ScoringOptions o;
  o.top_k = 1;
  const auto full = [&] {
    ScoringOptions all = o;
    all.top_k = 10;
    return score_passages(index, keys, all);
  }();
  ASSERT_EQ(full.size(), 3u);
  const std::vector<int32_t> also{3, 0, 2, 3};  // 3 twice, 0 unmatched, 2 already in the top_k
  const auto got = score_passages(index, keys, o, also);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].doc, 2);
  EXPECT_EQ(got[1].doc, 3);
  EXPECT_EQ(got[1].score, full[2].score);  // the same score as when it is a candidate itself
  ASSERT_EQ(got[1].keys.size(), full[2].keys.size());
  EXPECT_EQ(got[1].keys[0].key.string, full[2].keys[0].key.string);
  // An added passage that outscores a retrieved one is listed before it (the list stays in score order).
  o.max_key_count = 1;  // only the title key (count 1) locates candidates: doc 2; "21 22" (docs 1, 3) does not
  const std::vector<Key> weak_title{indexed_key(index, {B, 12, E}, View::title, -0.5),
                                    indexed_key(index, {21, 22}, View::body, -0.01)};
  ASSERT_EQ(score_passages(index, weak_title, o).size(), 1u);
  const auto ordered = score_passages(index, weak_title, o, std::vector<int32_t>{1});
  ASSERT_EQ(ordered.size(), 2u);
  EXPECT_EQ(ordered[0].doc, 1);
  EXPECT_EQ(ordered[1].doc, 2);
  EXPECT_GT(ordered[0].score, ordered[1].score);
}

// ---- the retriever end to end, with a hand-made model ----

constexpr int32_t kVocab = 40;

uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Log-softmax of pseudo-random logits in [-2, 2] per (source, prefix), + boost for tokens of the source
// and for "@@" (a model that copies its input and knows where titles end), + 8 for the next token of each
// `known` sequence whose beginning the prefix spells (a model that has learnt those identifiers: a complete
// title key of 3-4 tokens needs that to outweigh its corpus probability in a small index).
class MockModel : public Seq2SeqScorer {
 public:
  explicit MockModel(double boost) : boost_(boost) {}
  int32_t vocab_size() const override { return kVocab; }
  std::vector<float> log_probs(std::span<const int32_t> source, std::span<const int32_t> prefix) const {
    uint64_t h = 7;
    for (int32_t t : source) h = mix(h ^ static_cast<uint64_t>(t + 1));
    h = mix(h ^ 0x5555ULL);
    for (int32_t t : prefix) h = mix(h ^ static_cast<uint64_t>(t + 1));
    std::vector<double> logits(kVocab);
    for (int32_t v = 0; v < kVocab; ++v) {
      double l = static_cast<double>(mix(h ^ static_cast<uint64_t>(v + 1000)) % 4001) / 1000.0 - 2.0;
      if (v == E || std::find(source.begin(), source.end(), v) != source.end()) l += boost_;
      for (const auto& seq : known) {  // the next token of a known sequence the prefix (after bos) starts
        const size_t n = prefix.size() - 1;
        if (n < seq.size() && seq[n] == v && std::equal(prefix.begin() + 1, prefix.end(), seq.begin())) l += 8.0;
      }
      logits[static_cast<size_t>(v)] = l;
    }
    const double max = *std::max_element(logits.begin(), logits.end());
    double sum = 0;
    for (double l : logits) sum += std::exp(l - max);
    std::vector<float> out(kVocab);
    for (size_t v = 0; v < out.size(); ++v) out[v] = static_cast<float>(logits[v] - max - std::log(sum));
    return out;
  }
  class Decoding : public Seq2SeqScorer::Decoding {
   public:
    Decoding(const MockModel& m, std::span<const int32_t> source) : m_(m), source_(source.begin(), source.end()), beams_(1) {}
    const std::vector<float>& step(std::span<const int32_t> parents, std::span<const int32_t> tokens) override {
      std::vector<std::vector<int32_t>> next;
      out_.clear();
      for (size_t i = 0; i < parents.size(); ++i) {
        auto beam = beams_.at(static_cast<size_t>(parents[i]));
        beam.push_back(tokens[i]);
        auto row = m_.log_probs(source_, beam);
        out_.insert(out_.end(), row.begin(), row.end());
        next.push_back(std::move(beam));
      }
      beams_ = std::move(next);
      return out_;
    }

   private:
    const MockModel& m_;
    std::vector<int32_t> source_;
    std::vector<std::vector<int32_t>> beams_;
    std::vector<float> out_;
  };
  std::unique_ptr<Seq2SeqScorer::Decoding> start(std::span<const int32_t> source) override {
    return std::make_unique<Decoding>(*this, source);
  }
  std::vector<float> score(std::span<const int32_t> source, const std::vector<std::vector<int32_t>>& targets) override {
    ++score_calls;
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
  int score_calls = 0;
  std::vector<std::vector<int32_t>> known;

 private:
  double boost_;
};

std::vector<PassageTokens> retrieval_corpus() {
  return {
      {{10, 11}, {20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31}, {{12, 20, 21}}},
      {{10, 11, 12}, {21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 32, 33, 34}, {}},
      {{10, 13}, {14, 15, 16, 17, 35, 36, 37, 38, 39, 20, 21, 22}, {{10, 14, 15}}},
      {{14}, {30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 10, 11}, {}},
      {{16, 17}, {22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}, {}},
  };
}

// Word starts: t % 3 != 1 (so 13, 16, 19, ... continue the previous word).
std::vector<bool> word_starts() {
  std::vector<bool> table(kVocab);
  for (int32_t t = 0; t < kVocab; ++t) table[static_cast<size_t>(t)] = t % 3 != 1;
  return table;
}

TEST(Retriever, QueryNgramsFollowWordStarts) {
  const FMIndex index = build({{10, E, 20}});
  const Retriever retriever(index, specials(), word_starts(), {});
  // Words of 10 11 12 13 14: [10] [11] [12 13] [14] (13 % 3 == 1 continues "12").
  const std::vector<int32_t> query{10, 11, 12, 13, 14};
  const std::vector<std::vector<int32_t>> expected{
      {10}, {11}, {12, 13}, {14}, {10, 11}, {11, 12, 13}, {12, 13, 14}, {10, 11, 12, 13}, {11, 12, 13, 14}};
  EXPECT_EQ(retriever.query_ngrams(query, 3), expected);
  EXPECT_EQ(retriever.query_ngrams(query, 1), std::vector<std::vector<int32_t>>(expected.begin(), expected.begin() + 4));
  // Repeated words give each n-gram once.
  EXPECT_EQ(retriever.query_ngrams(std::vector<int32_t>{11, 11}, 2), (std::vector<std::vector<int32_t>>{{11}, {11, 11}}));
}

TEST(Retriever, KeysOfAllViewsAreMergedScoredAndOccur) {
  std::vector<std::vector<int32_t>> sequences;
  for (const auto& p : retrieval_corpus()) sequences.push_back(index_sequence(p, specials()));
  const FMIndex index = build(sequences);
  RetrieverOptions options;
  options.beam.beam_size = 4;
  options.num_unigrams = 6;
  const Retriever retriever(index, specials(), word_starts(), options);
  MockModel model(3.0);
  const std::vector<int32_t> query{10, 13, 14, 15, 19};
  const auto keys = retriever.keys(model, query);
  EXPECT_EQ(model.score_calls, 1);  // the n-grams are scored in one batch

  std::set<std::pair<int, std::vector<int32_t>>> seen;
  std::map<KeyOrigin, int> origins;
  std::map<View, int> views;
  for (const Key& key : keys) {
    EXPECT_TRUE(seen.emplace(static_cast<int>(key.view), key.string).second) << "keys are merged";
    EXPECT_GT(key.count, 0u);
    EXPECT_EQ(key.count, index.count(key.string));
    ++origins[key.origin];
    ++views[key.view];
    const auto source = make_source(query, key.view, specials(), options.limits);
    EXPECT_NEAR(key.score, model.score(source, {key.tokens})[0], 1e-5);
    if (key.origin != KeyOrigin::beam) {
      EXPECT_EQ(key.view, View::body);
    }
  }
  EXPECT_GT(views[View::title], 0);
  EXPECT_GT(views[View::body], 0);
  EXPECT_GT(views[View::pq], 0);
  EXPECT_GT(origins[KeyOrigin::unigram], 0);
  EXPECT_LE(origins[KeyOrigin::unigram], 6);
  // Every query n-gram that occurs is a body key (an n-gram the body beam also produced keeps the beam's
  // origin); "15 19" does not occur and is not a key. Words: [10 13] [14] [15 19].
  for (const std::vector<int32_t>& gram : {std::vector<int32_t>{10, 13}, {14}}) {
    ASSERT_GT(index.count(gram), 0u);
    EXPECT_TRUE(seen.count({static_cast<int>(View::body), gram}));
  }
  EXPECT_EQ(index.count(std::vector<int32_t>{15, 19}), 0u);
  EXPECT_FALSE(seen.count({static_cast<int>(View::body), {15, 19}}));
}

TEST(Retriever, NgramKeysAreRescoredUnderTheBodySourceInOneBatch) {
  std::vector<std::vector<int32_t>> sequences;
  for (const auto& p : retrieval_corpus()) sequences.push_back(index_sequence(p, specials()));
  const FMIndex index = build(sequences);
  RetrieverOptions options;
  options.title_view = options.pq_view = options.unigram_keys = false;
  options.beam.beam_size = 1;
  const Retriever retriever(index, specials(), word_starts(), options);
  MockModel model(1.0);
  // Words [10 13] [14] [15 19]; the n-grams that occur: "10 13" (doc 2's title) and "14".
  const std::vector<int32_t> query{10, 13, 14, 15, 19};
  const auto keys = retriever.keys(model, query);
  EXPECT_EQ(model.score_calls, 1);
  const std::vector<std::vector<int32_t>> grams{{10, 13}, {14}};
  const auto body_source = make_source(query, View::body, specials(), options.limits);
  const auto forced = model.score(body_source, grams);
  int ngram_keys = 0;
  for (size_t i = 0; i < grams.size(); ++i) {
    auto key = std::find_if(keys.begin(), keys.end(), [&](const Key& k) { return k.string == grams[i]; });
    ASSERT_NE(key, keys.end()) << "n-gram " << i << " is a key";
    EXPECT_EQ(key->view, View::body);
    EXPECT_EQ(key->tokens, grams[i]);
    EXPECT_EQ(key->count, index.count(grams[i]));
    EXPECT_NEAR(key->score, forced[i], 1e-5);
    ngram_keys += key->origin == KeyOrigin::query_ngram ? 1 : 0;
  }
  EXPECT_GT(ngram_keys, 0) << "at least one n-gram the body beam did not produce";
  for (const Key& key : keys) {
    if (key.origin == KeyOrigin::query_ngram) {
      EXPECT_TRUE(std::find(grams.begin(), grams.end(), key.string) != grams.end());
    }
  }
}

// The n-gram and unigram keys are body-view keys (method.md section 4): a search without the body view has
// none, whatever their switches say, so a "title only" run has title keys only.
TEST(Retriever, NgramAndUnigramKeysExistOnlyWithTheBodyView) {
  std::vector<std::vector<int32_t>> sequences;
  for (const auto& p : retrieval_corpus()) sequences.push_back(index_sequence(p, specials()));
  const FMIndex index = build(sequences);
  RetrieverOptions options;
  options.body_view = options.pq_view = false;
  options.ngram_keys = options.unigram_keys = true;
  const Retriever retriever(index, specials(), word_starts(), options);
  MockModel model(1.0);
  const auto keys = retriever.keys(model, std::vector<int32_t>{10, 13, 14, 15, 19});
  ASSERT_FALSE(keys.empty());
  EXPECT_EQ(model.score_calls, 0);
  for (const Key& key : keys) {
    EXPECT_EQ(key.view, View::title);
    EXPECT_EQ(key.origin, KeyOrigin::beam);
  }
}

// method.md section 4: title keys are complete titles. Doc 0's title "10 11" is a prefix of doc 1's
// "10 11 12": with prefix keys the key "B 10 11" matched both and they could tie (then ordered by doc
// index); now each is matched by its own complete title only and scored by it.
TEST(Retriever, ATitleThatIsAPrefixOfAnotherDoesNotTieWithIt) {
  // The five passages, then 300 of tokens 30..39 only: an index of ~4500 tokens, as the corpus probability
  // of a key falls with the index's size and a complete title of 4 tokens must outweigh it.
  std::vector<std::vector<int32_t>> sequences;
  for (const auto& p : retrieval_corpus()) sequences.push_back(index_sequence(p, specials()));
  for (int i = 0; i < 300; ++i) {
    PassageTokens filler;
    filler.title = {30 + i % 10, 30 + (i / 10) % 10};
    for (int t = 0; t < 12; ++t) filler.body.push_back(30 + static_cast<int32_t>(mix(static_cast<uint64_t>(i * 31 + t)) % 10));
    sequences.push_back(index_sequence(filler, specials()));
  }
  const FMIndex index = build(sequences);
  RetrieverOptions options;
  options.body_view = options.pq_view = false;
  options.beam.beam_size = 10;
  options.scoring.top_k = 5;
  const Retriever retriever(index, specials(), word_starts(), options);
  for (double boost : {0.0, 1.0, 2.0}) {  // (a larger one gives "@@" after "10 11" most of the mass: no doc 1)
    MockModel model(boost);
    model.known = {{10, 11, E}, {10, 11, 12, E}};
    const std::vector<int32_t> query{10, 11, 20};
    const auto got = retriever.retrieve(model, query);
    const RetrievedPassage* doc0 = nullptr;
    const RetrievedPassage* doc1 = nullptr;
    for (const auto& p : got) {
      ASSERT_EQ(p.keys.size(), 1u) << "one complete title key per passage";
      if (p.doc >= 5) continue;  // a filler passage
      const std::vector<int32_t> title = retrieval_corpus()[static_cast<size_t>(p.doc)].title;
      std::vector<int32_t> expected(title);
      expected.push_back(E);
      EXPECT_EQ(p.keys[0].key.tokens, expected) << "doc " << p.doc << " is matched by its own title only";
      if (p.doc == 0) doc0 = &p;
      if (p.doc == 1) doc1 = &p;
    }
    ASSERT_NE(doc0, nullptr) << "boost " << boost;
    ASSERT_NE(doc1, nullptr) << "boost " << boost;
    EXPECT_NE(doc0->score, doc1->score) << "boost " << boost;
    const auto source = make_source(query, View::title, specials(), options.limits);
    const std::vector<std::vector<int32_t>> titles{std::vector<int32_t>{10, 11, E}, std::vector<int32_t>{10, 11, 12, E}};
    const std::vector<float> forced = model.score(source, titles);
    EXPECT_NEAR(doc0->keys[0].key.score, forced[0], 1e-5);
    EXPECT_NEAR(doc1->keys[0].key.score, forced[1], 1e-5);
  }
}

TEST(Retriever, RetrievesTheCopiedTitleFirstAndReportsItsKeys) {
  std::vector<std::vector<int32_t>> sequences;
  for (const auto& p : retrieval_corpus()) sequences.push_back(index_sequence(p, specials()));
  const FMIndex index = build(sequences);
  RetrieverOptions options;
  options.scoring.top_k = 3;
  const Retriever retriever(index, specials(), word_starts(), options);
  MockModel model(6.0);
  model.known = {{10, 13, E}};
  // The query spells doc 2's title (10 13) and the start of its body.
  const auto got = retriever.retrieve(model, std::vector<int32_t>{10, 13, 14, 15, 16});
  ASSERT_FALSE(got.empty());
  ASSERT_LE(got.size(), 3u);
  EXPECT_EQ(got[0].doc, 2);
  for (size_t i = 0; i < got.size(); ++i) {
    if (i > 0) {
      EXPECT_TRUE(got[i - 1].score > got[i].score || (got[i - 1].score == got[i].score && got[i - 1].doc < got[i].doc));
    }
    double sum = 0;
    std::vector<int32_t> text{B};
    text.insert(text.end(), sequences[static_cast<size_t>(got[i].doc)].begin(), sequences[static_cast<size_t>(got[i].doc)].end());
    for (const MatchedKey& m : got[i].keys) {
      sum += m.contribution;
      EXPECT_GT(m.weight, 0.0);
      // The key's string sits at its offset (offset -1 = the boundary before the passage).
      ASSERT_LE(static_cast<size_t>(m.offset + 1) + m.key.string.size(), text.size());
      EXPECT_TRUE(std::equal(m.key.string.begin(), m.key.string.end(), text.begin() + m.offset + 1));
    }
    EXPECT_NEAR(sum, got[i].score, 1e-9);
  }
  // Doc 2's complete title scored it (title keys are complete titles: method.md section 4).
  bool title_key = false;
  for (const MatchedKey& m : got[0].keys) {
    title_key |= m.key.view == View::title && m.offset == -1 && m.key.tokens == std::vector<int32_t>{10, 13, E};
  }
  EXPECT_TRUE(title_key);
}

TEST(Retriever, NoViewsNoKeys) {
  const FMIndex index = build({{10, E, 20}});
  RetrieverOptions options;
  options.title_view = options.body_view = options.pq_view = false;
  options.ngram_keys = options.unigram_keys = false;
  const Retriever retriever(index, specials(), word_starts(), options);
  MockModel model(0.0);
  EXPECT_TRUE(retriever.retrieve(model, std::vector<int32_t>{20}).empty());
}

}  // namespace
}  // namespace dgr::retrieval
