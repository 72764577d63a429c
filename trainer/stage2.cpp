// The stage-2 (distillation) training loop. One optimizer step: this rank's queries of the global batch
// (the EpochSampler's, over the prepared data set), for each the two lists of DistillSampler::draw scored by
// the surrogate and put through the ranking loss, plus the generation loss (title and/or body span of the
// top positive); the step's loss is the mean ranking loss over the global batch's queries plus gen_weight
// times the mean cross-entropy per target token of each generation view (averaged over the views). The
// rest (reducer, clipping, AdamW with warmup and decay, checkpoints, signals, evaluation, export) is
// stage 1's.
#include "trainer/stage2.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "checkpoints/export.h"
#include "checkpoints/store.h"
#include "comm/communicator.h"
#include "common/error.h"
#include "common/log.h"
#include "common/signals.h"
#include "retrieval/index_dir.h"
#include "retrieval/metrics.h"
#include "data/distill_data.h"
#include "data/readers.h"
#include "sharding/sampler.h"
#include "trainer/adamw.h"
#include "trainer/cpu_allocator.h"
#include "trainer/distill_loss.h"
#include "trainer/distill_sampler.h"
#include "trainer/device.h"
#include "trainer/exported_model.h"
#include "trainer/gradient_reducer.h"
#include "trainer/model.h"
#include "trainer/model_scorer.h"
#include "trainer/placement.h"
#include "trainer/progress.h"
#include "trainer/retrieve_queries.h"
#include "trainer/run_common.h"
#include "trainer/stage1_data.h"
#include "trainer/stop.h"
#include "trainer/surrogate.h"
#include "trainer/train_state.h"

namespace fs = std::filesystem;

namespace dgr::trainer {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// Right-pads into an int64 host tensor, pinned when it is going to a GPU (the copy is then queued).
torch::Tensor pad_batch(const std::vector<std::vector<int32_t>>& sequences, bool pinned) {
  size_t longest = 1;
  for (const auto& s : sequences) longest = std::max(longest, s.size());
  torch::Tensor out = torch::zeros({static_cast<int64_t>(sequences.size()), static_cast<int64_t>(longest)},
                                   torch::TensorOptions(torch::kInt64).pinned_memory(pinned));
  auto a = out.accessor<int64_t, 2>();
  for (size_t i = 0; i < sequences.size(); ++i)
    for (size_t t = 0; t < sequences[i].size(); ++t) a[static_cast<int64_t>(i)][static_cast<int64_t>(t)] = sequences[i][t];
  return out;
}

uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

nlohmann::json options_json(const Stage2Options& o, const DistillLossOptions& loss, const DeviceChoice& device) {
  return {{"stage", "distill"}, {"data_dir", o.data_dir}, {"index_dir", o.index_dir}, {"prepared_dir", o.prepared_dir},
          {"init_model", o.init_model}, {"loss", o.loss}, {"margin", loss.margin}, {"margin_step", loss.margin_step},
          {"head_weight", loss.head_weight}, {"ltrgr_margins", {loss.ltrgr_top_margin, loss.ltrgr_random_margin}},
          {"temperature", loss.student_temperature}, {"teacher_temperature", loss.teacher_temperature}, {"gen_weight", generation_weight(loss)},
          {"gen_views", o.gen_views}, {"max_keys", o.max_keys}, {"epochs", o.epochs}, {"global_batch", o.global_batch},
          {"lr", o.lr}, {"beta1", o.beta1}, {"beta2", o.beta2}, {"eps", o.eps}, {"weight_decay", o.weight_decay},
          {"warmup", o.warmup}, {"decay", o.decay}, {"clip", o.clip}, {"label_smoothing", o.label_smoothing},
          {"dropout", o.dropout}, {"seed", o.seed}, {"device", device.kind()}, {"precision", o.precision}, {"comm", o.comm_backend}, {"bucket_mib", o.bucket_mib},
          {"piece_mib", o.piece_mib}};
}

}  // namespace

