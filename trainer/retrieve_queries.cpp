#include "trainer/retrieve_queries.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "retrieval/retriever.h"

namespace dgr::trainer {
namespace {

// Rank 0 receives every rank's bytes, concatenated in rank order.
std::string gather_to_root(const std::string& mine, const World& world) {
  if (world.size() == 1) return mine;
  int length = static_cast<int>(mine.size());
  std::vector<int> lengths(static_cast<size_t>(world.size())), displs(static_cast<size_t>(world.size()));
  DGR_MPI_CHECK(MPI_Gather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, 0, MPI_COMM_WORLD));
  std::string all;
  if (world.is_root()) {
    int64_t total = 0;
    for (int r = 0; r < world.size(); ++r) {
      displs[static_cast<size_t>(r)] = static_cast<int>(total);
      total += lengths[static_cast<size_t>(r)];
    }
    DGR_CHECK(total < INT32_MAX, "retrieval output of {} bytes is too large to gather", total);
    all.resize(static_cast<size_t>(total));
  }
  DGR_MPI_CHECK(MPI_Gatherv(mine.data(), length, MPI_CHAR, all.data(), lengths.data(), displs.data(), MPI_CHAR, 0,
                            MPI_COMM_WORLD));
  return all;
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
  o.ngram_keys = settings.ngram_keys;
  o.unigram_keys = settings.unigram_keys;
  o.limits = limits;
  o.scoring.top_k = static_cast<size_t>(settings.top_k);
  o.scoring.report_overlapped = settings.overlapped_keys;
  return o;
}

}  // namespace

std::vector<data::RunEntry> retrieve_queries(retrieval::Seq2SeqScorer& model, const retrieval::IndexDir& index,
                                                 const std::vector<data::Query>& queries,
                                                 const RetrievalSettings& settings,
                                                 const retrieval::ViewLimits& limits, const World& world,
                                                 const std::string& tag, std::vector<std::string>* keys,
                                                 RetrievalStats* stats) {
  const auto start = std::chrono::steady_clock::now();
  retrieval::Retriever retriever(index.fm, index.tokenizer, retriever_options(settings, limits));
  // Round-robin dealing: neighbouring queries (often similar in length) spread over the ranks.
  std::string run_blob, keys_blob;
  for (size_t q = static_cast<size_t>(world.rank()); q < queries.size(); q += static_cast<size_t>(world.size())) {
    auto tokens = index.tokenizer.encode(queries[q].text);
    auto passages = retriever.retrieve(model, tokens);
    for (size_t r = 0; r < passages.size(); ++r) {
      const auto& p = passages[r];
      run_blob += fmt::format("{}\t{}\t{}\t{:.6f}\n", q, p.doc, r + 1, p.score);
      if (keys != nullptr) {
        nlohmann::json ks = nlohmann::json::array();
        for (const auto& m : p.keys) {
          ks.push_back({{"text", retrieval::key_text(m.key, index.tokenizer)}, {"tokens", m.key.tokens},
                        {"view", retrieval::view_name(m.key.view)}, {"origin", retrieval::key_origin_name(m.key.origin)},
                        {"count", m.key.count}, {"score", m.key.score}, {"weight", m.weight},
                        {"contribution", m.contribution}});
        }
        nlohmann::json line = {{"qid", queries[q].qid}, {"pid", index.pids[static_cast<size_t>(p.doc)]},
                               {"rank", r + 1}, {"score", p.score}, {"keys", ks}};
        keys_blob += fmt::format("{}\t{}\t{}\n", q, r + 1, line.dump());
      }
    }
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), slowest = seconds;
  if (world.size() > 1) DGR_MPI_CHECK(MPI_Allreduce(&seconds, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
  if (stats != nullptr) {
    stats->queries = queries.size();
    stats->seconds = slowest;
  }
  std::string all_runs = gather_to_root(run_blob, world);
  std::string all_keys = keys != nullptr ? gather_to_root(keys_blob, world) : std::string();
  std::vector<data::RunEntry> run;
  if (!world.is_root()) return run;
  struct Row { size_t query; int rank; data::RunEntry entry; };
  std::vector<Row> rows;
  std::istringstream in(all_runs);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    size_t q = 0; int32_t doc = 0; int r = 0; double score = 0;
    fields >> q >> doc >> r >> score;
    rows.push_back({q, r, {queries[q].qid, index.pids[static_cast<size_t>(doc)], r, score, tag}});
  }
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
    return a.query != b.query ? a.query < b.query : a.rank < b.rank;
  });
  run.reserve(rows.size());
  for (auto& row : rows) run.push_back(std::move(row.entry));
  if (keys != nullptr) {
    std::vector<std::tuple<size_t, int, std::string>> key_rows;
    std::istringstream kin(all_keys);
    while (std::getline(kin, line)) {
      size_t a = line.find('\t'), b = line.find('\t', a + 1);
      key_rows.emplace_back(std::stoull(line.substr(0, a)), std::stoi(line.substr(a + 1, b - a - 1)), line.substr(b + 1));
    }
    std::sort(key_rows.begin(), key_rows.end());
    keys->clear();
    for (auto& [q, r, text] : key_rows) keys->push_back(std::move(text));
  }
  return run;
}

