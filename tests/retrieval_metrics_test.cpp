// Metrics against hand-computed values: one relevant passage, several, graded nDCG, ties in trec_eval's
// order, queries without a relevant passage, queries missing from the run, duplicate run entries, the
// per-query TSV.
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

TEST(Metrics, OrderIsTrecEvals) {
  // trec_eval (form_res_rels.c): score descending, ties by pid descending (strcmp), the rank column and the
  // file order ignored.
  std::vector<RunEntry> run = {{"q1", "a", 1, 5.0, "t"},  {"q1", "b", 2, 5.0, "t"},   {"q1", "B", 3, 5.0, "t"},
                               {"q1", "c", 4, 7.0, "t"},  {"q1", "\xc3\xa9", 5, 5.0, "t"}, {"q1", "z", 6, -1.0, "t"}};
  std::vector<const RunEntry*> entries;
  for (const auto& e : run) entries.push_back(&e);
  dgr::retrieval::order_as_trec_eval(entries);
  std::vector<std::string> pids;
  for (const auto* e : entries) pids.push_back(e->pid);
  // "\xc3\xa9" (e-acute) sorts above ASCII as unsigned bytes; "B" (0x42) below "a" and "b".
  EXPECT_EQ(pids, (std::vector<std::string>{"c", "\xc3\xa9", "b", "a", "B", "z"}));
}

TEST(Metrics, TiesAreBrokenByPidDescendingNotByRank) {
  std::vector<RunEntry> run = {{"q1", "a", 1, 5.0, "t"}, {"q1", "b", 2, 5.0, "t"}};
  EXPECT_DOUBLE_EQ(evaluate(run, {{"q1", "a", 1}}).mean.at("MRR@10"), 0.5);
  EXPECT_DOUBLE_EQ(evaluate(run, {{"q1", "b", 1}}).mean.at("MRR@10"), 1.0);
  std::vector<RunEntry> same_rank = {{"q1", "b", 1, 5.0, "t"}, {"q1", "a", 1, 5.0, "t"}};
  EXPECT_DOUBLE_EQ(evaluate(same_rank, {{"q1", "b", 1}}).mean.at("MRR@10"), 1.0);
}

TEST(Metrics, ScoresAreComparedAsFloatsAsTrecEvalReadsThem) {
  // 30.1234561 and 30.1234562 differ as doubles but are one float: a tie, broken by pid ("a" after "b").
  std::vector<RunEntry> run = {{"q1", "a", 1, 30.1234562, "t"}, {"q1", "b", 2, 30.1234561, "t"}};
  ASSERT_EQ(static_cast<float>(run[0].score), static_cast<float>(run[1].score));
  EXPECT_DOUBLE_EQ(evaluate(run, {{"q1", "a", 1}}).mean.at("R@1"), 0.0);
}

TEST(Metrics, UntiedRunsAreReadInRankOrder) {
  // dgr breaks ties by its own order (here pids ascending, the reverse of trec_eval's); once untied
  // (data/trec.h, Note [Written scores]) trec_eval's order is the rank order.
  std::vector<RunEntry> run;
  for (int i = 0; i < 12; ++i) {
    run.push_back({"q1", "p" + std::to_string(10 + i), i + 1, i < 10 ? 31.5 : 31.5 - i, "t"});
  }
  dgr::data::untie_scores(run);
  std::vector<const RunEntry*> entries;
  for (const auto& e : run) entries.push_back(&e);
  dgr::retrieval::order_as_trec_eval(entries);
  for (size_t i = 0; i < entries.size(); ++i) EXPECT_EQ(entries[i]->rank, static_cast<int>(i + 1));
  EXPECT_DOUBLE_EQ(evaluate(run, {{"q1", "p10", 1}}).mean.at("R@1"), 1.0);
}

TEST(Metrics, PerQueryTsv) {
  auto run = ranking("q2", {"a", "b", "c"});
  auto first = ranking("q1", {"x"});
  run.insert(run.end(), first.begin(), first.end());
  auto e = evaluate(run, {{"q2", "c", 1}, {"q1", "x", 1}, {"q3", "y", 1}});
  EXPECT_EQ(dgr::retrieval::format_per_query_tsv(e),
            "qid\tR@1\tR@5\tR@10\tR@20\tR@100\tMRR@10\tnDCG@10\n"
            "q1\t1\t1\t1\t1\t1\t1\t1\n"
            "q2\t0\t1\t1\t1\t1\t0.3333333333333333\t0.5\n"
            "q3\t0\t0\t0\t0\t0\t0\t0\n");
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
