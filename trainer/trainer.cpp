// The Trainer (trainer.h): one loop for every stage; the stages' Objectives say what differs.
#include "trainer/trainer.h"

#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>

#include <fmt/ranges.h>

#include "checkpoints/store.h"
#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "common/signals.h"
#include "retrieval/metrics.h"
#include "trainer/adamw.h"
#include "trainer/cpu_allocator.h"
#include "trainer/exported_model.h"
#include "trainer/gradient_reducer.h"
#include "trainer/model_scorer.h"
#include "trainer/placement.h"
#include "trainer/progress.h"
#include "trainer/retrieve_queries.h"
#include "trainer/run_common.h"
#include "trainer/stop.h"
#include "trainer/train_state.h"
#include "trainer/weight_average.h"

namespace fs = std::filesystem;

namespace dgr::trainer {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// The shared options as they go into OUT/config.json and every checkpoint (the stage adds its own).
nlohmann::json train_options_json(const TrainOptions& o, const DeviceChoice& device) {
  return {{"data_dir", o.data_dir}, {"index_dir", o.index_dir}, {"seed", o.seed}, {"dropout", o.dropout},
          {"label_smoothing", o.label_smoothing}, {"ema_decay", o.ema_decay}, {"epochs", o.schedule.epochs},
          {"global_batch", o.schedule.global_batch}, {"warmup", o.schedule.warmup}, {"decay", o.schedule.decay},
          {"max_steps", o.schedule.max_steps}, {"lr", o.optimizer.lr}, {"beta1", o.optimizer.beta1},
          {"beta2", o.optimizer.beta2}, {"eps", o.optimizer.eps}, {"weight_decay", o.optimizer.weight_decay},
          {"clip", o.optimizer.clip}, {"device", device.kind()}, {"precision", o.device.precision},
          {"comm", o.comm.backend}, {"bucket_mib", o.comm.bucket_mib}, {"piece_mib", o.comm.piece_mib}};
}

// "step=40/120 epoch=1.00 loss=2.3141 lr=2.00e-03 ..." (the order of `fields`).
std::string key_values(const Fields& fields) {
  std::string line;
  for (const auto& [key, value] : fields) {
    if (!line.empty()) line += ' ';
    line += key == "lr" ? fmt::format("{}={:.2e}", key, value) : fmt::format("{}={:.4g}", key, value);
  }
  return line;
}

}  // namespace

DeviceChoice prepare_run(const TrainOptions& options, const World& world) {
  if (options.device.threads > 0) torch::set_num_threads(options.device.threads);
  install_caching_cpu_allocator();  // Note [CPU page faults]
  return prepare_training_device(options.device.device, options.device.precision, options.comm.backend, world);
}

IndexedCorpus load_indexed_corpus(const TrainOptions& options) {
  const fs::path data(options.data_dir);
  const std::string corpus_path = (data / "corpus.tsv").string();
  const std::string index_path = options.index_dir.empty() ? (data / "index").string() : options.index_dir;
  data::Corpus corpus = data::read_corpus(corpus_path);
  retrieval::IndexDir index = retrieval::load_index_dir(index_path);
  // load_index_dir verified fm_index.bin against this checksum already.
  std::string sha256 = nlohmann::json::parse(index.manifest_json).at("fm_index_sha256").get<std::string>();
  IndexedCorpus out{index_path, std::move(sha256), std::move(index), std::move(corpus), {}};
  DGR_CHECK_AS(DataError, out.index.pids.size() == out.corpus.passages.size(),
               "{} indexes {} passages but {} has {}: rebuild the index with `dgr index --data {}`", out.index_path,
               out.index.pids.size(), corpus_path, out.corpus.passages.size(), options.data_dir);
  out.passages.resize(out.index.pids.size());
  for (size_t d = 0; d < out.index.pids.size(); ++d) {
    auto it = out.corpus.index_of.find(out.index.pids[d]);
    DGR_CHECK_AS(DataError, it != out.corpus.index_of.end(), "{}: passage '{}' is not in {}: rebuild the index",
                 out.index_path, out.index.pids[d], corpus_path);
    out.passages[d] = retrieval::tokenize_passage(out.index.tokenizer, out.corpus.passages[it->second]);
  }
  return out;
}

