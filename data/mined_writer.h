// Writing a mined directory (`dgr mine`, format in docs/distillation.md): the candidates stream in, in query
// order, and go to candidates.jsonl, candidates.tsv (with each passage's title and text, for outside rankers)
// and the stage-1 run; commit() writes run.trec and manifest.json last and moves the directory into place,
// so it appears complete or not at all. Also the labels mining gives each candidate (the split's qrels).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "data/mined.h"
#include "data/readers.h"

namespace dgr::data {

// qid -> pids with grade >= 1 in the split's qrels: the positives of mining.
using PositiveLabels = std::unordered_map<std::string, std::unordered_set<std::string>>;

// Reads `qrels_path` (qids checked against `queries`) into the positives of each query.
PositiveLabels read_positive_labels(const std::string& qrels_path, const std::vector<Query>& queries);

// Sets each candidate's `positive` from `labels` (pid among the query's positives).
void label_candidates(MinedQuery& query, const PositiveLabels& labels);

// True when `dir` holds a mined directory's manifest.json (format dgr-mined).
bool is_mined_dir(const std::string& dir);

// What a mined directory holds, counted while it is written (the manifest's "counts").
struct MinedCounts {
  int64_t queries = 0, with_positive = 0, without_candidates = 0, candidates = 0, positives = 0, keys = 0,
          truncated_key_lists = 0;
  double mean_candidates() const;
};

// Where the passages of candidates.tsv come from, and what to say when one is missing.
struct MinedPassageSource {
  std::string corpus_path;  // DATA/corpus.tsv
  std::string index_dir;    // the index the candidates came from (for the error message)
  std::string data_dir;     // for the hint `dgr index --data DATA`
};

class MinedWriter {
 public:
  // Checks that `out_dir` may be written (absent, a mined directory, or `force`; else ConfigError saying what
  // to do), reads the corpus and opens the files in a temporary directory beside `out_dir`.
  MinedWriter(const std::string& out_dir, bool force, const MinedPassageSource& passages, int max_keys);
  ~MinedWriter();
  MinedWriter(const MinedWriter&) = delete;
  MinedWriter& operator=(const MinedWriter&) = delete;

  // Adds the candidates.jsonl line of query `index` (0-based, in order): checked, written to the three
  // outputs and counted. A candidate whose passage is not in the corpus is a DataError naming both.
  void add(size_t index, const std::string& line);
  const MinedCounts& counts() const;

  // Writes run.trec and manifest.json — `provenance_json` (a JSON object: split, inputs, model, index,
  // retrieval) plus format, version, counts (with `ranks`, `seconds`, `queries_per_second`) and every file's
  // sha256 and size — and moves the directory to `out_dir`.
  void commit(const std::string& provenance_json, int ranks, double seconds, double queries_per_second);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dgr::data
