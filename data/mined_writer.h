// Writing a mined directory (`dgr mine`, format in docs/distillation.md): the candidates stream in, in query
// order, and go to candidates.jsonl, candidates.tsv (with each passage's title and text, for outside rankers)
// and the stage-1 run; commit() writes run.trec and manifest.json last and moves the directory into place,
// so it appears complete or not at all. Also the labels mining gives each candidate (the split's qrels).
//
// Note [Resumable mining]: the files grow in OUT.partial/ (a fixed name, not a process id), and checkpoint()
// records in OUT.partial/resume.json how many queries and bytes are durable (fsync'ed), with the run's
// fingerprint (model, index, queries, qrels, settings). A later `dgr mine` with the same fingerprint truncates
// the files to those sizes, re-reads the mined lines (counts and the run) and goes on with the next query: the
// output is byte-identical to an uninterrupted run (tests/mine_resume_test.sh). Another fingerprint is refused
// (remove OUT.partial or pass --force).
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
  // to do) and reads the corpus; nothing is written yet.
  MinedWriter(const std::string& out_dir, bool force, const MinedPassageSource& passages, int max_keys);
  ~MinedWriter();
  MinedWriter(const MinedWriter&) = delete;
  MinedWriter& operator=(const MinedWriter&) = delete;

  // Opens OUT.partial for `fingerprint_json` (a JSON object): continues it when its resume.json has the same
  // fingerprint, starts it afresh when there is none (or with `force`). Returns the number of queries already
  // mined (0 when fresh). ConfigError naming the differing keys when OUT.partial belongs to another run.
  size_t open(const std::string& fingerprint_json);
  // Adds the candidates.jsonl line of query `index` (0-based, in order, after the resumed ones): checked,
  // written to the outputs and counted. A candidate whose passage is not in the corpus is a DataError naming both.
  void add(size_t index, const std::string& line);
  // Makes everything added so far durable and records it in resume.json (Note [Resumable mining]).
  void checkpoint();
  const MinedCounts& counts() const;
  const std::string& partial_dir() const;

  // Writes run.trec and manifest.json — `provenance_json` (a JSON object: split, inputs, model, index,
  // retrieval) plus format, version, counts (with `ranks`, `seconds`, `queries_per_second`) and every file's
  // sha256 and size — and moves the directory to `out_dir`.
  void commit(const std::string& provenance_json, int ranks, double seconds, double queries_per_second);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dgr::data
