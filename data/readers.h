// Readers for the retrieval inputs: corpus (TSV or JSONL), queries (TSV), qrels (TREC or TSV) and TREC
// runs. Plain or .gz. Every problem is a dgr::DataError with a one-line "PATH:LINE: ..." message.
#pragma once

#include <cstddef>
#include <string>
#include <unordered_map>
#include <vector>

namespace dgr::data {

struct Passage {
  std::string pid;
  std::string title;  // may be empty
  std::string text;
  std::vector<std::string> pseudo_queries;
};

struct Corpus {
  std::vector<Passage> passages;                     // [passage], file order
  std::unordered_map<std::string, size_t> index_of;  // pid -> index in passages
  // True when a passage with id `pid` was read.
  bool contains(const std::string& pid) const;
};

// Reads a corpus, format chosen by extension (.tsv, .jsonl, each optionally followed by .gz):
//   TSV   `pid<TAB>title<TAB>text[<TAB>pq1 ||| pq2 ...]`; an optional header whose first field is "pid"
//         is skipped;
//   JSONL `{"pid": ..., "title": ..., "text": ..., "pseudo_queries": [...]}` per line ("id" is accepted
//         for "pid"; "title" and "pseudo_queries" may be left out; other keys are ignored).
// pid and text must be non-empty, ids must not contain whitespace and must be unique. Throws DataError on
// any problem (including a file with no passages).
Corpus read_corpus(const std::string& path);

struct Query {
  std::string qid;
  std::string text;
};

// Reads TSV queries `qid<TAB>text` (an optional header whose first field is "qid" is skipped); qids are
// unique, non-empty and free of whitespace, texts non-empty. Throws DataError on any problem.
std::vector<Query> read_queries(const std::string& path);

struct Qrel {
  std::string qid;
  std::string pid;
  int grade = 1;
};

// Reads qrels, either TREC `qid 0 pid grade` (whitespace separated, 4 fields) or TSV
// `qid<TAB>pid[<TAB>grade]` (grade defaults to 1); an optional header whose first field is "qid" is
// skipped. The format is detected from the first data line and every line must follow it. (qid, pid)
// pairs are unique. When `corpus` / `queries` are non-null every pid / qid must be in them. Throws
// DataError on any problem.
std::vector<Qrel> read_qrels(const std::string& path, const Corpus* corpus,
                             const std::vector<Query>* queries);

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

}  // namespace dgr::data
