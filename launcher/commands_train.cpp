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
#include "checkpoints/store.h"
#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "launcher/commands.h"
#include "launcher/startup.h"
#include "retrieval/bm25.h"
#include "retrieval/index_dir.h"
#include "retrieval/metrics.h"
#include "data/readers.h"
#include "data/trec.h"
#include "trainer/exported_model.h"
#include "trainer/retrieve_queries.h"
#include "trainer/stage1.h"
#include "trainer/stage2.h"

namespace fs = std::filesystem;

namespace dgr::launcher {
namespace {

struct TrainCommandOptions {
  std::string stage = "generate";
  std::vector<std::string> views = {"title", "body"};
  trainer::Stage1Options stage1;  // also holds the flags both stages share
  trainer::Stage2Options stage2;  // the distillation-only flags
};

struct RetrieveCommandOptions {
  std::string data_dir = "data/debian-tiny";
  std::string index_dir;  // "" = DATA/index
  std::string model;      // export file
  std::vector<std::string> splits = {"dev", "test"};
  std::string queries;    // a queries file instead of --split
  std::string out_dir;    // "" = directory of the model
  int threads = 0;
  int max_queries = 0;
  std::string device = "auto";  // auto | cpu | cuda (trainer/device.h)
  trainer::RetrievalSettings settings;
};

struct ExportCommandOptions {
  std::string checkpoints;  // a checkpoint root (OUT/checkpoints) or one step directory
  int64_t step = -1;        // -1 = newest committed
  std::string out;
};

// Stage 2 takes the shared flags from stage 1's options where they were given (on the command line or in
// the config file), and its own defaults otherwise (a few epochs at a small learning rate).
int run_distill(const TrainCommandOptions& opts, const CLI::App& app, const World& world) {
  trainer::Stage2Options o = opts.stage2;
  const auto& s = opts.stage1;
  auto given = [&](const char* flag) { return app.get_option(flag)->count() > 0; };
  o.data_dir = s.data_dir;
  o.index_dir = s.index_dir;
  if (given("--out")) o.out_dir = s.out_dir;
  if (given("--dropout")) o.dropout = s.dropout;
  if (given("--epochs")) o.epochs = s.epochs;
  if (given("--max-steps")) o.max_steps = s.max_steps;
  if (given("--batch")) o.global_batch = s.global_batch;
  if (given("--lr")) o.lr = s.lr;
  if (given("--beta2")) o.beta2 = s.beta2;
  if (given("--weight-decay")) o.weight_decay = s.weight_decay;
  if (given("--warmup")) o.warmup = s.warmup;
  if (given("--decay")) o.decay = s.decay;
  if (given("--clip")) o.clip = s.clip;
  if (given("--label-smoothing")) o.label_smoothing = s.label_smoothing;
  if (given("--eval-every")) o.eval_every = s.eval_every;
  DGR_CHECK_AS(ConfigError, !given("--ema-decay"), "--ema-decay applies to --stage generate only");
  o.seed = s.seed;
  o.save_every = s.save_every;
  o.keep_last = s.keep_last;
  o.async_save = s.async_save;
  o.resume = s.resume;
  o.eval_splits = s.eval_splits;
  o.eval_max_queries = s.eval_max_queries;
  o.retrieval = s.retrieval;
  o.comm_backend = s.comm_backend;
  o.comm_timeout_s = s.comm_timeout_s;
  o.bucket_mib = s.bucket_mib;
  o.piece_mib = s.piece_mib;
  o.device = s.device;
  o.precision = s.precision;
  o.progress_every_s = s.progress_every_s;
  o.threads = threads_per_rank(s.threads, world);
  return trainer::run_stage2(o, world);
}

int run_train(TrainCommandOptions opts, const CLI::App& app, const World& world) {
  if (opts.stage == "distill") return run_distill(opts, app, world);
  for (bool& v : opts.stage1.data.views) v = false;
  for (const auto& name : opts.views) opts.stage1.data.views[static_cast<int>(retrieval::parse_view(name))] = true;
  opts.stage1.threads = threads_per_rank(opts.stage1.threads, world);
  return trainer::run_stage1(opts.stage1, world);
}

int run_retrieve(const RetrieveCommandOptions& opts, const World& world) {
  DGR_CHECK_AS(ConfigError, !opts.model.empty(), "dgr retrieve needs --model (an export file from `dgr train` or `dgr export`)");
  auto log = log::get("retrieve");
  const fs::path data(opts.data_dir);
  const std::string index_path = opts.index_dir.empty() ? (data / "index").string() : opts.index_dir;
  auto index = retrieval::load_index_dir(index_path);
  const trainer::DeviceChoice device = trainer::resolve_device(opts.device, world);
  trainer::make_current(device);
  trainer::ExportedScorer exported =
      trainer::load_exported_scorer(opts.model, threads_per_rank(opts.threads, world), device);
  if (exported.tokenizer_sha256 != index.tokenizer.sha256() && world.is_root()) {
    log->warn("{} was trained with another tokenizer (sha256 {}) than {} has ({}): results will be meaningless; "
              "use the index the model was trained with", opts.model, exported.tokenizer_sha256, index_path,
              index.tokenizer.sha256());
  }
  const std::string out_dir = opts.out_dir.empty() ? fs::path(opts.model).parent_path().string() : opts.out_dir;
  std::vector<std::pair<std::string, std::string>> jobs;  // (name, queries file)
  if (!opts.queries.empty()) {
    jobs.emplace_back(fs::path(opts.queries).stem().string(), opts.queries);
  } else {
    for (const auto& split : opts.splits) jobs.emplace_back(split, (data / ("queries." + split + ".tsv")).string());
  }
  std::unique_ptr<data::Corpus> corpus;
  for (const auto& [name, path] : jobs) {
    const auto all_queries = data::read_queries(path);
    auto queries = all_queries;
    if (opts.max_queries > 0 && queries.size() > static_cast<size_t>(opts.max_queries))
      queries.resize(static_cast<size_t>(opts.max_queries));
    std::vector<std::string> keys;
    trainer::RetrievalStats stats;
    auto run = trainer::retrieve_queries(*exported.scorer, index, queries, opts.settings, exported.limits, world, "dgr",
                                         &keys, &stats);
    if (!world.is_root()) continue;
    fs::create_directories(out_dir.empty() ? "." : out_dir);
    const std::string run_path = (fs::path(out_dir) / ("run." + name + ".trec")).string();
    const std::string keys_path = (fs::path(out_dir) / ("keys." + name + ".jsonl")).string();
    data::write_trec_run(run_path, run);
    {
      files::AtomicFile file(keys_path);
      for (const auto& line : keys) file.write(line + "\n");
      file.commit();
    }
    std::string line = fmt::format("dgr {} ({}): {} queries, {:.1f} queries/s on {} ranks", name, run_path, stats.queries,
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
  DGR_CHECK_AS(ConfigError, !opts.checkpoints.empty() && !opts.out.empty(), "dgr export needs --checkpoints and --out");
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

}  // namespace

void add_train_commands(CLI::App& app, CommandTable& table) {
  auto t = std::make_shared<TrainCommandOptions>();
  auto& s = t->stage1;
  CLI::App* train = app.add_subcommand("train", "Train the generative retriever, data-parallel over the ranks of the job: "
                                                "stage 'generate' (MINDER stage 1) or 'distill' (DGR stage 2)");
  train->add_option("--stage", t->stage, "Training stage: generate (stage 1) or distill (stage 2, from a stage-1 model)")
      ->check(CLI::IsMember({"generate", "distill"}));
  train->add_option("--data", s.data_dir, "Data set directory (corpus.tsv, queries/qrels.{train,dev,test}.tsv)");
  train->add_option("--index", s.index_dir, "Index directory from `dgr index` ('' = DATA/index)");
  train->add_option("--out", s.out_dir, "Run directory: OUT/checkpoints, OUT/model.h5, OUT/train.jsonl");
  train->add_option("--preset", s.preset, "Model preset: test, cpu, bart-base, bart-large");
  train->add_option("--dropout", s.dropout, "Dropout (< 0: the preset's)");
  train->add_option("--views", t->views, "Identifier views to train: title, body, pq")->delimiter(',');
  train->add_option("--epochs", s.epochs, "Epochs over the stage-1 pairs")->check(CLI::PositiveNumber);
  train->add_option("--max-steps", s.max_steps, "Stop after this many optimizer steps (0 = all epochs)");
  train->add_option("--progress-every-s", s.progress_every_s, "Seconds between progress lines on rank 0 in a log file "
                    "or pipe (a bar on a terminal; 0 = off; docs/monitoring.md)")->check(CLI::NonNegativeNumber);
  train->add_option("--batch", s.global_batch, "Pairs per optimizer step over all ranks")->check(CLI::PositiveNumber);
  train->add_option("--lr", s.lr, "Peak learning rate (AdamW)")->check(CLI::PositiveNumber);
  train->add_option("--beta2", s.beta2, "AdamW beta2");
  train->add_option("--weight-decay", s.weight_decay, "AdamW weight decay");
  train->add_option("--warmup", s.warmup, "Warmup as a fraction of all steps (then linear decay)")->check(CLI::Range(0.0, 1.0));
  train->add_option("--decay", s.decay, "Learning rate after warmup: linear (to 0) or constant")->check(CLI::IsMember({"linear", "constant"}));
  train->add_option("--clip", s.clip, "Gradient norm clipping (0 = off)");
  train->add_option("--label-smoothing", s.label_smoothing, "Label smoothing of the cross-entropy")->check(CLI::Range(0.0, 1.0));
  train->add_option("--seed", s.seed, "Seed of the model init, the data order and the pairs");
  train->add_option("--threads", s.threads, "LibTorch threads per rank (0 = the node's cores / ranks on the node)");
  train->add_option("--title-copies", s.data.title_copies, "Title pairs per training query per epoch");
  train->add_option("--body-spans", s.data.body_spans, "Body-span pairs per training query per epoch");
  train->add_option("--pq-copies", s.data.pq_copies, "Pseudo-query pairs per training query per epoch");
  train->add_option("--indexing-pairs", s.data.indexing_pairs, "Indexing pairs per passage per view per epoch");
  train->add_option("--indexing-source-min", s.data.indexing_source_min, "Shortest body window used as an indexing source");
  train->add_option("--indexing-source-max", s.data.indexing_source_max, "Longest body window used as an indexing source");
  train->add_option("--indexing-prefix-probability", s.data.indexing_prefix_probability,
                    "Probability that an indexing source starts at the first body token")->check(CLI::Range(0.0, 1.0));
  train->add_option("--save-every", s.save_every, "Steps between checkpoints (0 = once per epoch)");
  train->add_option("--keep-last", s.keep_last, "Committed checkpoints to keep (0 = all)");
  train->add_flag("!--sync-save", s.async_save, "Write checkpoints in the training thread (default: in the background)");
  train->add_flag("!--no-resume", s.resume, "Start from scratch even when OUT/checkpoints has a committed step");
  train->add_option("--eval-every", s.eval_every, "Epochs between retrieval evaluations (0 = at the end only)");
  train->add_option("--eval-split", s.eval_splits, "Splits evaluated during training; repeatable");
  train->add_option("--eval-max-queries", s.eval_max_queries, "Queries per evaluated split (0 = all)");
  train->add_option("--eval-views", s.retrieval.views, "Views searched when evaluating")->delimiter(',');
  train->add_option("--beam", s.retrieval.beam, "Beam size when evaluating")->check(CLI::PositiveNumber);
  train->add_flag("!--no-ngram-keys", s.retrieval.ngram_keys, "Evaluate without the query n-gram keys (body view)");
  train->add_flag("!--no-unigram-keys", s.retrieval.unigram_keys, "Evaluate without the unigram keys");
  train->add_option("--comm", s.comm_backend, "Gradient allreduce: ring, mpi, nccl")->check(CLI::IsMember({"ring", "mpi", "nccl"}));
  train->add_option("--comm-timeout", s.comm_timeout_s, "Seconds before a collective that does not complete ends the job");
  train->add_option("--ema-decay", s.ema_decay, "generate: evaluate and export an exponential moving average of "
                    "the weights with this decay, e.g. 0.999 (Marian's exponential smoothing; 0 = off)")
      ->check(CLI::Range(0.0, 0.999999));
  train->add_option("--bucket-mib", s.bucket_mib, "Gradient bucket size in MiB after the first 1 MiB bucket (as DDP's "
                    "bucket_cap_mb)")->check(CLI::PositiveNumber);
  train->add_option("--piece-mib", s.piece_mib, "Allreduce a bucket in pieces of this many MiB as its gradients "
                    "become ready (0 = whole buckets; default: 4 with nccl, whole buckets on the CPU)")
      ->check(CLI::NonNegativeNumber)
      ->default_str("auto");
  train->add_option("--device", s.device, kDeviceHelp)->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  train->add_option("--precision", s.precision, "fp32, or bf16: autocast to bfloat16 for forward and loss on CUDA "
                    "(weights, optimizer and gradient allreduce stay fp32)")->check(CLI::IsMember({"fp32", "bf16"}));
  auto& d = t->stage2;
  train->add_option("--prepared", d.prepared_dir, "distill: the prepared distillation data set (`dgr prepare`)");
  train->add_option("--init-model", d.init_model, "distill: the stage-1 export the student starts from");
  train->add_option("--loss", d.loss, "distill: ranking loss: dgr, ltrgr, listnet, listmle, lambdaloss, kl, generation")
      ->check(CLI::IsMember({"dgr", "ltrgr", "listnet", "listmle", "lambdaloss", "kl", "generation"}));
  train->add_option("--margin", d.margin, "distill: DGR's M, LTRGR's top-pair margin (scale: docs/distillation.md)");
  train->add_option("--margin-step", d.margin_step, "distill: DGR's D, added per list position between a pair");
  train->add_option("--second-margin", d.second_margin, "distill: LTRGR's random-pair margin");
  train->add_option("--first-weight", d.first_weight, "distill: DGR's weight of pairs with the positive head (w_0)");
  train->add_option("--temperature", d.temperature, "distill: listwise losses divide the student's scores by it")
      ->check(CLI::PositiveNumber);
  train->add_option("--teacher-temperature", d.teacher_temperature, "distill: listnet and kl divide the teacher's scores by it")
      ->check(CLI::PositiveNumber);
  train->add_option("--gen-weight", d.gen_weight, "distill: weight of the generation loss (< 0: 500, LTRGR 1000)");
  train->add_option("--max-keys", d.max_keys, "distill: cached keys per passage re-scored by the surrogate")
      ->check(CLI::PositiveNumber);
  train->add_option("--gen-views", d.gen_views, "distill: generation targets from the top positive: title, body")
      ->delimiter(',');
  table[train] = [t, train](const World& world) { return run_train(*t, *train, world); };

  auto r = std::make_shared<RetrieveCommandOptions>();
  CLI::App* retrieve = app.add_subcommand("retrieve", "FM-index-constrained retrieval with an exported model: TREC runs "
                                                      "and the matched keys, queries sharded over the ranks");
  retrieve->add_option("--data", r->data_dir, "Data set directory");
  retrieve->add_option("--index", r->index_dir, "Index directory ('' = DATA/index)");
  retrieve->add_option("--model", r->model, "Export file (OUT/model.h5 of `dgr train`, or from `dgr export`)");
  retrieve->add_option("--split", r->splits, "Splits to retrieve (DATA/queries.SPLIT.tsv); repeatable");
  retrieve->add_option("--queries", r->queries, "A queries file (qid<TAB>text) instead of --split");
  retrieve->add_option("--out", r->out_dir, "Directory for run.NAME.trec and keys.NAME.jsonl ('' = the model's)");
  retrieve->add_option("--views", r->settings.views, "Views to search: title, body, pq")->delimiter(',');
  retrieve->add_option("--beam", r->settings.beam, "Beam size")->check(CLI::PositiveNumber);
  retrieve->add_option("--depth", r->settings.top_k, "Passages per query")->check(CLI::PositiveNumber);
  retrieve->add_flag("!--no-ngram-keys", r->settings.ngram_keys, "Without the query n-gram keys (body view)");
  retrieve->add_flag("!--no-unigram-keys", r->settings.unigram_keys, "Without the unigram keys");
  retrieve->add_option("--threads", r->threads, "LibTorch threads per rank (0 = the node's cores / ranks on the node)");
  retrieve->add_option("--device", r->device, kDeviceHelp)->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  retrieve->add_option("--max-queries", r->max_queries, "Only the first N queries of each split (0 = all)");
  table[retrieve] = [r](const World& world) { return run_retrieve(*r, world); };

  auto e = std::make_shared<ExportCommandOptions>();
  CLI::App* exp = app.add_subcommand("export", "Write a model-only HDF5 file from a committed checkpoint step");
  exp->add_option("--checkpoints", e->checkpoints, "Checkpoint root (OUT/checkpoints) or one step directory");
  exp->add_option("--step", e->step, "Step to export (-1 = the newest committed)");
  exp->add_option("--out", e->out, "Export file to write");
  table[exp] = [e](const World& world) { return run_export(*e, world); };
}

}  // namespace dgr::launcher