torch::Tensor pad_batch(const std::vector<const std::vector<int32_t>*>& sequences, int64_t pad, bool pinned) {
  size_t longest = 1;
  for (const auto* s : sequences) longest = std::max(longest, s->size());
  torch::Tensor out = torch::full({static_cast<int64_t>(sequences.size()), static_cast<int64_t>(longest)}, pad,
                                  torch::TensorOptions(torch::kInt64).pinned_memory(pinned));
  auto a = out.accessor<int64_t, 2>();
  for (size_t i = 0; i < sequences.size(); ++i)
    for (size_t t = 0; t < sequences[i]->size(); ++t)
      a[static_cast<int64_t>(i)][static_cast<int64_t>(t)] = (*sequences[i])[t];
  return out;
}

// Sums of a log window: the objective's statistics and counts, examples, steps and the reducer's times.
struct Window {
  std::vector<double> statistics, counts;
  double examples = 0, backward_ms = 0, communication_ms = 0, exposed_ms = 0;
  int64_t steps = 0;
  Clock::time_point start = Clock::now();
  void add(const std::vector<double>& step_statistics, const std::vector<double>& step_counts, double step_examples,
           const ReducerTimers& timers) {
    statistics.resize(step_statistics.size());
    counts.resize(step_counts.size());
    for (size_t i = 0; i < step_statistics.size(); ++i) statistics[i] += step_statistics[i];
    for (size_t i = 0; i < step_counts.size(); ++i) counts[i] += step_counts[i];
    examples += step_examples;
    backward_ms += timers.backward_ms;
    communication_ms += timers.communication_ms;
    exposed_ms += timers.exposed_ms;
    ++steps;
  }
  void reset() {
    std::fill(statistics.begin(), statistics.end(), 0.0);
    std::fill(counts.begin(), counts.end(), 0.0);
    examples = backward_ms = communication_ms = exposed_ms = 0;
    steps = 0;
    start = Clock::now();
  }
};

struct Trainer::State {
  const TrainOptions& options;
  const World& world;
  DeviceChoice device;
  std::shared_ptr<Seq2Seq> model;
  const IndexedCorpus& data;
  StageInfo stage;
  Objective& objective;
  std::shared_ptr<spdlog::logger> log = log::get("train");
  Clock::time_point start = Clock::now();
  torch::optim::AdamW optimizer;
  std::unique_ptr<comm::Communicator> communicator;  // gradients and the step's small collectives
  std::unique_ptr<comm::Communicator> control;       // host memory: evaluation's gathers (comm/communicator.h)
  std::unique_ptr<GradientReducer> reducer;
  std::vector<torch::Tensor> parameters;
  sharding::EpochSampler sampler;
  int64_t total_steps = 0, warmup_steps = 0, save_every = 0, eval_every = 0;
  nlohmann::json export_section;
  std::string config_json;
  std::unique_ptr<checkpoints::Store> store;
  std::unique_ptr<WeightAverage> average;
  ExtraTensors extras;
  TrainProgress progress;
  std::vector<EvalSet> eval_sets;
  std::ofstream jsonl;

  State(const TrainOptions& o, const World& w, const DeviceChoice& d, std::shared_ptr<Seq2Seq> m,
        const IndexedCorpus& c, StageInfo s, Objective& obj)
      : options(o), world(w), device(d), model(std::move(m)), data(c),
        stage(std::move(s)), objective(obj),
        optimizer(model->parameters(), torch::optim::AdamWOptions(o.optimizer.lr)
                                           .betas({o.optimizer.beta1, o.optimizer.beta2})
                                           .eps(o.optimizer.eps)
                                           .weight_decay(o.optimizer.weight_decay)),
        communicator(make_train_communicator(o.comm.backend, o.comm.timeout_s, w)),
        sampler(obj.num_examples(), o.schedule.global_batch, o.seed, w.rank(), w.size()) {}