RetrievalStats retrieve_in_rounds(retrieval::Seq2SeqScorer& model, const retrieval::IndexDir& index,
                                  const std::vector<data::Query>& queries, const RetrievalSettings& settings,
                                  const retrieval::ViewLimits& limits, const World& world, int queries_per_rank,
                                  const EncodeRetrieved& encode, const ConsumeRetrieved& consume) {
  DGR_CHECK_AS(ConfigError, queries_per_rank > 0, "queries per rank and round must be positive, got {}", queries_per_rank);
  const auto start = std::chrono::steady_clock::now();
  retrieval::Retriever retriever(index.fm, index.tokenizer, retriever_options(settings, limits));
  const size_t ranks = static_cast<size_t>(world.size());
  const size_t round_size = static_cast<size_t>(queries_per_rank) * ranks;
  // Every rank runs the same number of rounds (the gathers are collective), some with no query of its own.
  for (size_t begin = 0; begin < queries.size(); begin += round_size) {
    const size_t end = std::min(queries.size(), begin + round_size);
    // This rank's results of the round, each as [8-byte query index][8-byte length][bytes].
    std::string blob;
    for (size_t q = begin + static_cast<size_t>(world.rank()); q < end; q += ranks) {
      auto tokens = index.tokenizer.encode(queries[q].text);
      auto passages = retriever.retrieve(model, tokens);
      std::string bytes = encode(q, tokens, passages);
      uint64_t header[2] = {q, bytes.size()};
      blob.append(reinterpret_cast<const char*>(header), sizeof(header));
      blob += bytes;
    }
    std::string all = gather_to_root(blob, world);
    if (!world.is_root()) continue;
    std::vector<std::pair<uint64_t, std::string>> results;  // [result of the round] (query, bytes)
    for (size_t at = 0; at < all.size();) {
      uint64_t header[2];
      DGR_CHECK(at + sizeof(header) <= all.size(), "retrieval round: truncated record at byte {}", at);
      std::memcpy(header, all.data() + at, sizeof(header));
      at += sizeof(header);
      DGR_CHECK(at + header[1] <= all.size(), "retrieval round: record of query {} overruns the buffer", header[0]);
      results.emplace_back(header[0], all.substr(at, header[1]));
      at += header[1];
    }
    std::sort(results.begin(), results.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    DGR_CHECK(results.size() == end - begin, "retrieval round [{}, {}): {} results gathered", begin, end, results.size());
    for (size_t i = 0; i < results.size(); ++i) {
      DGR_CHECK(results[i].first == begin + i, "retrieval round [{}, {}): query {} is missing", begin, end, begin + i);
      consume(results[i].first, std::move(results[i].second));
    }
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), slowest = seconds;
  if (world.size() > 1) DGR_MPI_CHECK(MPI_Allreduce(&seconds, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
  RetrievalStats stats;
  stats.queries = queries.size();
  stats.seconds = slowest;
  return stats;
}

}  // namespace dgr::trainer
