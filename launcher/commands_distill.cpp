// The data side of distillation (method.md sections 5-7; docs/distillation.md): `dgr mine` (stage-1
// retrieval over the training queries, sharded over the ranks, with each candidate's keys), `dgr teacher
// import|bm25` (a teacher run over exactly the mined candidates) and `dgr prepare` (the filtered, sharded
// HDF5 data set stage 2 reads). The work is in trainer/retrieve_queries.h and data/ (the mined directory's
// writer, teacher runs, the prepared shards); this file maps the options onto it.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "launcher/commands.h"
#include "launcher/flags.h"
#include "launcher/startup.h"
#include "retrieval/bm25.h"
#include "retrieval/index_dir.h"
#include "retrieval/retriever.h"
#include "data/distill_data.h"
#include "data/mined.h"
#include "data/mined_writer.h"
#include "data/readers.h"
#include "data/trec.h"
#include "trainer/exported_model.h"
#include "trainer/retrieve_queries.h"
#include "trainer/stop.h"

namespace fs = std::filesystem;

namespace dgr::launcher {
namespace {

using nlohmann::json;

struct MineOptions {
  std::string data_dir = "data/debian-tiny";
  std::string index_dir;  // "" = DATA/index
  std::string model;      // export file
  std::string split = "train";
  std::string out_dir;
  int max_queries = 0;
  int max_keys = 40;
  int round_size = 8;     // queries per rank per gather round
  trainer::DeviceOptions device;  // --device, --threads
  bool force = false;
  bool any_index = false;  // mine with an index other than the model's own
  trainer::RetrievalSettings settings;
  std::string add_run;  // a TREC run over the split's queries (e.g. the teacher's): its top add_top passages join
  int add_top = 10;     // each query's list when the model's keys match them (retrieval::score_passages)
};

// Each query's first `top` passages of `run_path` (by rank) as FM-index documents; a query the run lacks gets
// none. DataError for a pid the index lacks.
std::vector<std::vector<int32_t>> top_passages_of_run(const std::string& run_path, int top,
                                                      const std::vector<data::Query>& queries,
                                                      const retrieval::IndexDir& index) {
  const auto entries = data::read_trec_run(run_path, nullptr, &queries);
  std::unordered_map<std::string, std::vector<std::pair<int, int32_t>>> ranked;  // qid -> (rank, doc)
  for (const auto& e : entries) {
    auto it = index.doc_of.find(e.pid);
    DGR_CHECK_AS(DataError, it != index.doc_of.end(), "{}: passage '{}' (query {}) is not in the index: give a run over "
                 "the corpus the model was mined with", run_path, e.pid, e.qid);
    ranked[e.qid].emplace_back(e.rank, it->second);
  }
  std::vector<std::vector<int32_t>> out(queries.size());
  for (size_t q = 0; q < queries.size(); ++q) {
    auto& list = ranked[queries[q].qid];
    std::sort(list.begin(), list.end());
    for (size_t i = 0; i < list.size() && i < static_cast<size_t>(top); ++i) out[q].push_back(list[i].second);
  }
  return out;
}

struct TeacherImportOptions {
  std::string mined_dir;
  std::string run;
  std::string out;
  std::string missing = "error";
  std::string extra = "error";
};

struct TeacherBm25Options {
  std::string mined_dir;
  std::string data_dir = "data/debian-tiny";
  std::string out;
  double k1 = 0.9;
  double b = 0.4;
};

std::string absolute(const std::string& path) { return fs::absolute(path).lexically_normal().string(); }

// The mined candidate of one retrieved passage: its keys in matching order, at most `max_keys` (Note
// [Overlapped keys] in retrieval/scoring.h). Labels come later (label_candidates).
data::MinedCandidate mined_candidate(const retrieval::RetrievedPassage& p, const retrieval::IndexDir& index,
                                     int max_keys) {
  data::MinedCandidate c;
  c.pid = index.pids[static_cast<size_t>(p.doc)];
  c.doc = p.doc;
  c.score = p.score;
  auto add_key = [&](const retrieval::Key& key) {
    if (c.keys.size() >= static_cast<size_t>(max_keys)) return;
    c.keys.push_back({key.tokens, static_cast<int8_t>(key.view), key.count, static_cast<float>(key.score)});
    c.key_texts.push_back(retrieval::key_text(key, index.tokenizer));
  };
  for (const auto& m : p.keys) add_key(m.key);
  return c;
}

// What produced a mined directory: its manifest.json without the counts and files (MinedWriter adds those).
json mine_provenance(const MineOptions& opts, const std::string& queries_path, const std::string& qrels_path,
                     const std::string& index_path, const json& index_manifest, size_t passages,
                     const trainer::ExportedScorer& exported) {
  return {
      {"split", opts.split},
      {"data_dir", absolute(opts.data_dir)},
      {"queries_file", absolute(queries_path)},
      {"qrels_file", absolute(qrels_path)},
      {"labels", "positive = (qid, pid) in the qrels file with grade >= 1"},
      {"model", {{"path", absolute(opts.model)}, {"sha256", files::sha256_file(opts.model)}}},
      {"index", {{"dir", absolute(index_path)},
                 {"manifest_sha256", files::sha256_file((fs::path(index_path) / "index.json").string())},
                 {"tokenizer_sha256", index_manifest.value("tokenizer_sha256", "")},
                 {"fm_index_sha256", index_manifest.value("fm_index_sha256", "")},
                 {"pids_sha256", index_manifest.value("pids_sha256", "")},
                 {"corpus_sha256", index_manifest.contains("corpus") ? index_manifest["corpus"].value("sha256", "") : ""},
                 {"passages", passages}}},
      {"retrieval", [&] {
         json r = trainer::retrieval_settings_json(opts.settings);
         r["max_keys"] = opts.max_keys;
         if (!opts.add_run.empty()) {
           r["added"] = {{"run", absolute(opts.add_run)}, {"run_sha256", files::sha256_file(opts.add_run)},
                         {"top", opts.add_top},
                         {"rule", "each query's top passages of the run are scored by the model's keys and listed "
                                  "besides the retrieved top_k when a key matches them"}};
         }
         r["view_limits"] = json::parse(trainer::view_limits_json(exported.limits));
         return r;
       }()},
  };
}

// Loads the export file for this rank's device and checks it against the index (trainer::check_model_fits_index).
trainer::ExportedScorer load_mining_model(const MineOptions& opts, const retrieval::IndexDir& index,
                                          const std::string& index_path, const World& world) {
  const trainer::DeviceChoice device = trainer::resolve_device(opts.device.device, world);
  trainer::make_current(device);
  trainer::ExportedScorer exported =
      trainer::load_exported_scorer(opts.model, threads_per_rank(opts.device.threads, world), device);
  trainer::check_model_fits_index(exported, opts.model, index, index_path, opts.any_index);
  trainer::check_searched_views_trained(opts.settings, exported.trained_views, opts.model);
  if (world.is_root()) log::get("mine")->info("retrieval: {}", trainer::describe_retrieval(opts.settings));
  return exported;
}

// Logs progress at 1, 2, 4, ... queries and at the last one.
struct MineProgress {
  size_t total = 0, next_report = 1;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  void update(const data::MinedCounts& counts) {
    if (counts.queries < static_cast<int64_t>(next_report) && counts.queries != static_cast<int64_t>(total)) return;
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    log::get("mine")->info("mined {}/{} queries ({:.1f} queries/s, {} with a positive among the candidates)",
                           counts.queries, total, seconds > 0 ? static_cast<double>(counts.queries) / seconds : 0.0,
                           counts.with_positive);
    next_report = std::max(next_report * 2, static_cast<size_t>(counts.queries) + 1);
  }
};

int run_mine(const MineOptions& opts, const World& world) {
  DGR_CHECK_AS(ConfigError, !opts.model.empty(), "dgr mine needs --model (an export file from `dgr train` or `dgr export`)");
  DGR_CHECK_AS(ConfigError, !opts.out_dir.empty(), "dgr mine needs --out (the mined directory to write)");
  DGR_CHECK_AS(ConfigError, opts.max_keys > 0, "--max-keys must be positive, got {}", opts.max_keys);
  auto log = log::get("mine");
  const fs::path data(opts.data_dir);
  const std::string index_path = opts.index_dir.empty() ? (data / "index").string() : opts.index_dir;
  const std::string queries_path = (data / ("queries." + opts.split + ".tsv")).string();
  const std::string qrels_path = (data / ("qrels." + opts.split + ".tsv")).string();
  DGR_CHECK_AS(ConfigError, fs::exists(qrels_path), "{}: missing; mining labels each candidate by the qrels of the "
               "split (give a split with qrels, usually --split train)", qrels_path);
  // Rank 0, before hours of retrieval: the output must be writable as a mined directory.
  std::unique_ptr<data::MinedWriter> writer;
  if (world.is_root()) {
    writer = std::make_unique<data::MinedWriter>(
        opts.out_dir, opts.force, data::MinedPassageSource{(data / "corpus.tsv").string(), index_path, opts.data_dir},
        opts.max_keys);
  }
  auto index = retrieval::load_index_dir(index_path);
  const json index_manifest = json::parse(index.manifest_json);
  trainer::ExportedScorer exported = load_mining_model(opts, index, index_path, world);
  auto queries = data::read_queries(queries_path);
  const data::PositiveLabels positives = data::read_positive_labels(qrels_path, queries);
  if (opts.max_queries > 0 && queries.size() > static_cast<size_t>(opts.max_queries)) {
    queries.resize(static_cast<size_t>(opts.max_queries));
  }
  std::vector<std::vector<int32_t>> added;  // [query] the --add-run passages scored besides the top_k
  if (!opts.add_run.empty()) added = top_passages_of_run(opts.add_run, opts.add_top, queries, index);
  // Every rank: one mined line per query of its share. Rank 0: the files, streamed in query order.
  auto encode = [&](size_t q, const std::vector<int32_t>& tokens, const std::vector<retrieval::RetrievedPassage>& passages) {
    data::MinedQuery mined{queries[q].qid, queries[q].text, tokens, {}};
    for (const auto& p : passages) mined.candidates.push_back(mined_candidate(p, index, opts.max_keys));
    data::label_candidates(mined, positives);
    return data::mined_query_json(mined);
  };
  // Note [Resumable mining] (data/mined_writer.h): rank 0 continues OUT.partial when it holds this run.
  const json provenance =
      mine_provenance(opts, queries_path, qrels_path, index_path, index_manifest, index.pids.size(), exported);
  const json fingerprint = [&] {
    json f = provenance;
    f["queries_sha256"] = files::sha256_file(queries_path);
    f["qrels_sha256"] = files::sha256_file(qrels_path);
    f["max_queries"] = opts.max_queries;
    return f;
  }();
  auto control = comm::make_host_communicator(world);  // the rounds' gathers (comm/communicator.h)
  std::string resumed_text = world.is_root() ? std::to_string(writer->open(fingerprint.dump())) : std::string();
  control->broadcast_bytes(resumed_text, 0);
  const size_t resumed = std::stoull(resumed_text);
  MineProgress progress{queries.size()};
  auto consume = [&](size_t q, std::string line) {
    writer->add(q, line);
    progress.update(writer->counts());
  };
  if (world.is_root()) {
    if (resumed > 0) {
      log->info("continuing {}: {} of {} queries were mined by an earlier run", writer->partial_dir(), resumed,
                queries.size());
    }
    log->info("mining {} {} queries (depth {}, views {}, beam {}) on {} ranks into {}", queries.size() - resumed,
              opts.split, opts.settings.top_k, fmt::join(opts.settings.views, ","), opts.settings.beam, world.size(),
              opts.out_dir);
  }
  trainer::RetrievalSettings settings = opts.settings;
  // After every round: rank 0 makes it durable, then the ranks vote on a stop signal (SIGUSR1/SIGTERM, as
  // `dgr train` does at a step boundary; slurm/requeue.sh sends it).
  trainer::StopVote vote(*control, {}, world);
  int64_t round = 0;
  trainer::RoundControl rounds{resumed, [&] {
                                 if (world.is_root()) writer->checkpoint();
                                 return vote.agree(++round);
                               }};
  auto stats = trainer::retrieve_in_rounds(*exported.scorer, index, queries, settings, exported.limits, *control,
                                           opts.round_size, encode, consume, opts.add_run.empty() ? nullptr : &added,
                                           rounds);
  if (stats.stopped) {
    if (world.is_root()) {
      log->warn("stopped on a signal after {} of {} queries; they are in {}: run the same command again to continue "
                "(exit code 3)", writer->counts().queries, queries.size(), writer->partial_dir());
    }
    return 3;
  }
  if (!world.is_root()) return 0;
  const data::MinedCounts counts = writer->counts();
  if (counts.without_candidates > 0) {
    log->warn("{} of {} queries got no candidate (no key of the model found a passage: an undertrained model?); they "
              "stay in {} with empty lists and `dgr prepare` drops them", counts.without_candidates, counts.queries,
              data::kMinedCandidatesFile);
  }
  writer->commit(provenance.dump(), world.size(), stats.seconds, stats.queries_per_second());
  std::cout << fmt::format("dgr mine: {} {} queries -> {}: {} with a positive among the candidates, {:.1f} candidates "
                           "per query, {:.1f} queries/s on {} ranks\n",
                           counts.queries, opts.split, opts.out_dir, counts.with_positive, counts.mean_candidates(),
                           stats.queries_per_second(), world.size())
            << std::flush;
  return 0;
}

// The mined queries (no keys) and, when the index still matches, its pids (for "not in the corpus" errors).
struct MinedInputs {
  data::MinedManifest manifest;
  std::vector<data::MinedQuery> queries;
  std::optional<std::unordered_set<std::string>> pids;
};
MinedInputs read_mined_inputs(const std::string& mined_dir) {
  DGR_CHECK_AS(ConfigError, !mined_dir.empty(), "give --mined (a directory written by `dgr mine`)");
  MinedInputs in;
  in.manifest = data::read_mined_manifest(mined_dir);
  in.queries = data::read_mined_queries(mined_dir, /*with_keys=*/false);
  in.pids = data::read_index_pids(in.manifest.index_dir, in.manifest.pids_sha256);
  return in;
}

int64_t count_candidates(const std::vector<data::MinedQuery>& queries) {
  int64_t n = 0;
  for (const auto& q : queries) n += static_cast<int64_t>(q.candidates.size());
  return n;
}

int run_teacher_import(const TeacherImportOptions& opts, const World& world) {
  DGR_CHECK_AS(ConfigError, !opts.run.empty() && !opts.out.empty(), "dgr teacher import needs --mined, --run and --out");
  if (!world.is_root()) return 0;
  auto log = log::get("teacher");
  MinedInputs in = read_mined_inputs(opts.mined_dir);
  auto missing = opts.missing == "last" ? data::MissingCandidates::last : data::MissingCandidates::error;
  auto extra = opts.extra == "ignore" ? data::ExtraEntries::ignore : data::ExtraEntries::error;
  data::TeacherRun teacher(opts.run, in.queries, missing, opts.mined_dir, in.pids ? &*in.pids : nullptr, extra);
  if (teacher.ignored_entries() > 0) {
    log->info("{}: {} entries ignored (--extra ignore): {} of queries that were not mined, {} of passages that are "
              "not mined candidates", opts.run, teacher.ignored_entries(), teacher.ignored_query_entries(),
              teacher.ignored_entries() - teacher.ignored_query_entries());
  }
  if (teacher.unscored_candidates() > 0) {
    log->warn("{}: {} mined candidates in {} queries are not in the run: ranked after the scored ones (--missing last; "
              "scores below every scored candidate, see docs/distillation.md)",
              opts.run, teacher.unscored_candidates(), teacher.queries_with_unscored());
  }
  data::write_trec_run(opts.out, data::teacher_run_entries(in.queries, teacher.lists(), teacher.tag()));
  std::cout << fmt::format("dgr teacher import: {} -> {}: {} queries, {} candidates ({} unscored, in {} queries; {} run "
                           "entries ignored)\n",
                           opts.run, opts.out, in.queries.size(), count_candidates(in.queries),
                           teacher.unscored_candidates(), teacher.queries_with_unscored(), teacher.ignored_entries())
            << std::flush;
  return 0;
}

int run_teacher_bm25(const TeacherBm25Options& opts, const World& world) {
  DGR_CHECK_AS(ConfigError, !opts.out.empty(), "dgr teacher bm25 needs --mined, --data and --out");
  if (!world.is_root()) return 0;
  auto log = log::get("teacher");
  MinedInputs in = read_mined_inputs(opts.mined_dir);
  const std::string corpus_path = (fs::path(opts.data_dir) / "corpus.tsv").string();
  auto corpus = data::read_corpus(corpus_path);
  for (const auto& q : in.queries) {
    for (const auto& c : q.candidates) {
      DGR_CHECK_AS(DataError, corpus.contains(c.pid),
                   "mined candidate {} of query {} is not in {}: the candidates were mined from another corpus "
                   "(give the --data the index of {} was built from)",
                   c.pid, q.qid, corpus_path, opts.mined_dir);
    }
  }
  retrieval::Bm25Options options;
  options.k1 = opts.k1;
  options.b = opts.b;
  // Every passage BM25 matches, so that every matched candidate gets its score (a query's cost is that of its
  // matching passages).
  options.depth = static_cast<int>(corpus.passages.size());
  retrieval::Bm25Index bm25(corpus, options);
  std::vector<data::TeacherList> lists;
  lists.reserve(in.queries.size());
  int64_t unmatched = 0, queries_with_unmatched = 0;
  for (const auto& q : in.queries) {
    std::unordered_map<std::string, std::pair<double, int64_t>> hit;  // pid -> (score, BM25 rank)
    auto results = bm25.search(q.text);
    for (size_t r = 0; r < results.size(); ++r) hit.emplace(results[r].first, std::make_pair(results[r].second, r));
    std::vector<std::optional<double>> scores(q.candidates.size());
    std::vector<int64_t> tie_order(q.candidates.size(), 0);
    int64_t missing = 0;
    for (size_t c = 0; c < q.candidates.size(); ++c) {
      auto it = hit.find(q.candidates[c].pid);
      if (it == hit.end()) {
        ++missing;
        continue;
      }
      scores[c] = it->second.first;
      tie_order[c] = it->second.second;
    }
    unmatched += missing;
    queries_with_unmatched += missing > 0 ? 1 : 0;
    lists.push_back(data::teacher_list(scores, tie_order));
  }
  data::write_trec_run(opts.out, data::teacher_run_entries(in.queries, lists, "bm25"));
  std::cout << fmt::format("dgr teacher bm25 (k1 {}, b {}): {} -> {}: {} queries, {} candidates ({} share no term with "
                           "the query, in {} queries: ranked last)\n",
                           opts.k1, opts.b, opts.mined_dir, opts.out, in.queries.size(), count_candidates(in.queries),
                           unmatched, queries_with_unmatched)
            << std::flush;
  return 0;
}

int run_prepare(const data::PrepareOptions& opts, const World& world) {
  if (!world.is_root()) return 0;
  auto s = data::prepare_distill_data(opts);
  std::cout << fmt::format("dgr prepare: {} -> {}: {} of {} mined queries kept ({} without {} positive(s), {} with fewer "
                           "than {} negatives, {} with the top positive >= {} above the top negative), {} candidates, "
                           "{} keys, {} shards\n",
                           opts.mined_dir, opts.out_dir, s.kept, s.mined_queries, s.dropped_no_positive,
                           opts.min_positives, s.dropped_few_negatives, opts.min_negatives, s.dropped_score_gap,
                           opts.max_score_gap, s.candidates, s.keys, s.shards)
            << std::flush;
  if (s.gap_queries > 0) {
    const double m = s.median_abs_gap / 2;
    std::cout << fmt::format("score gaps over {} mined queries: the top positive outscores the top negative in {:.1f}%, "
                             "median |gap| {:.1f}; constants by the rule of trainer/distill_loss.h: --margin {:.1f} "
                             "--margin-step {:.1f} --second-margin {:.1f} --temperature {:.1f} --gen-weight {:.1f}, "
                             "prepare --max-score-gap {:.1f}\n",
                             s.gap_queries, 100 * s.positive_first, s.median_abs_gap, m, m / 3, 4 * m / 3, m / 3,
                             500 * m / 300, m)
              << std::flush;
  }
  return 0;
}

}  // namespace

void add_distill_commands(CLI::App& app, CommandTable& table) {
  auto m = std::make_shared<MineOptions>();
  m->settings.top_k = 100;
  CLI::App* mine = app.add_subcommand("mine", "Mine distillation candidates: stage-1 retrieval over a split's queries "
                                              "(sharded over the ranks), each candidate labelled and with its keys");
  mine->add_option("--data", m->data_dir, "Data set directory (corpus.tsv, queries.SPLIT.tsv, qrels.SPLIT.tsv)");
  mine->add_option("--index", m->index_dir, "Index directory ('' = DATA/index)");
  mine->add_option("--model", m->model, "Export file (OUT/model.h5 of `dgr train`, or from `dgr export`)");
  mine->add_option("--split", m->split, "Split whose queries are mined (labels from its qrels)");
  mine->add_option("--max-keys", m->max_keys, "Keys kept per candidate, in matching order")->check(at_least(1));
  mine->add_option("--out", m->out_dir, "Mined directory to write (candidates.jsonl, candidates.tsv, run.trec, manifest.json)");
  add_retrieval_flags(*mine, m->settings, {.views_flag = "--views", .depth = true});
  add_device_flags(*mine, m->device, false);
  mine->add_option("--max-queries", m->max_queries, "Only the first N queries of the split (0 = all)");
  mine->add_option("--round-size", m->round_size, "Queries per rank between two gathers to rank 0")->check(at_least(1));
  mine->add_flag("--force", m->force, "Replace --out even when it is not a mined directory");
  mine->add_flag("--any-index", m->any_index, "Mine with an index other than the one the model was trained on "
                 "(same tokenizer; refused otherwise)");
  mine->add_option("--add-run", m->add_run, "A TREC run over the split's queries (e.g. `dgr bm25`'s, the teacher's): "
                   "its top --add-top passages per query join the candidates when the model's keys match them");
  mine->add_option("--add-top", m->add_top, "Passages per query taken from --add-run")->check(at_least(1));
  table[mine] = [m](const World& world) { return run_mine(*m, world); };

  CLI::App* teacher = app.add_subcommand("teacher", "Teacher runs over exactly the mined candidates");
  teacher->require_subcommand(1);
  auto ti = std::make_shared<TeacherImportOptions>();
  CLI::App* import = teacher->add_subcommand("import", "Check another ranker's TREC run against the mined candidates "
                                                       "and write it normalized (ranks 1..n over exactly the candidates)");
  import->add_option("--mined", ti->mined_dir, "Mined directory (`dgr mine`)");
  import->add_option("--run", ti->run, "The teacher's TREC run (qid Q0 pid rank score tag), any tag and score format");
  import->add_option("--out", ti->out, "Normalized teacher run to write");
  import->add_option("--missing", ti->missing, "Candidates the run lacks: error, or last (ranked after the scored ones)")
      ->check(CLI::IsMember({"error", "last"}));
  import->add_option("--extra", ti->extra, "Run entries that are not mined candidates (a teacher's own top k, other "
                     "queries): error, or ignore (skipped and counted)")
      ->check(CLI::IsMember({"error", "ignore"}));
  table[import] = [ti](const World& world) { return run_teacher_import(*ti, world); };

  auto tb = std::make_shared<TeacherBm25Options>();
  CLI::App* bm25 = teacher->add_subcommand("bm25", "The built-in teacher: BM25 (Xapian) scores of exactly the mined "
                                                   "candidates of each query");
  bm25->add_option("--mined", tb->mined_dir, "Mined directory (`dgr mine`)");
  bm25->add_option("--data", tb->data_dir, "Data set directory (corpus.tsv: the corpus the candidates were mined from)");
  bm25->add_option("--out", tb->out, "Teacher run to write");
  bm25->add_option("--k1", tb->k1, "BM25 k1");
  bm25->add_option("--b", tb->b, "BM25 b");
  table[bm25] = [tb](const World& world) { return run_teacher_bm25(*tb, world); };

  auto p = std::make_shared<data::PrepareOptions>();
  CLI::App* prepare = app.add_subcommand("prepare", "The distillation data set: filter the mined queries, join the "
                                                    "teacher run, write HDF5 shards + manifest.json");
  prepare->add_option("--mined", p->mined_dir, "Mined directory (`dgr mine`)");
  prepare->add_option("--teacher", p->teacher_run, "Teacher run over exactly the mined candidates (`dgr teacher`)");
  prepare->add_option("--out", p->out_dir, "Prepared directory to write");
  prepare->add_option("--shard-size", p->shard_size, "Queries per HDF5 shard")->check(at_least(1));
  prepare->add_option("--min-positives", p->min_positives, "Keep a query with at least this many positives");
  prepare->add_option("--min-negatives", p->min_negatives, "Keep a query with at least this many negatives");
  prepare->add_option("--max-score-gap", p->max_score_gap,
                      "Keep a query when score(top positive) < score(top negative) + this (inf = off)");
  table[prepare] = [p](const World& world) { return run_prepare(*p, world); };
}

}  // namespace dgr::launcher