  double epoch() const {
    return static_cast<double>(progress.step) / static_cast<double>(sampler.steps_per_epoch());
  }
  struct GradientNorms {
    double total = 0, part = 0, rest = 0;
  };
  std::vector<torch::Tensor> local_part_gradients(const torch::Tensor& part);
  GradientNorms split_gradient_norms(const std::vector<torch::Tensor>& part_gradients);
  void plan_steps();
  void write_config();
  void set_aside_previous_run();
  void set_aside_steps_after(int64_t step);
  std::string resume_mode();  // "" (auto), "never", or the step directory to resume from
  void record_attempt();
  void setup_best();
  void keep_if_best(double value);
  std::string best_split, best_metric;  // --keep-best (Note [Best model])
  double best_value = -std::numeric_limits<double>::infinity();
  int64_t best_step = -1;
  int64_t attempt = 0;  // rank 0: this start's number in OUT/attempts
  void open_checkpoints();
  double step(const sharding::EpochSampler::Step& batch, double lr, Window& window);
  void evaluate(const std::string& when, Progress& meter);
  void log_window(Window& window, double lr);
  int stop();
  int finish(Progress& meter);
};

void Trainer::State::plan_steps() {
  const auto per_epoch = static_cast<double>(sampler.steps_per_epoch());
  const ScheduleOptions& s = options.schedule;
  total_steps = std::max<int64_t>(1, s.max_steps > 0 ? s.max_steps : static_cast<int64_t>(std::ceil(s.epochs * per_epoch)));
  warmup_steps = static_cast<int64_t>(s.warmup * static_cast<double>(total_steps));
  save_every = options.checkpoint.save_every > 0 ? options.checkpoint.save_every : sampler.steps_per_epoch();
  eval_every = options.eval.every > 0
                   ? std::max<int64_t>(1, static_cast<int64_t>(std::llround(options.eval.every * per_epoch)))
                   : total_steps;
}

// OUT/config.json and the checkpoints' config: the options, and what an export of any step needs (`dgr export`).
void Trainer::State::write_config() {
  export_section = {{"model_config", {{"model", nlohmann::json::parse(model->config().to_json_string())},
                                      {"view_limits", nlohmann::json::parse(view_limits_json(stage.limits))},
                                      {"trained_views", stage.trained_views}}},
                    {"tokenizer_id", data.index.tokenizer.path()}, {"tokenizer_sha256", data.index.tokenizer.sha256()},
                    {"index_id", data.index_path}, {"index_sha256", data.index_sha256}};
  nlohmann::json train = train_options_json(options, device);
  train["eval"] = {{"every", options.eval.every}, {"splits", options.eval.splits},
                   {"max_queries", options.eval.max_queries},
                   {"retrieval", retrieval_settings_json(options.eval.retrieval)}};
  train.update(stage.options);
  config_json = nlohmann::json{{"train", train}, {"export", export_section}}.dump();
  save_effective_config(options.out_dir, config_json, world);
}

// --no-resume into an OUT that holds a run: its checkpoints and train.jsonl are renamed aside (with the time),
// so that neither a later resume nor `dgr export` can take the old run's steps (pruning keeps the highest step
// numbers) and the new log does not continue the old one. Nothing is deleted.
void Trainer::State::set_aside_previous_run() {
  if (world.is_root()) {
    const std::time_t now = std::time(nullptr);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", std::gmtime(&now));
    const fs::path out(options.out_dir);
    for (const fs::path& previous : {out / "checkpoints", out / "train.jsonl", out / "model.best.h5", out / "best.json"}) {
      std::error_code ec;
      if (!fs::exists(previous) || (fs::is_directory(previous) && fs::is_empty(previous))) continue;
      fs::path target = previous;
      target += std::string(".replaced-") + stamp;
      for (int n = 1; fs::exists(target); ++n) target = fs::path(previous.string() + ".replaced-" + stamp + "." + std::to_string(n));
      fs::rename(previous, target, ec);
      DGR_CHECK_AS(CheckpointError, !ec, "{}: --no-resume cannot move the previous run's files aside to {} ({}): "
                   "move or delete them yourself", previous.string(), target.string(), ec.message());
      log->warn("--no-resume: the previous run's {} is now {} (delete it when it is no longer needed)",
                previous.string(), target.string());
    }
  }
  control->barrier();
}

