// `dgr evaluate` (metrics of a TREC run against qrels), `dgr report` (a table of several systems' runs on
// several splits, pooled too) and `dgr bm25` (the BM25 baseline run on a data set).
#include <filesystem>
#include <iostream>
#include <memory>

#include <fmt/format.h>

#include "common/files.h"

#include "common/error.h"
#include "common/log.h"
#include "launcher/commands.h"
#include "launcher/flags.h"
#include "retrieval/bm25.h"
#include "retrieval/metrics.h"
#include "data/readers.h"
#include "data/trec.h"

namespace fs = std::filesystem;

namespace dgr::launcher {
namespace {

struct EvaluateOptions {
  std::string run;
  std::vector<std::string> qrels;
  std::string corpus;  // optional: check the run's pids against it
  std::string per_query;  // optional: per-query metrics as TSV (retrieval::format_per_query_tsv)
};

struct ReportOptions {
  std::string data_dir = "data/debian-tiny";
  std::vector<std::string> systems;  // NAME=RUN, RUN may contain {split}
  std::vector<std::string> splits = {"dev", "test"};
  std::string out;                   // also write the table here (markdown)
};

struct Bm25CommandOptions {
  std::string data_dir = "data/debian-tiny";
  std::vector<std::string> splits = {"dev", "test"};
  std::string out;  // run file ("" = DATA/bm25.SPLIT.trec)
  double k1 = 0.9;
  double b = 0.4;
  int depth = 100;
};

int run_evaluate(const EvaluateOptions& opts, const World& world) {
  DGR_CHECK_AS(ConfigError, !opts.run.empty() && !opts.qrels.empty(), "dgr evaluate needs --run and --qrels");
  if (!world.is_root()) return 0;
  std::unique_ptr<data::Corpus> corpus;
  if (!opts.corpus.empty()) corpus = std::make_unique<data::Corpus>(data::read_corpus(opts.corpus));
  std::vector<data::Qrel> qrels;
  for (const auto& path : opts.qrels) {
    auto part = data::read_qrels(path, corpus.get(), nullptr);
    qrels.insert(qrels.end(), part.begin(), part.end());
  }
  auto run = data::read_trec_run(opts.run, corpus.get(), nullptr);
  auto evaluation = retrieval::evaluate(run, qrels);
  std::cout << opts.run << ": " << retrieval::format_metrics(evaluation) << "\n";
  if (!opts.per_query.empty()) {
    files::AtomicFile file(opts.per_query);
    file.write(retrieval::format_per_query_tsv(evaluation));
    file.commit();
  }
  if (evaluation.queries_missing_from_run > 0) {
    log::get("eval")->warn("{} of {} judged queries have no entry in {} (scored 0)",
                           evaluation.queries_missing_from_run, evaluation.num_queries, opts.run);
  }
  return 0;
}

// One row per (system, split), and per system the splits pooled (each split has few queries here).
int run_report(const ReportOptions& opts, const World& world) {
  DGR_CHECK_AS(ConfigError, !opts.systems.empty(), "dgr report needs at least one --system NAME=RUN");
  if (!world.is_root()) return 0;
  const fs::path data(opts.data_dir);
  auto corpus = data::read_corpus((data / "corpus.tsv").string());
  std::vector<std::vector<data::Qrel>> qrels;  // [split]
  for (const auto& split : opts.splits) {
    auto queries = data::read_queries((data / ("queries." + split + ".tsv")).string());
    qrels.push_back(data::read_qrels((data / ("qrels." + split + ".tsv")).string(), &corpus, &queries));
  }
  const retrieval::MetricsOptions metrics;
  const std::vector<std::string> columns = {"R@1", "R@5", "R@10", "R@20", "MRR@10"};
  std::string table = "| system | split | queries |";
  for (const auto& c : columns) table += " " + c + " |";
  table += "\n|---|---|---:|";
  for (size_t c = 0; c < columns.size(); ++c) table += "---:|";
  table += "\n";
  auto add_row = [&](const std::string& name, const std::string& split, const retrieval::Evaluation& e) {
    table += fmt::format("| {} | {} | {} |", name, split, e.num_queries);
    for (const auto& c : columns) table += fmt::format(" {:.3f} |", e.mean.at(c));
    table += "\n";
  };
  for (const auto& system : opts.systems) {
    const size_t eq = system.find('=');
    DGR_CHECK_AS(ConfigError, eq != std::string::npos && eq > 0 && eq + 1 < system.size(),
                 "--system '{}': expected NAME=RUN (RUN may contain {{split}}), e.g. BM25=data/bm25.{{split}}.trec", system);
    const std::string name = system.substr(0, eq), pattern = system.substr(eq + 1);
    std::vector<data::RunEntry> pooled_run;
    std::vector<data::Qrel> pooled_qrels;
    for (size_t s = 0; s < opts.splits.size(); ++s) {
      std::string path = pattern;
      for (size_t at; (at = path.find("{split}")) != std::string::npos;) path.replace(at, 7, opts.splits[s]);
      auto run = data::read_trec_run(path, &corpus, nullptr);
      add_row(name, opts.splits[s], retrieval::evaluate(run, qrels[s], metrics));
      pooled_run.insert(pooled_run.end(), run.begin(), run.end());
      pooled_qrels.insert(pooled_qrels.end(), qrels[s].begin(), qrels[s].end());
    }
    if (opts.splits.size() > 1) {
      std::string pooled_name;
      for (const auto& split : opts.splits) pooled_name += (pooled_name.empty() ? "" : "+") + split;
      add_row(name, pooled_name, retrieval::evaluate(pooled_run, pooled_qrels, metrics));
    }
  }
  std::cout << table << std::flush;
  if (!opts.out.empty()) {
    files::AtomicFile file(opts.out);
    file.write(table);
    file.commit();
  }
  return 0;
}

int run_bm25(const Bm25CommandOptions& opts, const World& world) {
  if (!world.is_root()) return 0;
  auto corpus = data::read_corpus((fs::path(opts.data_dir) / "corpus.tsv").string());
  retrieval::Bm25Options options;
  options.k1 = opts.k1;
  options.b = opts.b;
  options.depth = opts.depth;
  retrieval::Bm25Index index(corpus, options);
  DGR_CHECK_AS(ConfigError, opts.out.empty() || opts.splits.size() == 1,
               "--out names one run file: give one --split with it, or leave --out empty");
  for (const auto& split : opts.splits) {
    auto queries = data::read_queries((fs::path(opts.data_dir) / ("queries." + split + ".tsv")).string());
    auto qrels = data::read_qrels((fs::path(opts.data_dir) / ("qrels." + split + ".tsv")).string(), &corpus,
                                      &queries);
    auto run = index.run(queries);
    std::string out = opts.out.empty() ? (fs::path(opts.data_dir) / ("bm25." + split + ".trec")).string() : opts.out;
    data::write_trec_run(out, run);
    std::cout << "bm25 " << split << " (" << out << "): " << retrieval::format_metrics(retrieval::evaluate(run, qrels))
              << "\n";
  }
  return 0;
}

}  // namespace

void add_retrieval_commands(CLI::App& app, CommandTable& table) {
  auto eval = std::make_shared<EvaluateOptions>();
  CLI::App* evaluate = app.add_subcommand("evaluate", "Metrics of a TREC run against qrels: R@1/5/10/20/100, MRR@10, nDCG@10; "
                                                       "the run ordered as trec_eval orders it (by score, ties by pid "
                                                       "descending; the rank column ignored)");
  evaluate->add_option("--run", eval->run, "TREC run file (qid Q0 pid rank score tag)");
  evaluate->add_option("--qrels", eval->qrels, "Qrels: TREC or TSV; repeatable (e.g. dev and test pooled)");
  evaluate->add_option("--corpus", eval->corpus, "Corpus to check the run's passage ids against (optional)");
  evaluate->add_option("--per-query", eval->per_query, "Also write every evaluated query's metrics here (TSV: qid and "
                                                       "one column per metric)");
  table[evaluate] = [eval](const World& world) { return run_evaluate(*eval, world); };

  auto report = std::make_shared<ReportOptions>();
  CLI::App* report_cmd = app.add_subcommand("report", "A table of several systems' runs on several splits (and the "
                                                      "splits pooled): R@1/5/10/20, MRR@10");
  report_cmd->add_option("--data", report->data_dir, "Data set directory (corpus.tsv, queries/qrels.SPLIT.tsv)");
  report_cmd->add_option("--system", report->systems, "NAME=RUN, where RUN may contain {split}; repeatable, in row order");
  report_cmd->add_option("--split", report->splits, "Splits; repeatable");
  report_cmd->add_option("--out", report->out, "Also write the table (markdown) to this file");
  table[report_cmd] = [report](const World& world) { return run_report(*report, world); };

  auto bm25 = std::make_shared<Bm25CommandOptions>();
  CLI::App* bm25_cmd = app.add_subcommand("bm25", "BM25 baseline (Xapian): run the queries of a data set, write "
                                                  "TREC runs and print their metrics");
  bm25_cmd->add_option("--data", bm25->data_dir, "Data set directory (corpus.tsv, queries.SPLIT.tsv, qrels.SPLIT.tsv)");
  bm25_cmd->add_option("--split", bm25->splits, "Splits to run; repeatable")->check(CLI::IsMember({"train", "dev", "test"}));
  bm25_cmd->add_option("--out", bm25->out, "Run file for a single split ('' = DATA/bm25.SPLIT.trec)");
  bm25_cmd->add_option("--k1", bm25->k1, "BM25 k1")->check(at_least(0));
  bm25_cmd->add_option("--b", bm25->b, "BM25 b")->check(between(0, 1));
  bm25_cmd->add_option("--depth", bm25->depth, "Passages per query")->check(at_least(1));
  table[bm25_cmd] = [bm25](const World& world) { return run_bm25(*bm25, world); };
}

}  // namespace dgr::launcher
