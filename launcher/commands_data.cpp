// `dgr data ...`: build the embedded Debian data set, and validate any data set on disk.
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "launcher/commands.h"
#include "launcher/flags.h"
#include "data/corpus_queries.h"
#include "data/dpr.h"
#include "data/debian_dataset.h"
#include "data/query_split.h"
#include "data/readers.h"
#include "data/trec.h"

namespace fs = std::filesystem;

namespace dgr::launcher {
namespace {

struct CheckOptions {
  std::string data_dir;                 // a dgr data set directory (corpus.tsv, queries/qrels.SPLIT.tsv)
  std::string corpus;
  std::vector<std::string> queries;
  std::vector<std::string> qrels;
  std::vector<std::string> runs;
};

int run_build_debian(const data::DebianDataConfig& cfg, const World& world) {
  // Made before rank 0's work (making it is collective): the other ranks wait for that work in its barrier,
  // which has a deadline (comm::kControlTimeoutMs) and names a rank that does not arrive.
  auto control = comm::make_host_communicator(world);
  int rc = 0;
  std::string report;
  if (world.is_root()) {
    report = data::format_report(data::build_debian_dataset(cfg));
    std::cout << report << std::flush;
  }
  control->barrier();
  return rc;
}

// A data set directory's manifest.json (from `dgr data build-debian`, or a pinned set under datasets/) lists
// the SHA-256 of every file: each must match, so that figures are reported on exactly the data they name.
void check_manifest(const std::string& data_dir) {
  const fs::path manifest_path = fs::path(data_dir) / "manifest.json";
  if (!fs::exists(manifest_path)) return;
  const auto manifest = nlohmann::json::parse(files::read_all(manifest_path.string()), nullptr, false);
  DGR_CHECK_AS(DataError, !manifest.is_discarded() && manifest.is_object(),
               "{}: not valid JSON (restore it, or rebuild the data set with `dgr data build-debian`)",
               manifest_path.string());
  if (!manifest.contains("files")) return;
  for (const auto& [name, expected] : manifest.at("files").items()) {
    const std::string path = (fs::path(data_dir) / name).string();
    DGR_CHECK_AS(DataError, fs::exists(path), "{}: missing, but {} lists it (restore it, or rebuild the data set "
                 "with `dgr data build-debian`)", path, manifest_path.string());
    const std::string actual = files::sha256_file(path);
    DGR_CHECK_AS(DataError, actual == expected.get<std::string>(),
                 "{}: SHA-256 {} but {} says {}: the file changed since the data set was made (restore it, e.g. "
                 "`git checkout datasets/`, or rebuild the data set with `dgr data build-debian`)", path, actual,
                 manifest_path.string(), expected.get<std::string>());
  }
  std::cout << fmt::format("{}: {} files match their SHA-256\n", manifest_path.string(), manifest.at("files").size());
}

int run_split(const data::QuerySplitOptions& opts, const World& world) {
  auto control = comm::make_host_communicator(world);  // rank 0 writes; the others wait in its barrier
  if (world.is_root()) {
    const auto r = data::split_queries(opts);
    std::cout << fmt::format("{}/queries.{}.tsv: {} queries ({} judgements) -> {}: {} queries ({} judgements), {}: "
                             "{} queries ({} judgements)\n", opts.data_dir, opts.from, r.first_queries + r.second_queries,
                             r.first_qrels + r.second_qrels, opts.first, r.first_queries, r.first_qrels, opts.second,
                             r.second_queries, r.second_qrels);
  }
  control->barrier();
  return 0;
}

int run_corpus_queries(const data::CorpusQueryOptions& opts, const World& world) {
  auto control = comm::make_host_communicator(world);  // rank 0 writes; the others wait in its barrier
  if (world.is_root()) {
    const auto r = data::make_corpus_queries(opts);
    std::cout << fmt::format("{}/queries.{}.tsv: {} {} queries from {} of the {} passages (one judgement each: its "
                             "source passage)\n", opts.data_dir, opts.split, r.queries, opts.kind, r.passages_tried,
                             r.passages);
  }
  control->barrier();
  return 0;
}

int run_dpr_queries(const data::DprQueryOptions& opts, const World& world) {
  auto control = comm::make_host_communicator(world);  // rank 0 writes; the others wait in its barrier
  if (world.is_root()) {
    const auto r = data::convert_dpr_queries(opts);
    std::cout << fmt::format("{} -> {}/queries.{}.tsv, qrels.{}.tsv, answers.{}.jsonl: {} questions, {} with a positive "
                             "passage, {} judgements{}\n", opts.in, opts.data_dir, opts.split, opts.split, opts.split,
                             r.questions, r.with_positive, r.qrels,
                             r.corpus_checked ? fmt::format(" ({} positives not in corpus.tsv left out)",
                                                            r.positives_not_in_corpus)
                                              : " (no corpus.tsv here: passage ids not checked)");
  }
  control->barrier();
  return 0;
}

int run_check(CheckOptions opts, const World& world) {
  if (!opts.data_dir.empty()) {
    DGR_CHECK_AS(ConfigError, fs::is_directory(opts.data_dir), "--data {}: not a directory", opts.data_dir);
    if (world.is_root()) check_manifest(opts.data_dir);
    if (opts.corpus.empty()) opts.corpus = (fs::path(opts.data_dir) / "corpus.tsv").string();
    // Every split there, whatever its name (train, dev, test, the parts of `dgr data split`, corpus queries):
    // queries.NAME.tsv and qrels.NAME.tsv, in name order.
    std::vector<std::string> queries, qrels;
    for (const auto& entry : fs::directory_iterator(opts.data_dir)) {
      const std::string name = entry.path().filename().string();
      if (!entry.is_regular_file() || !name.ends_with(".tsv")) continue;
      if (name.rfind("queries.", 0) == 0) queries.push_back(entry.path().string());
      if (name.rfind("qrels.", 0) == 0) qrels.push_back(entry.path().string());
    }
    std::sort(queries.begin(), queries.end());
    std::sort(qrels.begin(), qrels.end());
    opts.queries.insert(opts.queries.end(), queries.begin(), queries.end());
    opts.qrels.insert(opts.qrels.end(), qrels.begin(), qrels.end());
  }
  DGR_CHECK_AS(ConfigError, !opts.corpus.empty() || !opts.queries.empty() || !opts.qrels.empty() || !opts.runs.empty(),
               "dgr data check: nothing to check (give --data DIR or --corpus/--queries/--qrels/--run)");
  if (!world.is_root()) return 0;
  std::unique_ptr<data::Corpus> corpus;
  if (!opts.corpus.empty()) {
    corpus = std::make_unique<data::Corpus>(data::read_corpus(opts.corpus));
    std::cout << fmt::format("{}: {} passages\n", opts.corpus, corpus->passages.size());
  }
  std::vector<data::Query> all_queries;
  for (const auto& path : opts.queries) {
    auto queries = data::read_queries(path);
    std::cout << fmt::format("{}: {} queries\n", path, queries.size());
    all_queries.insert(all_queries.end(), queries.begin(), queries.end());
  }
  const std::vector<data::Query>* known = opts.queries.empty() ? nullptr : &all_queries;
  for (const auto& path : opts.qrels) {
    auto qrels = data::read_qrels(path, corpus.get(), known);
    std::cout << fmt::format("{}: {} judgements\n", path, qrels.size());
  }
  for (const auto& path : opts.runs) {
    auto run = data::read_trec_run(path, corpus.get(), known);
    std::cout << fmt::format("{}: {} run entries\n", path, run.size());
  }
  std::cout << "ok\n";
  return 0;
}

}  // namespace

void add_data_commands(CLI::App& app, CommandTable& table) {
  CLI::App* data = app.add_subcommand("data", "Build or validate retrieval data sets");
  data->require_subcommand(1);

  auto cfg = std::make_shared<data::DebianDataConfig>();
  CLI::App* build = data->add_subcommand(
      "build-debian", "Build the embedded Debian package retrieval data set from this machine's apt lists");
  build->add_option("--subset", cfg->subset, "tiny (1 passage in 100), small (1 in 10) or full")
      ->check(CLI::IsMember({"tiny", "small", "full"}));
  build->add_option("--out", cfg->out, "Output directory ('' = data/debian-SUBSET)");
  build->add_option("--lists-dir", cfg->lists_dir,
                    "Directory with apt lists (Packages + Translation-en) to read instead of fetching them");
  build->add_flag("--force", cfg->force, "Replace the output directory if it exists");
  build->add_option("--min-content-words", cfg->min_content_words,
                    "Drop passages with fewer words outside boilerplate sentences")
      ->check(at_least(0));
  build->add_option("--boilerplate-min-sources", cfg->boilerplate_min_sources,
                    "A sentence found in this many source packages is boilerplate")
      ->check(at_least(1));
  build->add_option("--near-duplicate-jaccard", cfg->near_duplicate_jaccard,
                    "Word 5-gram Jaccard similarity from which a passage is a near duplicate")
      ->check(between(0, 1));
  table[build] = [cfg](const World& world) { return run_build_debian(*cfg, world); };

  auto split = std::make_shared<data::QuerySplitOptions>();
  CLI::App* split_cmd = data->add_subcommand(
      "split", "Split a query set in two by a seeded hash of the query ids (e.g. stage 1's and stage 2's training "
      "queries): writes queries/qrels.FIRST.tsv and queries/qrels.SECOND.tsv beside FROM's");
  split_cmd->add_option("--data", split->data_dir, "Data set directory (corpus.tsv, queries.FROM.tsv, qrels.FROM.tsv)")
      ->required();
  split_cmd->add_option("--from", split->from, "The split to divide");
  split_cmd->add_option("--first", split->first, "Name of the part that keeps the queries not drawn");
  split_cmd->add_option("--second", split->second, "Name of the part that gets round(fraction * n) drawn queries");
  split_cmd->add_option("--fraction", split->fraction, "Fraction of the queries drawn into SECOND")->check(between(0, 1));
  split_cmd->add_option("--seed", split->seed, "Seed of the hash that orders the queries");
  split_cmd->add_flag("--force", split->force, "Replace the parts if they exist");
  table[split_cmd] = [split](const World& world) { return run_split(*split, world); };

  auto made = std::make_shared<data::CorpusQueryOptions>();
  CLI::App* made_cmd = data->add_subcommand(
      "corpus-queries", "Make distillation queries from the corpus itself (keyword sets or sentences of passages, "
      "the source passage the positive): writes queries/qrels.SPLIT.tsv");
  made_cmd->add_option("--data", made->data_dir, "Data set directory (corpus.tsv)")->required();
  made_cmd->add_option("--split", made->split, "Name of the split written");
  made_cmd->add_option("--count", made->count, "Queries to make (one per passage, passages drawn by hash)")
      ->check(at_least(1));
  made_cmd->add_option("--kind", made->kind, "keywords (words of the body, not of the title) or sentence (one body "
                       "sentence)")->check(CLI::IsMember({"keywords", "sentence"}));
  made_cmd->add_option("--words", made->words, "keywords: words per query")->check(at_least(1));
  made_cmd->add_option("--min-sentence-words", made->min_sentence_words, "sentence: fewest words")->check(at_least(1));
  made_cmd->add_option("--max-sentence-words", made->max_sentence_words, "sentence: most words")->check(at_least(1));
  made_cmd->add_option("--seed", made->seed, "Seed of the hashes that draw passages, words and sentences");
  made_cmd->add_flag("--force", made->force, "Replace the split if it exists");
  table[made_cmd] = [made](const World& world) { return run_corpus_queries(*made, world); };

  auto dpr = std::make_shared<data::DprQueryOptions>();
  CLI::App* dpr_cmd = data->add_subcommand(
      "dpr-queries", "Convert DPR's question file (nq-train.json, nq-dev.json, trivia-*.json: questions with "
      "positive_ctxs) into queries/qrels/answers.SPLIT of a data set whose corpus.tsv is DPR's psgs_w100.tsv");
  dpr_cmd->add_option("--in", dpr->in, "DPR's JSON file")->required();
  dpr_cmd->add_option("--data", dpr->data_dir, "Data set directory (corpus.tsv, when present, checks the passage ids)")
      ->required();
  dpr_cmd->add_option("--split", dpr->split, "Name of the split written (queries.SPLIT.tsv, qids SPLIT-N)");
  dpr_cmd->add_flag("--force", dpr->force, "Replace the split if it exists");
  table[dpr_cmd] = [dpr](const World& world) { return run_dpr_queries(*dpr, world); };

  auto check = std::make_shared<CheckOptions>();
  CLI::App* check_cmd = data->add_subcommand(
      "check", "Validate a data set: corpus, queries, qrels and TREC runs (errors name file and line)");
  check_cmd->add_option("--data", check->data_dir, "A data set directory (corpus.tsv, queries.SPLIT.tsv, qrels.SPLIT.tsv)");
  check_cmd->add_option("--corpus", check->corpus, "Corpus: TSV (pid, title, text[, pseudo-queries]) or JSONL");
  check_cmd->add_option("--queries", check->queries, "Queries TSV (qid, text); repeatable");
  check_cmd->add_option("--qrels", check->qrels, "Qrels: TREC (qid 0 pid grade) or TSV (qid pid [grade]); repeatable");
  check_cmd->add_option("--run", check->runs, "TREC run (qid Q0 pid rank score tag); repeatable");
  table[check_cmd] = [check](const World& world) { return run_check(*check, world); };
}

}  // namespace dgr::launcher