// Note [Resume modes]: what `dgr train --resume` does with OUT (the issue of Why 5: a resume must never pick
// another run's step).
//  - auto (default): continue from the newest committed step of OUT/checkpoints, or start when there is none.
//  - never: start; an OUT that already holds a run (a committed step or train.jsonl) is refused, unless
//    --force moves it aside (set_aside_previous_run). --no-resume is `never` with --force.
//  - PATH, a committed step directory: continue from it. Inside OUT/checkpoints, the steps after it are moved
//    aside (so pruning and a later `auto` cannot return to them); elsewhere (another run's step), OUT must hold
//    no run, or --force moves it aside. The configs are compared as for `auto` (check_resume_config).
std::string Trainer::State::resume_mode() {
  const CheckpointOptions& c = options.checkpoint;
  const fs::path out(options.out_dir), checkpoints_dir = out / "checkpoints";
  // Rank 0 looks (the others may see OUT only after rank 0 has moved things aside) and tells them.
  std::string seen = world.is_root() && (!checkpoints::committed_steps(checkpoints_dir.string()).empty() ||
                                         fs::exists(out / "train.jsonl")) ? "1" : "0";
  control->broadcast_bytes(seen, 0);
  const bool has_run = seen == "1";
  if (!c.resume || c.resume_from == "never") {
    DGR_CHECK_AS(ConfigError, !has_run || c.force || !c.resume,
                 "{} already holds a run (committed checkpoints or train.jsonl), which --resume never does not touch: "
                 "pass --force to move it aside and start over, --resume auto to continue it, or choose another --out",
                 options.out_dir);
    if (has_run) set_aside_previous_run();
    return "never";
  }
  if (c.resume_from == "auto") return "";
  const fs::path step = fs::weakly_canonical(c.resume_from);
  DGR_CHECK_AS(ConfigError, fs::exists(step / "COMMITTED"), "--resume {}: not a committed step directory (one of "
               "OUT/checkpoints/step-N with a COMMITTED marker); use auto, never, or such a directory", c.resume_from);
  std::error_code ec;
  const bool inside = fs::exists(checkpoints_dir) &&
                      fs::equivalent(step.parent_path(), fs::weakly_canonical(checkpoints_dir), ec);
  if (inside) {
    const std::string name = step.filename().string();
    const int64_t from = std::stoll(name.substr(name.find('-') + 1));
    set_aside_steps_after(from);
  } else if (has_run) {
    DGR_CHECK_AS(ConfigError, c.force, "--resume {}: {} already holds another run; pass --force to move it aside, or "
                 "choose another --out", c.resume_from, options.out_dir);
    set_aside_previous_run();
  }
  return step.string();
}

// Rank 0: moves OUT/checkpoints/step-N for N > `step` into OUT/checkpoints.replaced-TIME/ (nothing deleted).
void Trainer::State::set_aside_steps_after(int64_t step) {
  if (world.is_root()) {
    const fs::path dir = fs::path(options.out_dir) / "checkpoints";
    const std::time_t now = std::time(nullptr);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", std::gmtime(&now));
    const fs::path aside = fs::path(dir.string() + ".replaced-" + stamp);
    for (const int64_t later : checkpoints::committed_steps(dir.string())) {
      if (later <= step) continue;
      std::error_code ec;
      fs::create_directories(aside, ec);
      fs::rename(dir / checkpoints::step_dir_name(later), aside / checkpoints::step_dir_name(later), ec);
      DGR_CHECK_AS(CheckpointError, !ec, "--resume: cannot move {} aside to {} ({}): move it yourself",
                   (dir / checkpoints::step_dir_name(later)).string(), aside.string(), ec.message());
      log->warn("--resume from step {}: the later step {} is now in {}", step, later, aside.string());
    }
  }
  control->barrier();
}

