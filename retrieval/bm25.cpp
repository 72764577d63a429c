#include "retrieval/bm25.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <numeric>

#include <xapian.h>

#include "common/error.h"
#include "common/files.h"

namespace dgr::retrieval {

namespace {

[[noreturn]] void rethrow_xapian(const Xapian::Error& e, const char* what) {
  throw Error(std::string("Xapian error while ") + what + ": " + e.get_type() + ": " + e.get_msg() +
              (e.get_context().empty() ? "" : " (" + e.get_context() + ")"));
}

Xapian::TermGenerator make_term_generator() {
  Xapian::TermGenerator generator;
  generator.set_stemming_strategy(Xapian::TermGenerator::STEM_NONE);
  return generator;
}

}  // namespace

struct Bm25Index::Impl {
  Xapian::WritableDatabase db;
};

Bm25Index::Bm25Index(const data::Corpus& corpus, Bm25Options options) : options_(options) {
  DGR_CHECK(options_.k1 >= 0, "BM25 k1 must be >= 0, got {}", options_.k1);
  DGR_CHECK(options_.b >= 0 && options_.b <= 1, "BM25 b must be in [0, 1], got {}", options_.b);
  DGR_CHECK(options_.depth > 0, "BM25 depth must be > 0, got {}", options_.depth);
  // Documents are added in pid order so that Xapian's tie-break (docid ascending) is pid ascending.
  std::vector<size_t> order(corpus.passages.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return corpus.passages[a].pid < corpus.passages[b].pid;
  });
  impl_ = std::make_unique<Impl>();
  try {
    impl_->db = Xapian::WritableDatabase(std::string(), Xapian::DB_BACKEND_INMEMORY);
    Xapian::TermGenerator generator = make_term_generator();
    pids_.reserve(order.size());
    for (size_t index : order) {
      const data::Passage& passage = corpus.passages[index];
      Xapian::Document document;
      generator.set_document(document);
      if (!passage.title.empty()) {
        generator.index_text(passage.title);
        generator.increase_termpos();
      }
      generator.index_text(passage.text);
      impl_->db.add_document(document);
      pids_.push_back(passage.pid);
    }
    impl_->db.commit();
  } catch (const Xapian::Error& e) {
    rethrow_xapian(e, "building the BM25 index");
  }
}

Bm25Index::~Bm25Index() = default;
Bm25Index::Bm25Index(Bm25Index&&) noexcept = default;
Bm25Index& Bm25Index::operator=(Bm25Index&&) noexcept = default;

std::vector<std::pair<std::string, double>> Bm25Index::search(const std::string& query_text) const {
  std::vector<std::pair<std::string, double>> results;
  try {
    // The query's terms, tokenized exactly like the passages, with their within-query frequency.
    Xapian::Document scratch;
    Xapian::TermGenerator generator = make_term_generator();
    generator.set_document(scratch);
    generator.index_text(query_text);
    std::vector<Xapian::Query> terms;
    for (auto it = scratch.termlist_begin(); it != scratch.termlist_end(); ++it) {
      terms.emplace_back(*it, it.get_wdf());
    }
    if (terms.empty() || pids_.empty()) return results;
    Xapian::Query query(Xapian::Query::OP_OR, terms.begin(), terms.end());

    Xapian::Enquire enquire(impl_->db);
    enquire.set_query(query);
    enquire.set_weighting_scheme(Xapian::BM25Weight(options_.k1, 0, 1, options_.b, 0.5));
    enquire.set_docid_order(Xapian::Enquire::ASCENDING);
    Xapian::MSet mset = enquire.get_mset(0, static_cast<Xapian::doccount>(options_.depth));
    results.reserve(mset.size());
    for (auto it = mset.begin(); it != mset.end(); ++it) {
      results.emplace_back(pids_.at(*it - 1), it.get_weight());
    }
  } catch (const Xapian::Error& e) {
    rethrow_xapian(e, "searching the BM25 index");
  }
  // Xapian already orders by weight then docid (= pid order); made explicit so it never depends on it.
  std::stable_sort(results.begin(), results.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  return results;
}

std::vector<data::RunEntry> Bm25Index::run(const std::vector<data::Query>& queries) const {
  std::vector<data::RunEntry> entries;
  for (const data::Query& query : queries) {
    int rank = 0;
    for (auto& [pid, score] : search(query.text)) {
      entries.push_back(data::RunEntry{query.qid, std::move(pid), ++rank, score, "bm25"});
    }
  }
  data::untie_scores(entries);  // as written, so its metrics are the file's (data/trec.h, Note [Written scores])
  return entries;
}
}  // namespace dgr::retrieval
