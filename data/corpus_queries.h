// Distillation queries made from the corpus itself (`dgr data corpus-queries`): no labels needed. For each
// drawn passage one query, its source passage the only positive; stage 2 mines, teaches and trains on them
// like on any split (issue 19, Build 1d; docs/distillation.md).
#pragma once

#include <cstdint>
#include <string>

namespace dgr::data {

struct CorpusQueryOptions {
  std::string data_dir;              // reads corpus.tsv there, writes queries.SPLIT.tsv and qrels.SPLIT.tsv beside it
  std::string split = "corpus";
  size_t count = 500;                // queries to make (fewer when fewer passages qualify)
  std::string kind = "keywords";     // "keywords" or "sentence"
  size_t words = 4;                  // keywords: words per query
  size_t min_sentence_words = 4;     // sentence: the shortest and longest sentence taken
  size_t max_sentence_words = 20;
  uint64_t seed = 1;
  bool force = false;                // replace a split that exists
};

struct CorpusQueryReport {
  size_t queries = 0;
  size_t passages = 0;       // in the corpus
  size_t passages_tried = 0; // drawn in hash order until `count` qualified
};

// Orders the passages by MD5("seed:pid") and makes a query from each in turn until `count` are made:
//  - keywords: `words` distinct words of the body (runs of 3+ letters or digits, not all digits, not an English
//    function word, not a word of the title), drawn by MD5("seed:pid:word") and written in body order;
//  - sentence: one body sentence (split at . ; : ! ? followed by a space) of min..max words, drawn by hash.
// A passage with too few such words, or no such sentence, is skipped. The query id is "c:" + pid, its one
// judgement the passage. Throws ConfigError on bad options or an existing split without `force`; DataError on
// bad input. Writes nothing unless both files can be written (each is renamed into place only when complete).
CorpusQueryReport make_corpus_queries(const CorpusQueryOptions& options);

}  // namespace dgr::data
