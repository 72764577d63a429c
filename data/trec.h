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

// Note [Written scores]: a run dgr writes has no tied scores, so every tool reads the order dgr meant.
// Scores are written with 6 decimals and trec_eval reads them into a 32-bit float, where it breaks ties
// by pid in reverse. So within a query, in the given (rank) order, an entry whose written score, read as
// a float, is not below the previous entry's is written as the largest 6-decimal number that is:
// 1e-6 below for |score| < 16, about one float step (1.2e-7 of the score, 2^-23) above. The order and
// every other score stay as they are; docs/evaluation.md.

// Applies Note [Written scores] to `run` in place: the scores of each query, taken in `run`'s order,
// become strictly decreasing as 6-decimal numbers read as floats. Idempotent. Throws Error when the
// ranks of a query are not increasing in `run`'s order or its scores increase (a caller's bug).
void untie_scores(std::vector<RunEntry>& run);

// Writes `run` as a TREC run, one line per entry in the given order (each query's entries by rank),
// scores with 6 decimals and untied (Note [Written scores]); an empty tag is written as "bm25";
// atomically: `path` appears complete or not at all.
void write_trec_run(const std::string& path, const std::vector<RunEntry>& run);

}  // namespace dgr::data
