// `dgr train --stage generate` (stage 1) and `--stage distill` (stage 2), `dgr retrieve` (a TREC run and its keys from an exported model)
// and `dgr export` (a checkpoint step -> a model-only export file). The work is in trainer/; this file maps
// options (flags and [train]/[retrieve]/[export] config tables) onto it.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "checkpoints/export.h"
#include "comm/communicator.h"
#include "checkpoints/store.h"
#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "launcher/commands.h"
#include "launcher/flags.h"
#include "data/record_journal.h"
#include "launcher/config.h"
#include "launcher/startup.h"
#include "launcher/version.h"
#include "retrieval/bm25.h"
#include "retrieval/index_dir.h"
#include "retrieval/metrics.h"
#include "data/readers.h"
#include "data/trec.h"
#include "trainer/exported_model.h"
#include "trainer/hf_bart.h"
#include "trainer/retrieve_queries.h"
#include "trainer/stage1.h"
#include "trainer/stop.h"
#include "trainer/stage2.h"

namespace fs = std::filesystem;

namespace dgr::launcher {
namespace {

struct TrainCommandOptions {
  std::string stage = "generate";
  std::vector<std::string> views = {"title", "body"};
  trainer::Stage1Options stage1;  // stage1.train holds the flags both stages share
  trainer::Stage2Options stage2;  // the distillation-only flags
  StagedDefaults staged;          // the shared flags whose default differs in stage 2
};

struct RetrieveCommandOptions {
  std::string data_dir = "data/debian-tiny";
  std::string index_dir;  // "" = DATA/index
  std::string model;      // export file
  std::vector<std::string> splits = {"dev", "test"};
  std::string queries;    // a queries file instead of --split
  std::string out_dir;    // "" = directory of the model
  std::string run_file;   // the run of the one split / queries file here instead of OUT/run.NAME.trec
  std::string tag = "dgr";  // the run's tag column
  bool any_index = false;   // retrieve with an index other than the model's own
  int round_size = 8;       // queries per rank per round (each round is journaled: Note [Resumable retrieval])
  int max_queries = 0;
  trainer::DeviceOptions device;  // --device, --threads
  trainer::RetrievalSettings settings;
};

struct ExportCommandOptions {
  std::string checkpoints;  // a checkpoint root (OUT/checkpoints) or one step directory
  int64_t step = -1;        // -1 = newest committed
  std::string out;
  std::string format = "dgr";  // dgr (an export file) | hf (a Hugging Face BART directory, from --model)
  std::string model;           // --format hf: the export file to convert
  bool force = false;          // --format hf: replace OUT
};

struct ImportCommandOptions {
  std::string format;         // hf | fairseq
  std::string from;           // hf: a model directory; fairseq: the output of scripts/fairseq-extract.py
  std::string tokenizer_dir;  // fairseq: the BART tokenizer directory (vocab.json, merges.txt)
  std::string out;
};

// `opts` is the parsed options themselves: the staged defaults refer to its fields.
int run_train(TrainCommandOptions& opts, const World& world) {
  if (opts.stage == "distill") {
    opts.staged.apply_distill_defaults();
    opts.stage2.train = opts.stage1.train;
    opts.stage2.train.device.threads = threads_per_rank(opts.stage2.train.device.threads, world);
    return trainer::run_stage2(opts.stage2, world);
  }
  opts.stage1.init_model = opts.stage2.init_model;  // --init-model: one flag for both stages
  for (bool& v : opts.stage1.data.views) v = false;
  for (const auto& name : opts.views) opts.stage1.data.views[static_cast<int>(retrieval::parse_view(name))] = true;
  opts.stage1.train.device.threads = threads_per_rank(opts.stage1.train.device.threads, world);
  return trainer::run_stage1(opts.stage1, world);
}

// RUN.json beside RUN.trec: what produced the run (the model, the queries, every retrieval setting as it took
// effect), for `dgr report` to name and for anyone to reproduce it.
void write_run_sidecar(const std::string& path, const RetrieveCommandOptions& opts, const trainer::ExportedScorer& model,
                       const std::string& model_sha256, const std::string& queries) {
  nlohmann::json sidecar = {{"model", {{"path", fs::absolute(opts.model).lexically_normal().string()},
                                       {"sha256", model_sha256},
                                       {"trained_views", model.trained_views}}},
                            {"queries", fs::absolute(queries).lexically_normal().string()},
                            {"max_queries", opts.max_queries},
                            {"retrieval", trainer::retrieval_settings_json(opts.settings)},
                            {"description", trainer::describe_retrieval(opts.settings)}};
  files::AtomicFile file(path);
  file.write(sidecar.dump(2) + "\n");
  file.commit();
}

int run_retrieve(const RetrieveCommandOptions& opts, const World& world) {
  DGR_CHECK_AS(ConfigError, !opts.model.empty(), "dgr retrieve needs --model (an export file from `dgr train` or `dgr export`)");
  auto log = log::get("retrieve");
  const fs::path data(opts.data_dir);
  const std::string index_path = opts.index_dir.empty() ? (data / "index").string() : opts.index_dir;
  auto index = retrieval::load_index_dir(index_path);
  const trainer::DeviceChoice device = trainer::resolve_device(opts.device.device, world);
  trainer::make_current(device);
  trainer::ExportedScorer exported =
      trainer::load_exported_scorer(opts.model, threads_per_rank(opts.device.threads, world), device);
  trainer::check_model_fits_index(exported, opts.model, index, index_path, opts.any_index);
  trainer::check_searched_views_trained(opts.settings, exported.trained_views, opts.model);
  const std::string out_dir = opts.out_dir.empty() ? fs::path(opts.model).parent_path().string() : opts.out_dir;
  std::vector<std::pair<std::string, std::string>> jobs;  // (name, queries file)
  if (!opts.queries.empty()) {
    jobs.emplace_back(fs::path(opts.queries).stem().string(), opts.queries);
  } else {
    for (const auto& split : opts.splits) jobs.emplace_back(split, (data / ("queries." + split + ".tsv")).string());
  }
  DGR_CHECK_AS(ConfigError, opts.run_file.empty() || jobs.size() == 1,
               "dgr retrieve --run names one file but {} splits are retrieved: give one --split (or --queries)",
               jobs.size());
  DGR_CHECK_AS(ConfigError, !opts.tag.empty() && opts.tag.find_first_of(" \t\n") == std::string::npos,
               "dgr retrieve --tag '{}': a TREC run tag is one word without spaces", opts.tag);
  std::unique_ptr<data::Corpus> corpus;
  const std::string model_sha256 = world.is_root() ? files::sha256_file(opts.model) : "";  // read once (rank 0 writes)
  auto control = comm::make_host_communicator(world);  // every split's gather (comm/communicator.h)
  for (const auto& [name, path] : jobs) {
    const auto all_queries = data::read_queries(path);
    auto queries = all_queries;
    if (opts.max_queries > 0 && queries.size() > static_cast<size_t>(opts.max_queries))
      queries.resize(static_cast<size_t>(opts.max_queries));
    const std::string run_path =
        opts.run_file.empty() ? (fs::path(out_dir) / ("run." + name + ".trec")).string() : opts.run_file;
    const std::string keys_path = (fs::path(out_dir) / ("keys." + name + ".jsonl")).string();
    // Note [Resumable retrieval]: each query's result is journaled in RUN.partial (rank 0), durable after every
    // round of --round-size queries per rank (RUN.partial.resume.json, with the run's fingerprint); a stop
    // signal ends the retrieval after the round with exit 3, and the same command continues with the next query.
    // The journal of other settings is dropped (with a warning): it is a cache, the outputs are rewritten anyway.
    std::unique_ptr<data::RecordJournal> journal;
    std::string done_text = "0";
    if (world.is_root()) {
      fs::create_directories(out_dir.empty() ? "." : out_dir);
      if (fs::path(run_path).has_parent_path()) fs::create_directories(fs::path(run_path).parent_path());
      const nlohmann::json fingerprint = {
          {"model_sha256", model_sha256}, {"index", nlohmann::json::parse(index.manifest_json)
                                                                          .value("fm_index_sha256", "")},
          {"queries_sha256", files::sha256_file(path)}, {"max_queries", opts.max_queries}, {"tag", opts.tag},
          {"retrieval", trainer::retrieval_settings_json(opts.settings)}};
      journal = std::make_unique<data::RecordJournal>(run_path + ".partial", fingerprint.dump());
      if (journal->restarted())
        log->warn("{}.partial held a retrieval of other settings: starting {} over", run_path, name);
      if (!journal->resumed().empty())
        log->info("continuing {}: {} of {} queries were retrieved by an earlier run", run_path,
                  journal->resumed().size(), queries.size());
      done_text = std::to_string(journal->resumed().size());
    }
    control->broadcast_bytes(done_text, 0);
    trainer::StopVote vote(*control, {}, world);
    int64_t round = 0;
    trainer::RetrieveResume resume;
    resume.queries_per_rank = opts.round_size;
    resume.first_query = std::stoull(done_text);
    if (journal) {
      resume.resumed = &journal->resumed();
      resume.journal = [&journal](const std::string& record) { journal->append(record); };
    }
    resume.after_round = [&] {
      if (journal) journal->checkpoint();
      return vote.agree(++round);
    };
    std::vector<std::string> keys;
    trainer::RetrievalStats stats;
    auto run = trainer::retrieve_queries(*exported.scorer, index, queries, opts.settings, exported.limits, *control,
                                         opts.tag, &keys, &stats, &resume);
    if (stats.stopped) {
      if (world.is_root())
        log->warn("stopped on a signal in {} after {} of {} queries ({}.partial): run the same command again to "
                  "continue (exit code 3)", name, resume.first_query + stats.queries, queries.size(), run_path);
      return 3;
    }
    if (!world.is_root()) continue;
    data::write_trec_run(run_path, run);
    write_run_sidecar(fs::path(run_path).replace_extension(".json").string(), opts, exported, model_sha256, path);
    {
      files::AtomicFile file(keys_path);
      for (const auto& line : keys) file.write(line + "\n");
      file.commit();
    }
    journal->remove();
    std::string line = fmt::format("dgr {} ({}): {} queries, {:.1f} queries/s on {} ranks", name, run_path, queries.size(),
                                   stats.queries_per_second(), world.size());
    const fs::path qrels_path = data / ("qrels." + name + ".tsv");
    if (opts.queries.empty() && fs::exists(qrels_path)) {
      if (!corpus) corpus = std::make_unique<data::Corpus>(data::read_corpus((data / "corpus.tsv").string()));
      auto qrels = data::read_qrels(qrels_path.string(), corpus.get(), &all_queries);
      std::unordered_set<std::string> kept;
      for (const auto& q : queries) kept.insert(q.qid);
      std::erase_if(qrels, [&](const data::Qrel& r) { return !kept.count(r.qid); });
      line += ": " + retrieval::format_metrics(retrieval::evaluate(run, qrels));
    }
    std::cout << line << "\n" << std::flush;
  }
  return 0;
}

int run_export(const ExportCommandOptions& opts, const World& world) {
  if (opts.format == "hf") {
    DGR_CHECK_AS(ConfigError, !opts.model.empty() && !opts.out.empty() && opts.checkpoints.empty(),
                 "dgr export --format hf needs --model (an export file) and --out (a directory); to convert a checkpoint, "
                 "export it first (dgr export --checkpoints ... --out model.h5)");
    if (!world.is_root()) return 0;
    const size_t n = trainer::export_hf_bart(opts.model, opts.out, opts.force);
    std::cout << fmt::format("exported {} to {} ({} tensors, Hugging Face BART layout)\n", opts.model, opts.out, n);
    return 0;
  }
  DGR_CHECK_AS(ConfigError, !opts.checkpoints.empty() && !opts.out.empty() && opts.model.empty(),
               "dgr export needs --checkpoints and --out (--model goes with --format hf)");
  if (!world.is_root()) return 0;
  std::string step_dir = opts.checkpoints;
  if (!fs::exists(fs::path(step_dir) / "COMMITTED")) {
    auto steps = checkpoints::committed_steps(opts.checkpoints);
    DGR_CHECK_AS(CheckpointError, !steps.empty(), "{}: no committed checkpoint (give a checkpoint root with step-* "
                 "directories or one step directory)", opts.checkpoints);
    int64_t step = opts.step >= 0 ? opts.step : steps.back();
    DGR_CHECK_AS(CheckpointError, std::find(steps.begin(), steps.end(), step) != steps.end(),
                 "{}: no committed step {} (committed: {} .. {})", opts.checkpoints, step, steps.front(), steps.back());
    step_dir = (fs::path(opts.checkpoints) / checkpoints::step_dir_name(step)).string();
  }
  auto loaded = checkpoints::load_step(step_dir, -1, 0);
  trainer::write_export_from_checkpoint(loaded, opts.out);
  std::cout << "exported " << step_dir << " (step " << loaded.step << ") to " << opts.out << "\n";
  return 0;
}

void add_train_command(CLI::App& app, CommandTable& table) {
  auto t = std::make_shared<TrainCommandOptions>();
  auto& s = t->stage1;
  CLI::App* train = app.add_subcommand("train", "Train the generative retriever, data-parallel over the ranks of the job: "
                                                "stage 'generate' (MINDER stage 1) or 'distill' (DGR stage 2)");
  train->add_option("--stage", t->stage, "Training stage: generate (stage 1) or distill (stage 2, from a stage-1 model)")
      ->check(CLI::IsMember({"generate", "distill"}));
  add_train_flags(*train, s.train, t->staged);
  CLI::Option* preset = train->add_option("--preset", s.preset, "generate: model preset: test, cpu, bart-base, bart-large");
  train->add_option("--views", t->views, "generate: identifier views to train: title, body, pq")->delimiter(',');
  train->add_option("--train-split", s.train_split,
                    "generate: training queries DATA/queries.SPLIT.tsv (e.g. a part from `dgr data split`)");
  train->add_option("--title-copies", s.data.title_copies, "generate: title pairs per training query per epoch");
  train->add_option("--body-spans", s.data.body_spans, "generate: body-span pairs per training query per epoch");
  train->add_option("--pq-copies", s.data.pq_copies, "generate: pseudo-query pairs per training query per epoch");
  train->add_option("--indexing-pairs", s.data.indexing_pairs, "generate: indexing pairs per passage per view per epoch");
  train->add_option("--indexing-source-min", s.data.indexing_source_min,
                    "generate: shortest body window used as an indexing source");
  train->add_option("--indexing-source-max", s.data.indexing_source_max,
                    "generate: longest body window used as an indexing source");
  train->add_option("--indexing-prefix-probability", s.data.indexing_prefix_probability,
                    "generate: probability that an indexing source starts at the first body token")->check(between(0, 1));
  auto& d = t->stage2;
  train->add_option("--prepared", d.prepared_dir, "distill: the prepared distillation data set (`dgr prepare`)");
  train->add_option("--init-model", d.init_model,
                    "distill: the stage-1 export the student starts from; generate: start from this export's weights "
                    "(e.g. BART from `dgr import`) instead of --preset's random ones")
      ->excludes(preset);
  train->add_option("--loss", d.loss, "distill: ranking loss: dgr, ltrgr, listnet, listmle, lambdaloss, kl, generation")
      ->check(CLI::IsMember({"dgr", "ltrgr", "listnet", "listmle", "lambdaloss", "kl", "generation"}));
  train->add_option("--margin", d.margin, "distill: DGR's M, LTRGR's top-pair margin (scale: docs/distillation.md)");
  train->add_option("--margin-step", d.margin_step, "distill: DGR's D, added per list position between a pair");
  train->add_option("--second-margin", d.second_margin, "distill: LTRGR's random-pair margin");
  train->add_option("--first-weight", d.first_weight, "distill: DGR's weight of pairs with the positive head (w_0)");
  train->add_option("--temperature", d.temperature, "distill: listwise losses divide the student's scores by it")
      ->check(more_than(0));
  train->add_option("--teacher-temperature", d.teacher_temperature, "distill: listnet and kl divide the teacher's scores by it")
      ->check(more_than(0));
  train->add_option("--gen-weight", d.gen_weight, "distill: weight of the generation loss (< 0: 500, LTRGR 1000)");
  train->add_option("--max-keys", d.max_keys, "distill: cached keys per passage re-scored by the surrogate")
      ->check(more_than(0));
  train->add_option("--gen-views", d.gen_views, "distill: generation targets from the top positive: title, body")
      ->delimiter(',');
  table[train] = [t, train](const World& world) {
    t->stage1.train.record = {command_line(), resolved_config_toml(*train), version_line()};
    return run_train(*t, world);
  };
}

void add_retrieve_command(CLI::App& app, CommandTable& table) {
  auto r = std::make_shared<RetrieveCommandOptions>();
  CLI::App* retrieve = app.add_subcommand("retrieve", "FM-index-constrained retrieval with an exported model: TREC runs "
                                                      "and the matched keys, queries sharded over the ranks");
  retrieve->add_option("--data", r->data_dir, "Data set directory");
  retrieve->add_option("--index", r->index_dir, "Index directory ('' = DATA/index)");
  retrieve->add_option("--model", r->model, "Export file (OUT/model.h5 of `dgr train`, or from `dgr export`)");
  retrieve->add_option("--split", r->splits, "Splits to retrieve (DATA/queries.SPLIT.tsv); repeatable");
  retrieve->add_option("--queries", r->queries, "A queries file (qid<TAB>text) instead of --split");
  retrieve->add_option("--out", r->out_dir, "Directory for run.NAME.trec and keys.NAME.jsonl ('' = the model's)");
  retrieve->add_option("--run", r->run_file, "Write the run (one --split or --queries) to this file instead of "
                       "OUT/run.NAME.trec (its settings beside it as FILE without .trec + .json)");
  retrieve->add_option("--tag", r->tag, "The run's tag column (TREC's last field)");
  retrieve->add_option("--round-size", r->round_size, "Queries per rank per round; each round is made durable in "
                       "RUN.partial, and a stopped or killed retrieval continues after the last one")->check(at_least(1));
  retrieve->add_flag("--any-index", r->any_index, "Retrieve with an index other than the one the model was trained "
                     "on (same tokenizer; refused otherwise)");
  add_retrieval_flags(*retrieve, r->settings);
  add_device_flags(*retrieve, r->device, false);
  retrieve->add_option("--max-queries", r->max_queries, "Only the first N queries of each split (0 = all)")->check(at_least(0));
  table[retrieve] = [r](const World& world) { return run_retrieve(*r, world); };
}

void add_export_command(CLI::App& app, CommandTable& table) {
  auto e = std::make_shared<ExportCommandOptions>();
  CLI::App* exp = app.add_subcommand("export", "Write a model-only HDF5 file from a committed checkpoint step, or "
                                               "(--format hf) a Hugging Face BART directory from an export file");
  exp->add_option("--checkpoints", e->checkpoints, "Checkpoint root (OUT/checkpoints) or one step directory");
  exp->add_option("--step", e->step, "Step to export (-1 = the newest committed)");
  exp->add_option("--out", e->out, "Export file to write (--format hf: the directory)");
  exp->add_option("--format", e->format, "dgr (an export file from a checkpoint) or hf (config.json, model.safetensors "
                  "and the tokenizer files, from --model; models in BART's form only)")
      ->check(CLI::IsMember({"dgr", "hf"}));
  exp->add_option("--model", e->model, "--format hf: the export file to convert");
  exp->add_flag("--force", e->force, "--format hf: replace the output directory if it exists");
  table[exp] = [e](const World& world) { return run_export(*e, world); };
}

int run_import(const ImportCommandOptions& opts, const World& world) {
  DGR_CHECK_AS(ConfigError, opts.format != "fairseq" || !opts.tokenizer_dir.empty(),
               "dgr import --format fairseq needs --tokenizer-dir (the BART tokenizer the model was trained with)");
  if (!world.is_root()) return 0;
  const auto report = opts.format == "hf" ? trainer::import_hf_bart(opts.from, opts.out)
                                          : trainer::import_fairseq_bart(opts.from, opts.tokenizer_dir, opts.out);
  std::cout << fmt::format("imported {} ({} tensors) into {} ({} arrays); model {}\n", opts.from, report.hf_tensors,
                           opts.out, report.weights, nlohmann::json::parse(report.model_config_json).at("model").dump());
  return 0;
}

void add_import_command(CLI::App& app, CommandTable& table) {
  auto o = std::make_shared<ImportCommandOptions>();
  CLI::App* imp = app.add_subcommand(
      "import", "Convert a pretrained BART (a Hugging Face directory, or a fairseq model.pt after "
      "scripts/fairseq-extract.py) into a dgr export file; retrieval with it needs an index made with BART's "
      "tokenizer, which dgr index does not make yet");
  imp->add_option("--format", o->format, "hf or fairseq")->required()->check(CLI::IsMember({"hf", "fairseq"}));
  imp->add_option("--from", o->from, "hf: the model directory (config.json, model.safetensors or pytorch_model.bin); "
                  "fairseq: the file scripts/fairseq-extract.py wrote")->required();
  imp->add_option("--tokenizer-dir", o->tokenizer_dir, "fairseq: the BART tokenizer directory (vocab.json, merges.txt)");
  imp->add_option("--out", o->out, "Export file to write")->required();
  table[imp] = [o](const World& world) { return run_import(*o, world); };
}

}  // namespace

void add_train_commands(CLI::App& app, CommandTable& table) {
  add_train_command(app, table);
  add_retrieve_command(app, table);
  add_export_command(app, table);
  add_import_command(app, table);
}

}  // namespace dgr::launcher
