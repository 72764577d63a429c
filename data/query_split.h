// A split of one query set into two, by a seeded hash of the query ids: `dgr data split`. DGR's stage 2
// needs lists the student gets wrong, and a student that trained on a query in stage 1 ranks its positive
// first (docs/results.md, "Held-out distillation queries"): stage 1 trains on one part of the training
// queries, mining and stage 2 take the other.
#pragma once

#include <cstdint>
#include <string>

namespace dgr::data {

struct QuerySplitOptions {
  std::string data_dir;            // reads queries.FROM.tsv and qrels.FROM.tsv there, writes the two parts beside them
  std::string from = "train";
  std::string first = "train-stage1";   // the queries not drawn
  std::string second = "train-stage2";  // round(fraction * n) queries, drawn by hash
  double fraction = 0.5;
  uint64_t seed = 1;
  bool force = false;  // replace parts that exist
};

struct QuerySplitReport {
  size_t first_queries = 0, second_queries = 0;
  size_t first_qrels = 0, second_qrels = 0;
};

// Orders the queries of FROM by MD5("seed:qid") and puts the first round(fraction * n) into SECOND, the rest
// into FIRST; each part's qrels are FROM's for its queries. Both parts keep FROM's order. A query's place in
// the hash order depends on the seed and its id only, not on the file's order or the other queries.
// Throws ConfigError when a part would be empty or a part exists without `force`; DataError on bad input.
// Writes nothing unless every file can be written (each file is renamed into place only when complete).
QuerySplitReport split_queries(const QuerySplitOptions& options);

}  // namespace dgr::data
