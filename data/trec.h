// TREC runs (`qid Q0 pid rank score tag`), read with strict checks and written, in one place: every run dgr
// reads (teachers, `dgr evaluate`) and writes (BM25, retrieval, mining, teachers) goes through here.
#pragma once

#include <string>
#include <vector>

namespace dgr::data {

struct Corpus;
struct Query;

struct RunEntry {
  std::string qid;
  std::string pid;
  int rank = 0;
  double score = 0;
  std::string tag;
};

// Reads a TREC run `qid Q0 pid rank score tag` (whitespace separated, exactly 6 fields; the second field
// may be any token), in file order. Ranks are positive and unique within a qid, scores finite, and
// sorted by rank the scores of a qid never increase; (qid, pid) pairs are unique. When `corpus` /
// `queries` are non-null every pid / qid must be in them. Throws DataError on any problem.
std::vector<RunEntry> read_trec_run(const std::string& path, const Corpus* corpus,
                                    const std::vector<Query>* queries);

// Writes `run` as a TREC run, one line per entry in the given order, scores with 6 decimals (an empty tag
// is written as "bm25"); atomically: `path` appears complete or not at all.
void write_trec_run(const std::string& path, const std::vector<RunEntry>& run);

}  // namespace dgr::data
