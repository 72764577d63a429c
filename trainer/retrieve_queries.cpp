#include "trainer/retrieve_queries.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <type_traits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "retrieval/retriever.h"

namespace dgr::trainer {
namespace {

// Binary records: fixed-size fields copied as bytes (every rank of a job runs the same build).
template <typename T>
void append_field(std::string& out, const T& value) {
  static_assert(std::is_trivially_copyable_v<T>);
  out.append(reinterpret_cast<const char*>(&value), sizeof(value));
}

// Reads one field of `what` at `at` and advances it; DGR_CHECK when the bytes run out.
template <typename T>
T read_field(const std::string& bytes, size_t& at, const char* what) {
  T value;
  DGR_CHECK(at + sizeof(value) <= bytes.size(), "retrieval record: {} at byte {} runs past its {} bytes", what, at,
            bytes.size());
  std::memcpy(&value, bytes.data() + at, sizeof(value));
  at += sizeof(value);
  return value;
}

// Every rank's `seconds`, the largest on every rank (microseconds through an int64 allgather).
double slowest_seconds(comm::Communicator& control, double seconds) {
  std::vector<int64_t> all(static_cast<size_t>(control.size()));
  int64_t mine = static_cast<int64_t>(seconds * 1e6);
  control.allgather({&mine, 1, comm::DType::kInt64}, {all.data(), all.size(), comm::DType::kInt64});
  return static_cast<double>(*std::max_element(all.begin(), all.end())) / 1e6;
}

retrieval::RetrieverOptions retriever_options(const RetrievalSettings& settings, const retrieval::ViewLimits& limits) {
  retrieval::RetrieverOptions o;
  o.title_view = o.body_view = o.pq_view = false;
  for (const auto& name : settings.views) {
    switch (retrieval::parse_view(name)) {
      case retrieval::View::title: o.title_view = true; break;
      case retrieval::View::body: o.body_view = true; break;
      case retrieval::View::pq: o.pq_view = true; break;
    }
  }
  o.beam.beam_size = settings.beam;
  o.beam.partial_keys = settings.partial_keys;
  o.ngram_keys = settings.ngram_keys;
  o.unigram_keys = settings.unigram_keys;
  o.limits = limits;
  o.scoring.top_k = static_cast<size_t>(settings.top_k);
  return o;
}

}  // namespace

nlohmann::json retrieval_settings_json(const RetrievalSettings& s) {
  return {{"views", s.views}, {"beam", s.beam}, {"depth", s.top_k},
          {"keys", {{"title", s.partial_keys ? "every prefix of the beam history (--partial-keys)"
                                             : "complete titles (ending with @@)"},
                    {"pq", s.partial_keys ? "every prefix of the beam history (--partial-keys)"
                                          : "complete pseudo-queries (ending with @@)"},
                    {"body", "every prefix of the beam history"}}},
          {"ngram_keys", s.uses_ngram_keys()}, {"unigram_keys", s.uses_unigram_keys()}};
}

std::string describe_retrieval(const RetrievalSettings& s) {
  std::string views, kinds;
  for (const auto& v : s.views) {
    views += (views.empty() ? "" : ",") + v;
    const char* kind = v == "body"    ? "body prefixes"
                       : s.partial_keys ? (v == "title" ? "title prefixes" : "pseudo-query prefixes")
                       : v == "title"   ? "complete titles"
                                        : "complete pseudo-queries";
    kinds += (kinds.empty() ? "" : ", ") + std::string(kind);
  }
  return fmt::format("views {}, beam {}, depth {}; keys: {}; {}, {}", views, s.beam, s.top_k, kinds,
                     s.uses_ngram_keys() ? "query n-gram keys" : "no n-gram keys",
                     s.uses_unigram_keys() ? "unigram keys" : "no unigram keys");
}

void check_searched_views_trained(const RetrievalSettings& settings, const std::vector<std::string>& trained_views,
                                  const std::string& model) {
  if (trained_views.empty()) return;
  std::string trained;
  for (const auto& v : trained_views) trained += (trained.empty() ? "" : ",") + v;
  for (const auto& view : settings.views) {
    if (std::find(trained_views.begin(), trained_views.end(), view) != trained_views.end()) continue;
    const bool body = view == "body";
    throw ConfigError(fmt::format(
        "{} learnt to generate the views {} only, but this search uses the {} view{}: its keys would be scored "
        "under a view the model never learnt; search --views {} or train stage 1 with --views {},{}",
        model, trained, view, body ? " (and with it the query n-gram and unigram keys)" : "", trained, trained, view));
  }
}

std::vector<data::RunEntry> retrieve_queries(retrieval::Seq2SeqScorer& model, const retrieval::IndexDir& index,
                                                 const std::vector<data::Query>& queries,
                                                 const RetrievalSettings& settings,
                                                 const retrieval::ViewLimits& limits, comm::Communicator& control,
                                                 const std::string& tag, std::vector<std::string>* keys,
                                                 RetrievalStats* stats, const RetrieveResume* resume) {
  // One round: every rank's share at once. A query's record: per passage, best first,
  // [int32 doc][float64 score][uint64 length][its keys line, JSON (empty without `keys`)].
  const int queries_per_rank = resume != nullptr ? resume->queries_per_rank : static_cast<int>(std::max<size_t>(
      1, (queries.size() + static_cast<size_t>(control.size()) - 1) / static_cast<size_t>(control.size())));
  auto encode = [&](size_t q, const std::vector<int32_t>&, const std::vector<retrieval::RetrievedPassage>& passages) {
    std::string record;
    for (size_t r = 0; r < passages.size(); ++r) {
      const auto& p = passages[r];
      append_field(record, p.doc);
      append_field(record, p.score);
      std::string line;
      if (keys != nullptr) {
        nlohmann::json ks = nlohmann::json::array();
        for (const auto& m : p.keys) {
          ks.push_back({{"text", retrieval::key_text(m.key, index.tokenizer)}, {"tokens", m.key.tokens},
                        {"view", retrieval::view_name(m.key.view)}, {"origin", retrieval::key_origin_name(m.key.origin)},
                        {"count", m.key.count}, {"score", m.key.score}, {"weight", m.weight},
                        {"contribution", m.contribution}});
        }
        line = nlohmann::json{{"qid", queries[q].qid}, {"pid", index.pids[static_cast<size_t>(p.doc)]},
                              {"rank", r + 1}, {"score", p.score}, {"keys", ks}}.dump();
      }
      append_field(record, static_cast<uint64_t>(line.size()));
      record += line;
    }
    return record;
  };
  std::vector<data::RunEntry> run;
  if (keys != nullptr) keys->clear();
  auto consume = [&](size_t q, std::string record) {
    for (size_t at = 0, r = 1; at < record.size(); ++r) {
      const auto doc = read_field<int32_t>(record, at, "passage");
      const auto score = read_field<double>(record, at, "score");
      const auto length = read_field<uint64_t>(record, at, "keys length");
      DGR_CHECK(doc >= 0 && static_cast<size_t>(doc) < index.pids.size() && at + length <= record.size(),
                "retrieval record of query {}: passage {} of {} or keys of {} bytes at byte {} of {}", q, doc,
                index.pids.size(), length, at, record.size());
      run.push_back({queries[q].qid, index.pids[static_cast<size_t>(doc)], static_cast<int>(r), score, tag});
      if (keys != nullptr) keys->push_back(record.substr(at, length));
      at += length;
    }
  };
  RoundControl rounds;
  ConsumeRetrieved take = consume;
  if (resume != nullptr) {
    rounds.first_query = resume->first_query;
    rounds.after_round = resume->after_round;
    if (control.rank() == 0) {
      DGR_CHECK(resume->resumed != nullptr && resume->resumed->size() == resume->first_query,
                "retrieve_queries: {} resumed records for {} queries done", resume->resumed ? resume->resumed->size() : 0,
                resume->first_query);
      for (size_t q = 0; q < resume->first_query; ++q) consume(q, (*resume->resumed)[q]);
      take = [&](size_t q, std::string record) {
        if (resume->journal) resume->journal(record);
        consume(q, std::move(record));
      };
    }
  }
  RetrievalStats totals = retrieve_in_rounds(model, index, queries, settings, limits, control, queries_per_rank, encode,
                                             take, nullptr, rounds);
  if (stats != nullptr) *stats = totals;
  data::untie_scores(run);  // as written, so its metrics are the file's (data/trec.h, Note [Written scores])
  return run;
}

namespace {

// Rank 0: the gathered records of queries [begin, end), each [8-byte query index][8-byte length][bytes], to
// `consume` in query order.
void consume_round(const std::vector<std::string>& all, size_t begin, size_t end, const ConsumeRetrieved& consume) {
  std::vector<std::pair<uint64_t, std::string>> results;  // [result of the round] (query, bytes)
  for (const std::string& theirs : all) {
    for (size_t at = 0; at < theirs.size();) {
      const auto query = read_field<uint64_t>(theirs, at, "query index");
      const auto length = read_field<uint64_t>(theirs, at, "record length");
      DGR_CHECK(at + length <= theirs.size(), "retrieval round: record of query {} overruns the buffer", query);
      results.emplace_back(query, theirs.substr(at, length));
      at += length;
    }
  }
  std::sort(results.begin(), results.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  DGR_CHECK(results.size() == end - begin, "retrieval round [{}, {}): {} results gathered", begin, end, results.size());
  for (size_t i = 0; i < results.size(); ++i) {
    DGR_CHECK(results[i].first == begin + i, "retrieval round [{}, {}): query {} is missing", begin, end, begin + i);
    consume(results[i].first, std::move(results[i].second));
  }
}

}  // namespace

RetrievalStats retrieve_in_rounds(retrieval::Seq2SeqScorer& model, const retrieval::IndexDir& index,
                                  const std::vector<data::Query>& queries, const RetrievalSettings& settings,
                                  const retrieval::ViewLimits& limits, comm::Communicator& control,
                                  int queries_per_rank, const EncodeRetrieved& encode, const ConsumeRetrieved& consume,
                                  const std::vector<std::vector<int32_t>>* also_docs, const RoundControl& rounds) {
  DGR_CHECK(also_docs == nullptr || also_docs->size() == queries.size(), "also_docs: {} lists for {} queries",
            also_docs == nullptr ? 0 : also_docs->size(), queries.size());
  DGR_CHECK_AS(ConfigError, queries_per_rank > 0, "queries per rank and round must be positive, got {}", queries_per_rank);
  const auto start = std::chrono::steady_clock::now();
  retrieval::Retriever retriever(index.fm, index.tokenizer, retriever_options(settings, limits));
  const size_t ranks = static_cast<size_t>(control.size());
  const bool is_root = control.rank() == 0;
  const size_t round_size = static_cast<size_t>(queries_per_rank) * ranks;
  // Every rank runs the same number of rounds (the gathers are collective), some with no query of its own.
  RetrievalStats stats;
  DGR_CHECK(rounds.first_query <= queries.size(), "retrieval resumes at query {} of {}", rounds.first_query, queries.size());
  for (size_t begin = rounds.first_query; begin < queries.size() && !stats.stopped; begin += round_size) {
    const size_t end = std::min(queries.size(), begin + round_size);
    // This rank's results of the round, each as [8-byte query index][8-byte length][bytes].
    std::string blob;
    for (size_t q = begin + static_cast<size_t>(control.rank()); q < end; q += ranks) {
      auto tokens = index.tokenizer.encode(queries[q].text);
      auto passages = also_docs == nullptr ? retriever.retrieve(model, tokens)
                                           : retriever.retrieve(model, tokens, (*also_docs)[q]);
      std::string bytes = encode(q, tokens, passages);
      append_field(blob, static_cast<uint64_t>(q));
      append_field(blob, static_cast<uint64_t>(bytes.size()));
      blob += bytes;
    }
    std::vector<std::string> all = control.gather_bytes(blob, 0);  // [rank] on rank 0
    stats.queries += end - begin;
    if (is_root) consume_round(all, begin, end, consume);
    if (rounds.after_round) stats.stopped = rounds.after_round();
  }
  stats.seconds = slowest_seconds(control, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return stats;
}

}  // namespace dgr::trainer
