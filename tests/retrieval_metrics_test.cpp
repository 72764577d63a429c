// Metrics against hand-computed values: one relevant passage, several, graded nDCG, ties, queries without
// a relevant passage, queries missing from the run, duplicate run entries.
#include <gtest/gtest.h>

#include <cmath>

#include "retrieval/metrics.h"

using dgr::retrieval::evaluate;
using dgr::retrieval::MetricsOptions;
using dgr::data::Qrel;
using dgr::data::RunEntry;

namespace {

std::vector<RunEntry> ranking(const std::string& qid, const std::vector<std::string>& pids) {
  std::vector<RunEntry> out;
  for (size_t i = 0; i < pids.size(); ++i) out.push_back({qid, pids[i], static_cast<int>(i + 1), 10.0 - i, "t"});
  return out;
}

TEST(Metrics, OneRelevantPassage) {
  auto run = ranking("q1", {"a", "b", "c", "d", "e", "f"});
  auto e = evaluate(run, {{"q1", "c", 1}});
  EXPECT_EQ(e.num_queries, 1);
  EXPECT_DOUBLE_EQ(e.mean.at("R@1"), 0.0);
  EXPECT_DOUBLE_EQ(e.mean.at("R@5"), 1.0);
  EXPECT_DOUBLE_EQ(e.mean.at("MRR@10"), 1.0 / 3);
  EXPECT_DOUBLE_EQ(e.mean.at("nDCG@10"), 1.0 / std::log2(4.0));  // DCG 1/log2(3+1), ideal 1
}

TEST(Metrics, SeveralRelevantAndGradedNdcg) {
  auto run = ranking("q1", {"a", "b", "c", "d"});
  // b grade 1 at rank 2, d grade 2 at rank 4, x grade 1 not retrieved.
  auto e = evaluate(run, {{"q1", "b", 1}, {"q1", "d", 2}, {"q1", "x", 1}});
  EXPECT_DOUBLE_EQ(e.mean.at("R@1"), 0.0);
  EXPECT_DOUBLE_EQ(e.mean.at("R@5"), 2.0 / 3);
  EXPECT_DOUBLE_EQ(e.mean.at("MRR@10"), 0.5);
  double dcg = 1 / std::log2(3.0) + 3 / std::log2(5.0);
  double ideal = 3 / std::log2(2.0) + 1 / std::log2(3.0) + 1 / std::log2(4.0);
  EXPECT_NEAR(e.mean.at("nDCG@10"), dcg / ideal, 1e-12);
}

TEST(Metrics, TiesAreBrokenByRankThenPid) {
  // Equal scores: the rank field decides; the file order does not.
  std::vector<RunEntry> run = {{"q1", "b", 2, 5.0, "t"}, {"q1", "a", 1, 5.0, "t"}};
  auto e = evaluate(run, {{"q1", "a", 1}});
  EXPECT_DOUBLE_EQ(e.mean.at("MRR@10"), 1.0);
  std::vector<RunEntry> same_rank = {{"q1", "b", 1, 5.0, "t"}, {"q1", "a", 1, 5.0, "t"}};
  EXPECT_DOUBLE_EQ(evaluate(same_rank, {{"q1", "b", 1}}).mean.at("MRR@10"), 0.5);
}

TEST(Metrics, QueriesWithoutRelevantOrMissingFromRun) {
  auto run = ranking("q1", {"a", "b"});
  auto more = ranking("q9", {"a"});  // no qrels: ignored
  run.insert(run.end(), more.begin(), more.end());
  // q2 has a relevant passage but no run entry: counts as 0. q3 only has a grade-0 judgement: not evaluated.
  auto e = evaluate(run, {{"q1", "a", 1}, {"q2", "z", 1}, {"q3", "a", 0}});
  EXPECT_EQ(e.num_queries, 2);
  EXPECT_EQ(e.queries_missing_from_run, 1);
  EXPECT_EQ(e.queries_without_relevant, 1);
  EXPECT_DOUBLE_EQ(e.mean.at("R@1"), 0.5);
  EXPECT_DOUBLE_EQ(e.mean.at("MRR@10"), 0.5);
  EXPECT_DOUBLE_EQ(e.per_query.at("q2").at("R@100"), 0.0);
}

TEST(Metrics, CutoffsAndDuplicateEntries) {
  std::vector<std::string> pids;
  for (int i = 0; i < 30; ++i) pids.push_back("p" + std::to_string(i));
  auto run = ranking("q1", pids);
  run.push_back({"q1", "p0", 31, -1.0, "t"});  // a duplicate pid further down counts once, at its best rank
  auto e = evaluate(run, {{"q1", "p10", 1}, {"q1", "p25", 1}});
  EXPECT_DOUBLE_EQ(e.mean.at("R@10"), 0.0);
  EXPECT_DOUBLE_EQ(e.mean.at("R@20"), 0.5);
  EXPECT_DOUBLE_EQ(e.mean.at("R@100"), 1.0);
  EXPECT_DOUBLE_EQ(e.mean.at("MRR@10"), 0.0);  // first relevant at rank 11
  EXPECT_DOUBLE_EQ(e.mean.at("nDCG@10"), 0.0);
}

TEST(Metrics, MeanOverQueries) {
  auto run = ranking("q1", {"a", "b"});
  auto second = ranking("q2", {"c", "d"});
  run.insert(run.end(), second.begin(), second.end());
  auto e = evaluate(run, {{"q1", "a", 1}, {"q2", "d", 1}});
  EXPECT_DOUBLE_EQ(e.mean.at("R@1"), 0.5);
  EXPECT_DOUBLE_EQ(e.mean.at("MRR@10"), 0.75);
  EXPECT_NE(dgr::retrieval::format_metrics(e).find("MRR@10 0.7500"), std::string::npos);
}

}  // namespace
