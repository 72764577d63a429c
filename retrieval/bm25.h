// BM25 baseline: an in-memory Xapian index of every passage's title + text (lower-cased, no stemming),
// ranked with Okapi BM25 (Xapian::BM25Weight), and a writer for TREC run files.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "data/readers.h"
#include "data/trec.h"

namespace dgr::retrieval {

struct Bm25Options {
  double k1 = 0.9;
  double b = 0.4;
  int depth = 100;  // passages returned per query
};

// Note [BM25 scoring]: Xapian::BM25Weight(k1, k2 = 0, k3 = 1, b, min_normlen = 0.5), i.e. per query term
//   idf' * (k1 + 1) * wdf / (k1 * ((1 - b) + b * max(doclen / avgdoclen, 0.5)) + wdf)
// with idf' = log(r), r = (N - n + 0.5) / (n + 0.5), and r replaced by r / 2 + 1 when r < 2 (Xapian's
// clamp that keeps idf positive); doclen counts every indexed term of title + text. The query is the
// bag of its terms (OR; a term repeated in the query weighs 2 wqf / (1 + wqf)), tokenized exactly like
// the passages, so any text is accepted. Ties are broken by pid ascending.
class Bm25Index {
 public:
  // Indexes title + text of every passage. Throws dgr::Error on any Xapian failure.
  explicit Bm25Index(const data::Corpus& corpus, Bm25Options options = {});
  ~Bm25Index();
  Bm25Index(Bm25Index&&) noexcept;
  Bm25Index& operator=(Bm25Index&&) noexcept;
  Bm25Index(const Bm25Index&) = delete;
  Bm25Index& operator=(const Bm25Index&) = delete;

  // Top `depth` passages for a query text as (pid, score), score descending, ties by pid ascending. A query
  // with no indexable term (empty, punctuation only) gives an empty result.
  std::vector<std::pair<std::string, double>> search(const std::string& query_text) const;

  // A TREC run for many queries: ranks 1..(at most depth) per query, tag "bm25", in query order.
  std::vector<data::RunEntry> run(const std::vector<data::Query>& queries) const;

  const Bm25Options& options() const { return options_; }
  size_t size() const { return pids_.size(); }

 private:
  struct Impl;
  Bm25Options options_;
  std::vector<std::string> pids_;  // [docid - 1], sorted by pid
  std::unique_ptr<Impl> impl_;
};

}  // namespace dgr::retrieval