// Note [Run directory]: rank 0 numbers each start of `dgr train` with the same OUT (an attempt: the first run,
// every resume, every requeue) and writes OUT/attempts/attempt-N.json (UTC start time, command line, working
// directory, host, world size, Slurm job and restart count, the step it starts from, dgr's version, git commit
// and libraries) and OUT/attempts/attempt-N.toml (every option's resolved value: `dgr --config
// OUT/attempts/attempt-N.toml train` runs it again); every train.jsonl line carries "attempt": N.
void Trainer::State::record_attempt() {
  if (!world.is_root()) return;
  const fs::path dir = fs::path(options.out_dir) / "attempts";
  fs::create_directories(dir);
  int64_t n = 1;
  while (fs::exists(dir / ("attempt-" + std::to_string(n) + ".json"))) ++n;
  attempt = n;
  auto env = [](const char* name) { const char* v = std::getenv(name); return std::string(v ? v : ""); };
  std::error_code ec;
  const nlohmann::ordered_json record = {
      {"attempt", n}, {"time", utc_time_now()}, {"command_line", options.record.command_line},
      {"cwd", fs::current_path(ec).string()}, {"host", world.host()}, {"world_size", world.size()},
      {"slurm_job_id", env("SLURM_JOB_ID")}, {"slurm_restart_count", env("SLURM_RESTART_COUNT")},
      {"stage", stage.name}, {"start_step", progress.step}, {"resumed", progress.step > 0},
      {"versions", options.record.versions}};
  const std::string stem = (dir / ("attempt-" + std::to_string(n))).string();
  files::AtomicFile json_file(stem + ".json");
  json_file.write(record.dump(2) + "\n");
  json_file.commit();
  if (!options.record.resolved_toml.empty()) {
    files::AtomicFile toml_file(stem + ".toml");
    toml_file.write(options.record.resolved_toml);
    toml_file.commit();
  }
}

void Trainer::State::open_checkpoints() {
  const std::string from_step_dir = resume_mode();
  checkpoints::StoreOptions store_options;
  store_options.dir = (fs::path(options.out_dir) / "checkpoints").string();
  store_options.keep_last = options.checkpoint.keep_last;
  store_options.async = options.checkpoint.async_save;
  store = std::make_unique<checkpoints::Store>(store_options, world);
  if (options.ema_decay > 0) {
    average = std::make_unique<WeightAverage>(named_parameters(*model), options.ema_decay);
    extras = average->named_averages();
  }
  progress = resume_or_start(*store, from_step_dir != "never", options.seed, *model, optimizer, sampler, world.rank(),
                             world.size(), extras, config_json, from_step_dir == "never" ? "" : from_step_dir,
                             options.checkpoint.accept_changes);
}

// With --ema-decay the average is what is evaluated (Note [Weight averaging]): swapped in and out around it.
void Trainer::State::evaluate(const std::string& when, Progress& meter) {
  meter.pause();
  meter.clear();
  if (average) {
    store->wait_for_copies();  // swapping writes the parameters the checkpoint writer may still be copying
    average->swap();
  }
  model->eval();
  auto scorer = make_model_scorer(model);
  const auto results = evaluate_sets(*scorer, data.index, eval_sets, options.eval.retrieval, stage.limits, *control,
                                     {when.c_str(), progress.step, epoch(), seconds_since(start), attempt}, jsonl);
  if (!best_metric.empty() && world.is_root()) keep_if_best(results.at(best_split).at(best_metric));
  model->train();
  if (average) average->swap();
  meter.resume();
}

// Note [Best model]: with --keep-best SPLIT:METRIC, rank 0 compares every evaluation's value of the metric with
// the best so far (OUT/best.json: split, metric, value, step; kept across resumes when its step is not after
// the resumed one) and, when it is strictly higher, writes the evaluated model (the weight average with
// --ema-decay) to OUT/model.best.h5, then best.json; OUT/model.h5 stays the last model. Metrics are
// higher-is-better (R@k, MRR@k, nDCG@k).
void Trainer::State::setup_best() {
  const std::string& spec = options.eval.keep_best;
  if (spec.empty()) return;
  const size_t colon = spec.find(':');
  best_split = colon == std::string::npos ? (options.eval.splits.empty() ? "" : options.eval.splits.front())
                                          : spec.substr(0, colon);
  best_metric = colon == std::string::npos ? spec : spec.substr(colon + 1);
  const auto names = retrieval::metric_names();
  DGR_CHECK_AS(ConfigError, std::find(names.begin(), names.end(), best_metric) != names.end(),
               "--keep-best {}: unknown metric '{}' (one of {})", spec, best_metric, fmt::join(names, ", "));
  DGR_CHECK_AS(ConfigError, std::find(options.eval.splits.begin(), options.eval.splits.end(), best_split) !=
               options.eval.splits.end(), "--keep-best {}: split '{}' is not evaluated (--eval-split {})", spec,
               best_split, fmt::join(options.eval.splits, ","));
  if (!world.is_root() || progress.step == 0) return;
  const fs::path path = fs::path(options.out_dir) / "best.json";
  std::error_code ec;
  if (!fs::exists(path, ec)) return;
  const auto best = nlohmann::json::parse(files::read_all(path.string()), nullptr, /*allow_exceptions=*/false);
  if (best.is_object() && best.value("split", "") == best_split && best.value("metric", "") == best_metric &&
      best.value("step", int64_t{-1}) <= progress.step) {
    best_value = best.value("value", best_value);
    best_step = best.value("step", int64_t{-1});
    log->info("--keep-best: the best {} {} so far is {:.4f} at step {} (OUT/model.best.h5)", best_split, best_metric,
              best_value, best_step);
  }
}