int run_stage2(const Stage2Options& options, const World& world) {
  auto log = log::get("train");
  const int rank = world.rank(), world_size = world.size();
  const Clock::time_point start = Clock::now();
  if (options.threads > 0) torch::set_num_threads(options.threads);
  install_caching_cpu_allocator();  // Note [CPU page faults]
  const DeviceChoice device = prepare_training_device(options.device, options.precision, options.comm_backend, world);
  const torch::Device torch_dev = torch_device(device);
  const bool autocast = options.precision == "bf16";
  DGR_CHECK_AS(ConfigError, !options.prepared_dir.empty(),
               "--stage distill needs --prepared DIR (the distillation data set from `dgr prepare`)");
  DGR_CHECK_AS(ConfigError, !options.init_model.empty(),
               "--stage distill needs --init-model FILE (the stage-1 export, OUT/model.h5 of `dgr train --stage generate`)");
  const fs::path data(options.data_dir);
  const std::string index_path = options.index_dir.empty() ? (data / "index").string() : options.index_dir;

  DistillLossOptions loss_options;
  loss_options.kind = parse_distill_loss_kind(options.loss);
  loss_options.margin = options.margin;
  loss_options.margin_step = options.margin_step;
  loss_options.head_weight = options.first_weight;
  loss_options.ltrgr_top_margin = options.margin;
  loss_options.ltrgr_random_margin = options.second_margin;
  loss_options.student_temperature = options.temperature;
  loss_options.teacher_temperature = options.teacher_temperature;
  if (options.gen_weight >= 0) loss_options.gen_weight = options.gen_weight;
  loss_options.validate();
  const double gen_weight = generation_weight(loss_options);
  std::vector<retrieval::View> gen_views;
  for (const auto& name : options.gen_views) gen_views.push_back(retrieval::parse_view(name));
  for (auto v : gen_views)
    DGR_CHECK_AS(ConfigError, v != retrieval::View::pq, "--gen-views: only title and body targets exist in stage 2");

  // Data: the index and corpus (generation targets), the prepared data set (this rank loads its examples).
  auto corpus = data::read_corpus((data / "corpus.tsv").string());
  auto index = retrieval::load_index_dir(index_path);
  const std::string index_sha256 = nlohmann::json::parse(index.manifest_json).at("fm_index_sha256").get<std::string>();
  data::DistillDataset dataset(options.prepared_dir);
  DGR_CHECK_AS(DataError, dataset.manifest().tokenizer_sha256 == index.tokenizer.sha256() &&
                              dataset.manifest().fm_index_sha256 == index_sha256,
               "{} was mined with another tokenizer or FM-index than {} (tokenizer {} vs {}): prepare it again from "
               "this index, or pass the index it was mined with (--index)", options.prepared_dir, index_path,
               dataset.manifest().tokenizer_sha256, index.tokenizer.sha256());
  std::vector<retrieval::PassageTokens> passages(index.pids.size());
  for (size_t d = 0; d < index.pids.size(); ++d) {
    auto it = corpus.index_of.find(index.pids[d]);
    DGR_CHECK_AS(DataError, it != corpus.index_of.end(), "{}: passage '{}' is not in {}: rebuild the index", index_path,
                 index.pids[d], (data / "corpus.tsv").string());
    passages[d] = retrieval::tokenize_passage(index.tokenizer, corpus.passages[it->second]);
  }

  // The student starts from the stage-1 export.
  checkpoints::ExportedModel init = checkpoints::read_export(options.init_model);
  DGR_CHECK_AS(CheckpointError, init.info.tokenizer_sha256 == index.tokenizer.sha256(),
               "{} was trained with another tokenizer than {} has: use the index it was trained with", options.init_model,
               index_path);
  nlohmann::json init_config = nlohmann::json::parse(init.info.model_config_json);
  ModelConfig config = ModelConfig::from_json_string(init_config.at("model").dump());
  if (options.dropout >= 0) config.dropout = options.dropout;
  const retrieval::ViewLimits limits = parse_view_limits(init_config.at("view_limits").dump(), options.init_model);
  torch::manual_seed(options.seed);
  auto model = std::make_shared<Seq2Seq>(config);
  load_model_arrays(init.weights, *model, options.init_model);
  if (device.cuda) model->to(torch_dev);  // loaded on the CPU, then moved: parameters and buffers

  torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(options.lr)
                                                         .betas({options.beta1, options.beta2})
                                                         .eps(options.eps)
                                                         .weight_decay(options.weight_decay));
  auto communicator = make_train_communicator(options.comm_backend, options.comm_timeout_s, world);
  const auto named = named_parameters(*model);
  GradientReducer reducer(named, *communicator, reducer_options_from_mib(options.bucket_mib, options.piece_mib));
  std::vector<torch::Tensor> parameters = model->parameters();

  SurrogateOptions surrogate;
  surrogate.limits = limits;
  surrogate.special = index.tokenizer.special();
  surrogate.total_tokens = index.fm.total_tokens();
  surrogate.max_keys = options.max_keys;
  surrogate.validate();
  DistillSampler draws(DistillSamplerOptions{}, options.seed);

  sharding::EpochSampler sampler(dataset.size(), options.global_batch, options.seed, rank, world_size);
  const int64_t total_steps = std::max<int64_t>(
      1, options.max_steps > 0 ? options.max_steps
                               : static_cast<int64_t>(std::ceil(options.epochs * static_cast<double>(sampler.steps_per_epoch()))));
  const int64_t warmup_steps = static_cast<int64_t>(options.warmup * static_cast<double>(total_steps));
  const int64_t save_every = options.save_every > 0 ? options.save_every : sampler.steps_per_epoch();
  const int64_t eval_every =
      options.eval_every > 0
          ? std::max<int64_t>(1, static_cast<int64_t>(std::llround(options.eval_every * static_cast<double>(sampler.steps_per_epoch()))))
          : total_steps;
  nlohmann::json export_section = {{"model_config", {{"model", nlohmann::json::parse(config.to_json_string())},
                                                     {"view_limits", nlohmann::json::parse(view_limits_json(limits))}}},
                                   {"tokenizer_id", index.tokenizer.path()}, {"tokenizer_sha256", index.tokenizer.sha256()},
                                   {"index_id", index_path}, {"index_sha256", index_sha256}};
  const std::string config_json =
      nlohmann::json{{"train", options_json(options, loss_options, device)}, {"export", export_section}}.dump();
  save_effective_config(options.out_dir, config_json, world);
  if (world.is_root())
    log->info("stage 2: {} queries from {}, loss {} (gen weight {}), {} steps of {} queries on {} ranks x {} threads, "
              "device {} ({})", dataset.size(), options.prepared_dir, options.loss, gen_weight, total_steps,
              options.global_batch, world_size, torch::get_num_threads(), device.kind(), options.precision);

  checkpoints::StoreOptions store_options;
  store_options.dir = (fs::path(options.out_dir) / "checkpoints").string();
  store_options.keep_last = options.keep_last;
  store_options.async = options.async_save;
  checkpoints::Store store(store_options, world);
  TrainProgress progress =
      resume_or_start(store, options.resume, options.seed, *model, optimizer, sampler, rank, world_size);

  const std::vector<EvalSet> eval_sets = load_eval_sets(data, options.eval_splits, options.eval_max_queries, corpus);
  std::ofstream jsonl;
  if (world.is_root()) {
    fs::create_directories(options.out_dir);
    jsonl.open(fs::path(options.out_dir) / "train.jsonl", std::ios::app);
  }
  ProgressOptions progress_options;
  progress_options.every_s = options.progress_every_s;
  Progress bar(progress_options, world.is_root(), progress.step);
  auto evaluate = [&](const char* when) {
    bar.pause();
    bar.clear();
    model->eval();
    auto scorer = make_model_scorer(model);
    evaluate_sets(*scorer, index, eval_sets, options.retrieval, limits, world,
                  {when, progress.step, static_cast<double>(progress.step) / static_cast<double>(sampler.steps_per_epoch()),
                   seconds_since(start)},
                  jsonl);
    model->train();
    bar.resume();
  };
  if (progress.step == 0 && options.eval_every > 0) evaluate("before distillation");

  signals::install_stop_handlers();
  const char* stop_env = std::getenv("DGR_TEST_STOP_AT_STEP");
  const int64_t test_stop_step = stop_env != nullptr ? std::atoll(stop_env) : 0;
  model->train();
  bool stopped = false;
  // Window statistics for the log: ranking loss, generation loss per token, lists whose head outscores
  // every negative, lists with a violated pair.
  double window[5] = {0, 0, 0, 0, 0};  // rank loss sum, gen loss sum, gen tokens, head-first lists, queries
  int64_t window_steps = 0;
  Clock::time_point window_start = Clock::now();
  while (progress.step < total_steps) {
    auto batch = sampler.next();
    torch::Tensor rank_sum = torch::zeros({}, torch::TensorOptions(torch::kFloat64).device(torch_dev));
    std::vector<std::vector<int32_t>> gen_sources[2], gen_targets[2];  // [title, body]
    double head_first = 0;
    int64_t tokens[2] = {0, 0};
    for (int64_t e : batch.examples) {
      data::DistillExample example = dataset.load(e);
      draws.check(example);
      DistillDraw draw = draws.draw(example, batch.epoch, static_cast<uint64_t>(e));
      std::vector<int32_t> members = draw.a.candidates;
      members.insert(members.end(), draw.b.candidates.begin(), draw.b.candidates.end());
      const int64_t n = static_cast<int64_t>(draw.a.candidates.size());
      if (loss_options.kind != DistillLossKind::generation) {  // generation only: no surrogate pass at all
        AutocastScope scope(autocast);  // forward and loss only
        torch::Tensor scores = surrogate_scores(*model, example, members, surrogate);
        torch::Tensor scores_a = scores.slice(0, 0, n), scores_b = scores.slice(0, n, 2 * n);
        rank_sum = rank_sum + ranking_loss(scores_a, scores_b, draw, loss_options);
        torch::NoGradGuard no_grad;
        head_first += (scores_a.slice(0, 1, n).max().item<double>() < scores_a[0].item<double>()) ? 1 : 0;
      }
      const auto& passage = passages[static_cast<size_t>(example.candidates[static_cast<size_t>(draw.a.candidates[0])].doc)];
      for (auto view : gen_views) {
        const int slot = view == retrieval::View::title ? 0 : 1;
        gen_sources[slot].push_back(retrieval::make_source(example.query_tokens, view, index.tokenizer.special(), limits));
        if (view == retrieval::View::title) {
          gen_targets[slot].push_back(retrieval::title_target(passage, index.tokenizer.special(), limits));
        } else {
          const uint64_t rng = mix(options.seed ^ mix(static_cast<uint64_t>(batch.epoch) ^ mix(static_cast<uint64_t>(e))));
          gen_targets[slot].push_back(query_body_span(passage, &example.query_tokens, limits, 1.0, rng));
        }
        tokens[slot] += static_cast<int64_t>(gen_targets[slot].back().size());
      }
    }
    // Every rank needs the global target-token counts before backward (the generation loss is a mean over
    // them); through the communicator, like every collective of the step, so that a rank that stalls
    // anywhere trips a deadline naming it (comm/watchdog.h) instead of hanging the others.
    int64_t global_tokens[2] = {tokens[0], tokens[1]};  // [title, body] target tokens of the global batch
    allreduce_host(*communicator, comm::Buffer{global_tokens, 2, comm::DType::kInt64}, comm::ReduceOp::kSum, device);
    const double lr = scheduled_lr(options.lr, progress.step, warmup_steps, total_steps, options.decay);
    for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);

    reducer.zero_grad();
    reducer.prepare_backward(true);
    double gen_sum_value = 0;
    if (!batch.examples.empty()) {
      const double global_queries = static_cast<double>(std::max<int64_t>(1, batch.global_count));
      torch::Tensor total = (rank_sum / global_queries).to(torch::kFloat32);
      for (int slot = 0; slot < 2; ++slot) {
        if (gen_sources[slot].empty()) continue;
        torch::Tensor sum;
        {
          AutocastScope scope(autocast);  // forward and loss only
          sum = model->loss(to_device(pad_batch(gen_sources[slot], device.cuda), torch_dev),
                            to_device(pad_batch(gen_targets[slot], device.cuda), torch_dev), options.label_smoothing);
        }
        gen_sum_value += sum.item<double>();
        total = total + sum * (gen_weight / static_cast<double>(gen_views.size()) /
                               static_cast<double>(std::max<int64_t>(1, global_tokens[slot])));
      }
      (total * static_cast<double>(world_size)).backward();
    }
    reducer.finish_backward();
    if (options.clip > 0) torch::nn::utils::clip_grad_norm_(parameters, options.clip);
    store.wait_for_copies();  // the last checkpoint's writer has copied the parameters: they may change
    adamw_step(optimizer);  // Note [Fused AdamW]
    ++progress.step;
    progress.position = sampler.position();

    // [ranking loss sum, generation loss sum, lists with the head first, queries], for the log (fp32 is plenty).
    float step_stats[4] = {static_cast<float>(rank_sum.item<double>()), static_cast<float>(gen_sum_value),
                           static_cast<float>(head_first), static_cast<float>(batch.examples.size())};
    allreduce_host(*communicator, comm::Buffer{step_stats, 4, comm::DType::kFloat32}, comm::ReduceOp::kSum, device);
    const double global_stats[4] = {step_stats[0], step_stats[1], step_stats[2], step_stats[3]};
    window[0] += global_stats[0];
    window[1] += global_stats[1];
    window[2] += static_cast<double>(global_tokens[0] + global_tokens[1]);
    window[3] += global_stats[2];
    window[4] += global_stats[3];
    ++window_steps;
    const double epoch = static_cast<double>(progress.step) / static_cast<double>(sampler.steps_per_epoch());
    const double step_loss = global_stats[0] / std::max(1.0, global_stats[3]) +
                             gen_weight * global_stats[1] / std::max<double>(1.0, static_cast<double>(global_tokens[0] + global_tokens[1]));
    bar.step({progress.step, total_steps, epoch, step_loss, static_cast<int64_t>(global_stats[3]), lr});
    const bool epoch_end = progress.position.step_in_epoch == 0;
    if (epoch_end || window_steps >= 50 || progress.step == total_steps) {
      if (world.is_root()) {
        const double seconds = seconds_since(window_start), queries = std::max(1.0, window[4]);
        nlohmann::json line = {{"event", "train"}, {"step", progress.step}, {"epoch", epoch},
                               {"loss", window[0] / queries + gen_weight * window[1] / std::max(1.0, window[2])},
                               {"rank_loss", window[0] / queries}, {"gen_loss", window[1] / std::max(1.0, window[2])},
                               {"head_first", window[3] / queries}, {"lr", lr},
                               {"examples_per_s", window[4] / seconds}, {"elapsed_s", seconds_since(start)}};
        bar.clear();
        log->info("step {}/{} epoch {:.2f} rank loss {:.3f} gen loss {:.4f} head first {:.3f} lr {:.2e} {:.1f} queries/s",
                  progress.step, total_steps, epoch, window[0] / queries, window[1] / std::max(1.0, window[2]),
                  window[3] / queries, lr, window[4] / seconds);
        jsonl << line.dump() << "\n" << std::flush;
      }
      for (double& w : window) w = 0;
      window_steps = 0;
      window_start = Clock::now();
    }
    if (test_stop_step > 0 && progress.step == test_stop_step && rank == std::min(1, world_size - 1)) std::raise(SIGUSR1);
    stopped = agree_on_stop(*communicator, device) > 0;
    if (stopped || progress.step % save_every == 0 || progress.step == total_steps)
      store.save(make_save_request(progress, *model, optimizer, config_json, store));
    if (stopped) break;
    if (progress.step % eval_every == 0 && progress.step != total_steps) {
      evaluate("during distillation");
      window_start = Clock::now();
    }
  }
  store.wait();
  bar.finish();
  if (stopped) {
    if (world.is_root())
      log->warn("stopped by a signal at step {}: checkpoint committed in {}; run the same command again to resume",
                progress.step, store_options.dir);
    return 3;
  }
  evaluate("final");
  const std::string path = write_final_export(*model, options.out_dir, export_section["model_config"].dump(), index,
                                             index_path, index_sha256, world);
  if (world.is_root())
    log->info("stage 2 done: {} steps in {:.0f}s; model exported to {}", progress.step, seconds_since(start), path);
  return 0;
}

}  // namespace dgr::trainer
