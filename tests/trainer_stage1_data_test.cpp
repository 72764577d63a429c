// Stage-1 pairs (trainer/stage1_data.h, method.md section 3): the epoch's layout (title copies, body spans,
// pseudo-query copies per training query; indexing pairs per passage and view), every view's source and
// target, body spans sampled by their overlap with the query, indexing windows, determinism. No LibTorch.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "trainer/stage1_data.h"

namespace {

using dgr::retrieval::PassageTokens;
using dgr::retrieval::SpecialTokens;
using dgr::retrieval::View;
using dgr::trainer::Pair;
using dgr::trainer::Stage1Data;
using dgr::trainer::Stage1DataOptions;
using dgr::trainer::TrainingQuery;

SpecialTokens special() {
  SpecialTokens s;
  s.title_view = 4;
  s.body_view = 5;
  s.pq_view = 6;
  s.end_id = 7;
  s.pq_start = 8;
  s.boundary = 9;
  return s;
}

std::vector<int32_t> range(int32_t first, int32_t count) {
  std::vector<int32_t> out(static_cast<size_t>(count));
  std::iota(out.begin(), out.end(), first);
  return out;
}

// p0: title, 30-token body, two pseudo-queries; p1: title and body, no pseudo-query; p2: title only.
std::vector<PassageTokens> passages() {
  return {{{100, 101}, range(200, 30), {{300, 301}, {302}}}, {{110}, range(400, 12), {}}, {{120, 121}, {}, {}}};
}

Stage1DataOptions all_views() {
  Stage1DataOptions o;
  o.views[0] = o.views[1] = o.views[2] = true;
  return o;
}

TEST(Stage1Data, EpochLayoutCountsEveryKindOfPair) {
  // q0 -> p0: 3 title + 10 body + 5 pq; q1 -> p1: 3 title + 10 body (no pq); indexing: p0 2 x 3 views,
  // p1 2 x 2 views (no pq), p2 none (no body to take a source from).
  Stage1Data data(passages(), {{{220, 221}, 0}, {{405}, 1}}, special(), all_views(), 1);
  EXPECT_EQ(data.size(), 18 + 13 + 6 + 4);
  EXPECT_EQ(data.describe(),
            "41 pairs per epoch: query pairs title 6 body 20 pq 5, indexing pairs title 4 body 4 pq 2");
  Stage1DataOptions title_only;  // views = title, body by default: switch body off
  title_only.views[1] = false;
  EXPECT_EQ(Stage1Data(passages(), {{{220}, 0}}, special(), title_only, 1).size(), 3 + 2 * 2);
}

TEST(Stage1Data, SourcesAndTargetsOfEveryView) {
  const std::vector<int32_t> query = {220, 221};
  Stage1Data data(passages(), {{query, 0}}, special(), all_views(), 5);
  const SpecialTokens s = special();
  // Query pairs come first: 3 title, 10 body, 5 pq.
  for (int64_t i = 0; i < 18; ++i) {
    const Pair pair = data.pair(0, i);
    const View view = i < 3 ? View::title : i < 13 ? View::body : View::pq;
    ASSERT_EQ(pair.view, view) << i;
    const int32_t marker = view == View::title ? s.title_view : view == View::body ? s.body_view : s.pq_view;
    EXPECT_EQ(pair.source, (std::vector<int32_t>{220, 221, marker, s.eos})) << i;
    if (view == View::title) EXPECT_EQ(pair.target, (std::vector<int32_t>{100, 101, s.end_id})) << i;
    if (view == View::body) {
      ASSERT_EQ(pair.target.size(), 10u) << i;  // a span of body_length contiguous body tokens
      EXPECT_EQ(pair.target.back() - pair.target.front(), 9) << i;
      EXPECT_TRUE(pair.target.front() >= 200 && pair.target.back() <= 229) << i;
    }
    if (view == View::pq) {
      EXPECT_TRUE(pair.target == (std::vector<int32_t>{s.pq_start, 300, 301, s.end_id}) ||
                  pair.target == (std::vector<int32_t>{s.pq_start, 302, s.end_id}))
          << i;
    }
  }
}

TEST(Stage1Data, BodySpansFollowTheQueryOverlap) {
  // Query tokens 224..226 occur only at body positions 24..26: at a low temperature nearly every sampled
  // span covers them; without a query the start is uniform over the 21 possible starts.
  dgr::retrieval::ViewLimits limits;
  const PassageTokens passage = passages()[0];
  const std::vector<int32_t> query = {224, 225, 226};
  int covering = 0, uniform_covering = 0;
  std::vector<int> starts(21, 0);
  for (uint64_t rng = 1; rng <= 400; ++rng) {
    auto span = dgr::trainer::query_body_span(passage, &query, limits, 0.1, rng);
    covering += span.front() <= 224 && span.back() >= 226;
    auto plain = dgr::trainer::query_body_span(passage, nullptr, limits, 0.1, rng);
    uniform_covering += plain.front() <= 224 && plain.back() >= 226;
    ++starts[static_cast<size_t>(plain.front() - 200)];
  }
  EXPECT_GE(covering, 390);
  EXPECT_LT(uniform_covering, 200);  // 8 of 21 starts cover them: about 150 of 400
  EXPECT_EQ(*std::min_element(starts.begin(), starts.end()) > 0, true) << "every start is drawn";
  // A body no longer than a span is the whole body.
  EXPECT_EQ(dgr::trainer::query_body_span(passages()[1], &query, {.body_length = 12}, 1.0, 3), range(400, 12));
}

TEST(Stage1Data, IndexingSourcesAreBodyWindowsOfTheConfiguredLengths) {
  Stage1DataOptions o;  // title + body views
  o.indexing_source_min = 4;
  o.indexing_source_max = 7;
  Stage1Data data(passages(), {}, special(), o, 9);
  ASSERT_EQ(data.size(), 2 * 2 + 2 * 2);  // p0 and p1: 2 indexing pairs x 2 views; p2 has no body
  for (int64_t epoch = 0; epoch < 5; ++epoch) {
    for (int64_t i = 0; i < data.size(); ++i) {
      const Pair pair = data.pair(epoch, i);
      const std::vector<int32_t> window(pair.source.begin(), pair.source.end() - 2);
      ASSERT_GE(window.size(), 4u);
      ASSERT_LE(window.size(), 7u);
      EXPECT_EQ(window.back() - window.front(), static_cast<int32_t>(window.size()) - 1) << "contiguous";
      const int32_t first_body = i < 4 ? 200 : 400, last_body = i < 4 ? 229 : 411;
      EXPECT_TRUE(window.front() >= first_body && window.back() <= last_body);
    }
  }
  o.indexing_prefix_probability = 1.0;  // always the opening of the body
  Stage1Data prefixes(passages(), {}, special(), o, 9);
  for (int64_t i = 0; i < prefixes.size(); ++i) EXPECT_EQ(prefixes.pair(2, i).source.front(), i < 4 ? 200 : 400);
}

TEST(Stage1Data, PairsAreAFunctionOfSeedEpochAndIndex) {
  Stage1Data a(passages(), {{{220, 221}, 0}}, special(), all_views(), 7);
  Stage1Data b(passages(), {{{220, 221}, 0}}, special(), all_views(), 7);
  Stage1Data other_seed(passages(), {{{220, 221}, 0}}, special(), all_views(), 8);
  int differ_by_epoch = 0, differ_by_seed = 0;
  for (int64_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a.pair(3, i).target, b.pair(3, i).target);
    EXPECT_EQ(a.pair(3, i).source, b.pair(3, i).source);
    differ_by_epoch += a.pair(3, i).target != a.pair(4, i).target;
    differ_by_seed += a.pair(3, i).target != other_seed.pair(3, i).target;
  }
  EXPECT_GT(differ_by_epoch, 0);
  EXPECT_GT(differ_by_seed, 0);
}

}  // namespace