void Trainer::State::keep_if_best(double value) {
  if (!(value > best_value)) return;
  best_value = value;
  best_step = progress.step;
  write_final_export(*model, options.out_dir, export_section["model_config"].dump(), data.index, data.index_path,
                     data.index_sha256, world, "model.best.h5");
  files::AtomicFile file((fs::path(options.out_dir) / "best.json").string());
  file.write(nlohmann::json{{"split", best_split}, {"metric", best_metric}, {"value", value}, {"step", best_step},
                            {"epoch", epoch()}, {"model", "model.best.h5"}, {"time", utc_time_now()}}
                 .dump(2) + "\n");
  file.commit();
  log->info("--keep-best: {} {} {:.4f} at step {} is the best so far: exported to {}/model.best.h5", best_split,
            best_metric, value, best_step, options.out_dir);
}

// Rank 0: one key=value line (losses, rates, the reducer's times per step) and one `train` event of
// OUT/train.jsonl (losses, lr, examples/s, elapsed seconds) for the window's steps.
void Trainer::State::log_window(Window& window, double lr) {
  const double seconds = seconds_since(window.start), steps = static_cast<double>(std::max<int64_t>(1, window.steps));
  Fields event = objective.window_fields(window.statistics, window.counts, window.examples);
  event.insert(event.end(), {{"lr", lr}, {"examples_per_s", window.examples / seconds}});
  Fields line = event;
  for (const auto& rate : objective.window_rates(window.statistics, window.counts, seconds)) line.push_back(rate);
  line.insert(line.end(), {{"backward_ms", window.backward_ms / steps}, {"comm_ms", window.communication_ms / steps},
                           {"exposed_ms", window.exposed_ms / steps}, {"elapsed_s", seconds_since(start)}});
  event.emplace_back("elapsed_s", seconds_since(start));
  log->info("step={}/{} epoch={:.2f} {}", progress.step, total_steps, epoch(), key_values(line));
  nlohmann::json json = {{"event", "train"}, {"step", progress.step}, {"epoch", epoch()}, {"time", utc_time_now()},
                         {"attempt", attempt}};
  for (const auto& [key, value] : event) json[key] = value;
  jsonl << json.dump() << "\n" << std::flush;
}

Trainer::Trainer(const TrainOptions& options, const World& world, const DeviceChoice& device,
                 std::shared_ptr<Seq2Seq> model, const IndexedCorpus& data, StageInfo stage, Objective& objective)
    : s_(std::make_unique<State>(options, world, device, std::move(model), data, std::move(stage), objective)) {
  State& s = *s_;
  s.control = comm::make_host_communicator(world);
  s.reducer = std::make_unique<GradientReducer>(named_parameters(*s.model), *s.communicator,
                                                reducer_options_from_mib(options.comm.bucket_mib, options.comm.piece_mib));
  s.parameters = s.model->parameters();
  s.plan_steps();
  if (world.is_root()) {
    int64_t count = 0;
    for (auto& p : s.parameters) count += p.numel();
    s.log->info("{}: {} steps of {} examples ({} per epoch), {} parameters, {} ranks x {} threads, device {} ({}), "
                "model {}", s.stage.name, s.total_steps, options.schedule.global_batch, objective.num_examples(), count,
                world.size(), torch::get_num_threads(), device.kind(), options.device.precision,
                s.model->config().to_json_string());
  }
  check_searched_views_trained(options.eval.retrieval, s.stage.trained_views, "the model of this run");
  s.write_config();
  s.open_checkpoints();
  s.record_attempt();
  s.eval_sets = load_eval_sets(options.data_dir, options.eval.splits, options.eval.max_queries, data.corpus);
  s.setup_best();
  if (world.is_root()) {
    fs::create_directories(options.out_dir);
    s.jsonl.open(fs::path(options.out_dir) / "train.jsonl", std::ios::app);
    // Every run (a resume too) starts with this line: the file may hold several runs of the same OUT, and
    // elapsed_s counts from each run's start.
    s.jsonl << nlohmann::json{{"event", "start"}, {"step", s.progress.step}, {"stage", s.stage.name},
                              {"time", utc_time_now()}, {"ranks", world.size()}, {"resumed", s.progress.step > 0},
                              {"attempt", s.attempt}}
                   .dump()
            << "\n" << std::flush;
  }
}

