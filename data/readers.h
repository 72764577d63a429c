// Readers for the retrieval inputs: corpus (TSV or JSONL), queries (TSV), qrels (TREC or TSV); TREC runs
// are in data/trec.h. Plain or .gz. Every problem is a dgr::DataError with a one-line "PATH:LINE: ..." message.
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
//   TSV   `pid<TAB>title<TAB>text[<TAB>pq1 ||| pq2 ...]`, or `pid<TAB>text` without titles (MS MARCO's
//         collection.tsv); an optional header whose first field is "pid" declares the columns (2, 3, or 4
//         with the pseudo-queries) and every line must have exactly that many (Note [Trust the header] in
//         readers.cpp); without a header a first line of 2 fields makes every line 2, else a line has 3 or 4;
//         the header `id<TAB>text<TAB>title` is DPR's psgs_w100.tsv (that column order, csv-quoted fields);
//   JSONL `{"pid": ..., "title": ..., "text": ..., "pseudo_queries": [...]}` per line ("id" is accepted
//         for "pid" and "contents" for "text", as pyserini writes them; "title" and "pseudo_queries" may be
//         left out; other keys are ignored).
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

}  // namespace dgr::data
