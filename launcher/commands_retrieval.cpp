// `dgr evaluate` (metrics of a TREC run against qrels) and `dgr bm25` (the BM25 baseline run on a data set);
// `dgr report` is registered between them (commands_report.cpp).
#include <filesystem>
#include <iostream>
#include <memory>

#include <fmt/format.h>

#include "common/files.h"

#include "common/error.h"
#include "common/log.h"
#include "launcher/commands.h"
#include "launcher/flags.h"
#include "retrieval/answers.h"
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
  std::vector<int> recall_at = retrieval::MetricsOptions{}.recall_at;  // e.g. add 1000 for MS MARCO's R@1000
  std::string answers;  // answers.SPLIT.jsonl: answer-string accuracy instead of qrels (retrieval/answers.h)
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
  if (!opts.answers.empty()) {  // answer-string accuracy (DPR's NQ / TriviaQA evaluation)
    DGR_CHECK_AS(ConfigError, !opts.run.empty() && !opts.corpus.empty() && opts.qrels.empty(),
                 "dgr evaluate --answers needs --run and --corpus (the passages' text), and no --qrels");
    if (!world.is_root()) return 0;
    const data::Corpus corpus = data::read_corpus(opts.corpus);
    const auto run = data::read_trec_run(opts.run, &corpus, nullptr);
    const auto acc = retrieval::answer_accuracy(run, opts.answers, corpus);
    std::string line;
    for (const auto& [k, value] : acc.at) line += fmt::format("Acc@{} {:.4f}  ", k, value);
    std::cout << opts.run << ": " << line << "(questions " << acc.questions << ", by answer string)\n";
    if (acc.questions_missing_from_run > 0)
      log::get("eval")->warn("{} of {} questions have no entry in {} (scored 0)", acc.questions_missing_from_run,
                             acc.questions, opts.run);
    return 0;
  }
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
  retrieval::MetricsOptions metrics;
  metrics.recall_at = opts.recall_at;
  auto evaluation = retrieval::evaluate(run, qrels, metrics);
  std::cout << opts.run << ": " << retrieval::format_metrics(evaluation, metrics) << "\n";
  if (!opts.per_query.empty()) {
    files::AtomicFile file(opts.per_query);
    file.write(retrieval::format_per_query_tsv(evaluation, metrics));
    file.commit();
  }
  if (evaluation.queries_missing_from_run > 0) {
    log::get("eval")->warn("{} of {} judged queries have no entry in {} (scored 0)",
                           evaluation.queries_missing_from_run, evaluation.num_queries, opts.run);
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
  evaluate->add_option("--answers", eval->answers, "Answer strings (answers.SPLIT.jsonl of `dgr data dpr-queries`): "
                       "top-k accuracy by answer string (DPR's NQ/TriviaQA evaluation) instead of qrels; needs --corpus");
  evaluate->add_option("--recall-at", eval->recall_at, "Recall cut-offs (e.g. 1,5,10,20,100,1000 for MS MARCO's R@1000; "
                       "the run must be that deep: dgr retrieve --depth, dgr bm25 --depth)")
      ->delimiter(',')->check(CLI::PositiveNumber);
  evaluate->add_option("--per-query", eval->per_query, "Also write every evaluated query's metrics here (TSV: qid and "
                                                       "one column per metric)");
  table[evaluate] = [eval](const World& world) { return run_evaluate(*eval, world); };

  add_report_command(app, table);  // `dgr report` (commands_report.cpp), listed after evaluate

  auto bm25 = std::make_shared<Bm25CommandOptions>();
  CLI::App* bm25_cmd = app.add_subcommand("bm25", "BM25 baseline (Xapian): run the queries of a data set, write "
                                                  "TREC runs and print their metrics");
  bm25_cmd->add_option("--data", bm25->data_dir, "Data set directory (corpus.tsv, queries.SPLIT.tsv, qrels.SPLIT.tsv)");
  bm25_cmd->add_option("--split", bm25->splits, "Splits to run (DATA/queries.SPLIT.tsv with its qrels); repeatable");
  bm25_cmd->add_option("--out", bm25->out, "Run file for a single split ('' = DATA/bm25.SPLIT.trec)");
  bm25_cmd->add_option("--k1", bm25->k1, "BM25 k1")->check(at_least(0));
  bm25_cmd->add_option("--b", bm25->b, "BM25 b")->check(between(0, 1));
  bm25_cmd->add_option("--depth", bm25->depth, "Passages per query")->check(at_least(1));
  table[bm25_cmd] = [bm25](const World& world) { return run_bm25(*bm25, world); };
}

}  // namespace dgr::launcher