Trainer::~Trainer() = default;

// Note [Step diagnostics]: the gradient of the objective's diagnosed part on this rank, one tensor per
// parameter (zeros where it has none). torch::autograd::grad returns the gradients without accumulating
// them, so the reducer's accumulation hooks do not fire; the graph is kept for the backward of the loss.
std::vector<torch::Tensor> Trainer::State::local_part_gradients(const torch::Tensor& part) {
  std::vector<torch::Tensor> out;
  std::vector<torch::Tensor> got;
  if (part.defined() && part.requires_grad()) {
    KeepSoftmaxForSecondBackward keep;  // Note [Backward twice]: the loss's backward follows
    got = torch::autograd::grad({part}, parameters, {}, /*retain_graph=*/true, /*create_graph=*/false,
                                /*allow_unused=*/true);
  }
  for (size_t i = 0; i < parameters.size(); ++i) {
    const bool has = i < got.size() && got[i].defined();
    out.push_back(has ? got[i].detach().to(torch::kCPU, torch::kFloat32).reshape({-1})
                      : torch::zeros({parameters[i].numel()}, torch::kFloat32));
  }
  return out;
}

// The norms of the global gradient (the parameters' .grad after the reducer, before clipping), of the
// diagnosed part's gradient averaged over the ranks (one allreduce through the communicator), and of the
// rest (total minus part).
Trainer::State::GradientNorms Trainer::State::split_gradient_norms(const std::vector<torch::Tensor>& part_gradients) {
  torch::Tensor part = torch::cat(part_gradients);
  allreduce_host(*communicator, comm::Buffer{part.data_ptr<float>(), static_cast<size_t>(part.numel()), comm::DType::kFloat32},
                 comm::ReduceOp::kAverage, device);
  std::vector<torch::Tensor> totals;
  for (const auto& p : parameters) {
    totals.push_back(p.grad().defined() ? p.grad().detach().to(torch::kCPU, torch::kFloat32).reshape({-1})
                                        : torch::zeros({p.numel()}, torch::kFloat32));
  }
  const torch::Tensor total = torch::cat(totals).to(torch::kDouble);
  const torch::Tensor part64 = part.to(torch::kDouble);
  return {total.norm().item<double>(), part64.norm().item<double>(), (total - part64).norm().item<double>()};
}

