// Retrieval metrics from a run and qrels: Recall@k, MRR@k and nDCG@k (graded), per query and averaged over
// the evaluated queries.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "data/readers.h"
#include "data/trec.h"

namespace dgr::retrieval {

struct MetricsOptions {
  std::vector<int> recall_at = {1, 5, 10, 20, 100};
  int mrr_at = 10;
  int ndcg_at = 10;
};

// Note [Metric conventions]:
// - each query's entries are ordered as trec_eval orders them (form_res_rels.c): by score read as a 32-bit
//   float, descending, ties by pid in reverse byte order (strcmp); the rank column is ignored. dgr's own
//   runs have no ties (data/trec.h, Note [Written scores]), so this is their rank order; a pid listed
//   twice counts once, at its first place;
// - relevant = grade > 0; Recall@k = relevant passages in the top k / relevant passages of the query;
// - MRR@k = 1 / rank of the first relevant passage within the top k, else 0;
// - nDCG@k = DCG@k / ideal DCG@k with gain (2^grade - 1) and discount log2(rank + 1) (trec_eval's
//   ndcg_cut.k takes the grade itself as the gain: the same on binary qrels);
// - queries are the ones with at least one relevant passage in the qrels; a query of the qrels with no
//   entry in the run counts with 0 for every metric; run queries without relevant passages are ignored
//   (counted in `queries_without_relevant`).
struct Evaluation {
  std::map<std::string, double> mean;                 // metric name ("R@10", "MRR@10", "nDCG@10") -> mean
  std::map<std::string, std::map<std::string, double>> per_query;  // qid -> metric -> value
  int num_queries = 0;               // evaluated queries
  int queries_missing_from_run = 0;  // evaluated queries with no run entry (scored 0)
  int queries_without_relevant = 0;  // run queries ignored for having no relevant passage
};

// Sorts one query's entries into trec_eval's order (Note [Metric conventions]).
void order_as_trec_eval(std::vector<const data::RunEntry*>& entries);

Evaluation evaluate(const std::vector<data::RunEntry>& run, const std::vector<data::Qrel>& qrels,
                    const MetricsOptions& options = {});

// "R@1 0.7917  R@5 ...  MRR@10 ...  nDCG@10 ..." in a fixed order.
std::string format_metrics(const Evaluation& evaluation, const MetricsOptions& options = {});

// The metric names in format_metrics' order: "R@1", ..., "MRR@10", "nDCG@10".
std::vector<std::string> metric_names(const MetricsOptions& options = {});

// Per-query metrics as TSV: a header `qid<TAB>R@1<TAB>...<TAB>nDCG@10`, then one line per evaluated query
// (by qid) with every value in shortest round-trip form (the input of paired tests).
std::string format_per_query_tsv(const Evaluation& evaluation, const MetricsOptions& options = {});

}  // namespace dgr::retrieval
