#include "data/query_split.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/files.h"
#include "data/readers.h"

namespace fs = std::filesystem;

namespace dgr::data {

QuerySplitReport split_queries(const QuerySplitOptions& o) {
  const fs::path dir(o.data_dir);
  auto path = [&](const char* kind, const std::string& split) { return (dir / fmt::format("{}.{}.tsv", kind, split)).string(); };
  DGR_CHECK_AS(ConfigError, o.first != o.second && o.first != o.from && o.second != o.from,
               "dgr data split: --from {}, --first {} and --second {} must be three different names", o.from, o.first,
               o.second);
  DGR_CHECK_AS(ConfigError, o.fraction > 0 && o.fraction < 1, "dgr data split: --fraction {} must be more than 0 and less than 1",
               o.fraction);
  if (!o.force) {
    for (const auto& split : {o.first, o.second})
      for (const char* kind : {"queries", "qrels"})
        DGR_CHECK_AS(ConfigError, !fs::exists(path(kind, split)),
                     "{}: exists (give --force to replace it, or other names with --first/--second)", path(kind, split));
  }
  const Corpus corpus = read_corpus((dir / "corpus.tsv").string());
  const std::vector<Query> queries = read_queries(path("queries", o.from));
  const std::vector<Qrel> qrels = read_qrels(path("qrels", o.from), &corpus, &queries);

  std::vector<std::pair<std::string, size_t>> order;  // (MD5 of "seed:qid", position)
  for (size_t i = 0; i < queries.size(); ++i)
    order.emplace_back(files::md5_hex(fmt::format("{}:{}", o.seed, queries[i].qid)), i);
  std::sort(order.begin(), order.end());
  const auto drawn = static_cast<size_t>(std::llround(o.fraction * static_cast<double>(queries.size())));
  DGR_CHECK_AS(ConfigError, drawn > 0 && drawn < queries.size(),
               "dgr data split: --fraction {} of the {} queries of {} leaves a part empty (choose a fraction between "
               "{:.3f} and {:.3f})", o.fraction, queries.size(), path("queries", o.from), 0.5 / static_cast<double>(queries.size()),
               1 - 0.5 / static_cast<double>(queries.size()));
  std::unordered_set<std::string> second;
  for (size_t i = 0; i < drawn; ++i) second.insert(queries[order[i].second].qid);

  QuerySplitReport report;
  std::vector<std::unique_ptr<files::AtomicFile>> outputs;
  for (const auto& [split, in_second] : {std::pair{o.first, false}, std::pair{o.second, true}}) {
    std::string q = "qid\ttext\n", r = "qid\tpid\tgrade\n";
    size_t nq = 0, nr = 0;
    for (const auto& query : queries) {
      if ((second.count(query.qid) != 0) != in_second) continue;
      q += fmt::format("{}\t{}\n", query.qid, query.text);
      ++nq;
    }
    for (const auto& qrel : qrels) {
      if ((second.count(qrel.qid) != 0) != in_second) continue;
      r += fmt::format("{}\t{}\t{}\n", qrel.qid, qrel.pid, qrel.grade);
      ++nr;
    }
    (in_second ? report.second_queries : report.first_queries) = nq;
    (in_second ? report.second_qrels : report.first_qrels) = nr;
    outputs.push_back(std::make_unique<files::AtomicFile>(path("queries", split)));
    outputs.back()->write(q);
    outputs.push_back(std::make_unique<files::AtomicFile>(path("qrels", split)));
    outputs.back()->write(r);
  }
  for (auto& f : outputs) f->commit();
  return report;
}

}  // namespace dgr::data