// One optimizer step on every rank: the batch's counts summed over the ranks, forward, backward with the
// allreduce overlapped, clipping, AdamW, the moving average; the step's statistics summed over the ranks
// go into `window`. Returns the step's mean loss.
double Trainer::State::step(const sharding::EpochSampler::Step& batch, double lr, Window& window) {
  // Through the communicator, like every collective of the step, so that a rank that stalls anywhere
  // trips a deadline naming it (comm/watchdog.h) instead of hanging the others.
  std::vector<int64_t> counts = objective.load(batch);
  allreduce_host(*communicator, comm::Buffer{counts.data(), counts.size(), comm::DType::kInt64}, comm::ReduceOp::kSum,
                 device);
  for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  reducer->zero_grad();
  reducer->prepare_backward(true);
  torch::Tensor loss;
  {
    AutocastScope scope(options.device.precision == "bf16");  // forward and loss only
    loss = objective.forward(batch, counts, world.size());
  }
  std::vector<torch::Tensor> part_gradients;  // Note [Step diagnostics]: this rank's, before backward
  if (objective.has_diagnosed_part()) part_gradients = local_part_gradients(objective.diagnosed_part());
  if (loss.defined()) loss.backward();
  reducer->finish_backward();
  GradientNorms norms;
  if (objective.has_diagnosed_part()) norms = split_gradient_norms(part_gradients);
  if (options.optimizer.clip > 0) torch::nn::utils::clip_grad_norm_(parameters, options.optimizer.clip);
  store->wait_for_copies();  // the last checkpoint's writer has copied the parameters: they may change
  adamw_step(optimizer);     // Note [Fused AdamW]
  ++progress.step;
  if (average) average->update(progress.step);
  progress.position = sampler.position();

  std::vector<float> statistics = objective.statistics();
  allreduce_host(*communicator, comm::Buffer{statistics.data(), statistics.size(), comm::DType::kFloat32},
                 comm::ReduceOp::kSum, device);
  const std::vector<double> step_statistics(statistics.begin(), statistics.end()), step_counts(counts.begin(), counts.end());
  window.add(step_statistics, step_counts, static_cast<double>(batch.global_count), reducer->timers());
  if (objective.has_diagnosed_part() && world.is_root()) {
    Fields event = objective.window_fields(step_statistics, step_counts, static_cast<double>(batch.global_count));
    event.insert(event.end(), {{"grad_norm", norms.total}, {objective.diagnosed_part_name() + "_grad_norm", norms.part},
                               {objective.rest_name() + "_grad_norm", norms.rest},
                               {objective.diagnosed_part_name() + "_grad_share",
                                norms.part + norms.rest > 0 ? norms.part / (norms.part + norms.rest) : 0.0},
                               {"lr", lr}});
    nlohmann::json json = {{"event", "step"}, {"step", progress.step}, {"epoch", epoch()}, {"time", utc_time_now()},
                           {"attempt", attempt}};
    for (const auto& [key, value] : event) json[key] = value;
    jsonl << json.dump() << "\n" << std::flush;
  }
  return objective.step_loss(step_statistics, step_counts, static_cast<double>(batch.global_count));
}

int Trainer::run() {
  State& s = *s_;
  Progress meter({.every_s = s.options.progress_every_s}, s.world.is_root(), s.progress.step);
  if (s.stage.evaluate_at_start && s.progress.step == 0 && s.options.eval.every > 0)
    s.evaluate("before " + s.stage.eval_when, meter);
  signals::install_stop_handlers();
  StopVote stop_vote(*s.communicator, s.device, s.world);
  s.model->train();
  bool stopped = false;
  Window window;
  while (s.progress.step < s.total_steps) {
    const auto batch = s.sampler.next();
    const double lr = scheduled_lr(s.options.optimizer.lr, s.progress.step, s.warmup_steps, s.total_steps,
                                   s.options.schedule.decay);
    const double loss = s.step(batch, lr, window);
    meter.step({s.progress.step, s.total_steps, s.epoch(), loss, batch.global_count, lr});
    if (s.progress.position.step_in_epoch == 0 || window.steps >= 50 || s.progress.step == s.total_steps) {
      if (s.world.is_root()) {
        meter.clear();
        s.log_window(window, lr);
      }
      window.reset();
    }
    stopped = stop_vote.agree(s.progress.step);
    if (stopped || s.progress.step % s.save_every == 0 || s.progress.step == s.total_steps)
      s.store->save(make_save_request(s.progress, *s.model, s.optimizer, s.config_json, *s.store, s.extras));
    if (stopped) break;
    if (s.progress.step % s.eval_every == 0 && s.progress.step != s.total_steps) {
      s.evaluate(s.stage.eval_when, meter);
      window.start = Clock::now();  // examples/s counts training only
    }
  }
  meter.finish();
  s.store->wait();
  return stopped ? s.stop() : s.finish(meter);
}

// After a stop signal: the checkpoint of the last step is committed.
int Trainer::State::stop() {
  if (world.is_root())
    log->warn("stopped by a signal at step {}: checkpoint committed in {}/checkpoints; run the same command again "
              "to resume", progress.step, options.out_dir);
  return 3;
}

// After the last step: the final evaluation and the export (of the average, with --ema-decay).
int Trainer::State::finish(Progress& meter) {
  evaluate("final", meter);
  if (average) average->swap();
  const std::string path = write_final_export(*model, options.out_dir, export_section["model_config"].dump(), data.index,
                                             data.index_path, data.index_sha256, world);
  if (world.is_root())
    log->info("{} done: {} steps in {:.0f}s; model exported to {}", stage.name, progress.step, seconds_since(start), path);
  return 0;
}

}  // namespace dgr::trainer
