// The stage-1 training loop. One optimizer step: this rank's share of the global batch of pairs (the
// EpochSampler's), padded into one batch, the label-smoothed cross-entropy summed over target tokens,
// scaled so that the reducer's average over ranks is the mean over all target tokens of the global batch,
// backward with the gradient allreduce overlapped, global-norm clipping, AdamW with warmup and linear
// decay. Checkpoints at epoch ends (or every save_every steps) and on a stop signal; evaluation by
// retrieval at the end of every eval_every epochs.
#include "trainer/stage1.h"

#include <torch/torch.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "checkpoints/export.h"
#include "checkpoints/store.h"
#include "comm/communicator.h"
#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "common/signals.h"
#include "retrieval/index_dir.h"
#include "retrieval/metrics.h"
#include "data/readers.h"
#include "sharding/sampler.h"
#include "trainer/adamw.h"
#include "trainer/cpu_allocator.h"
#include "trainer/exported_model.h"
#include "trainer/device.h"
#include "trainer/gradient_reducer.h"
#include "trainer/model.h"
#include "trainer/model_scorer.h"
#include "trainer/placement.h"
#include "trainer/progress.h"
#include "trainer/retrieve_queries.h"
#include "trainer/run_common.h"
#include "trainer/stop.h"
#include "trainer/weight_average.h"
#include "trainer/train_state.h"

namespace fs = std::filesystem;

namespace dgr::trainer {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Right-pads sequences with 0 (pad) into an int64 [batch, longest] host tensor, in pinned memory when it
// is going to a GPU (so that the copy is queued without waiting).
torch::Tensor pad_batch(const std::vector<const std::vector<int32_t>*>& sequences, bool pinned) {
  size_t longest = 1;
  for (const auto* s : sequences) longest = std::max(longest, s->size());
  torch::Tensor out = torch::zeros({static_cast<int64_t>(sequences.size()), static_cast<int64_t>(longest)},
                                   torch::TensorOptions(torch::kInt64).pinned_memory(pinned));
  auto a = out.accessor<int64_t, 2>();
  for (size_t i = 0; i < sequences.size(); ++i)
    for (size_t t = 0; t < sequences[i]->size(); ++t) a[static_cast<int64_t>(i)][static_cast<int64_t>(t)] = (*sequences[i])[t];
  return out;
}

nlohmann::json options_json(const Stage1Options& o, const DeviceChoice& device) {
  return {{"stage", "generate"}, {"data_dir", o.data_dir}, {"index_dir", o.index_dir}, {"preset", o.preset},
          {"dropout", o.dropout}, {"epochs", o.epochs}, {"global_batch", o.global_batch}, {"lr", o.lr},
          {"beta1", o.beta1}, {"beta2", o.beta2}, {"weight_decay", o.weight_decay}, {"warmup", o.warmup}, {"decay", o.decay},
          {"clip", o.clip}, {"label_smoothing", o.label_smoothing}, {"seed", o.seed}, {"device", device.kind()},
          {"precision", o.precision}, {"comm", o.comm_backend}, {"bucket_mib", o.bucket_mib},
          {"piece_mib", o.piece_mib}, {"ema_decay", o.ema_decay},
          {"views", {o.data.views[0], o.data.views[1], o.data.views[2]}}, {"title_copies", o.data.title_copies},
          {"body_spans", o.data.body_spans}, {"pq_copies", o.data.pq_copies}, {"indexing_pairs", o.data.indexing_pairs},
          {"indexing_source", {o.data.indexing_source_min, o.data.indexing_source_max, o.data.indexing_prefix_probability}}};
}

}  // namespace

void save_effective_config(const std::string& out_dir, const std::string& config_json, const World& world) {
  if (!world.is_root()) return;
  log::get("train")->info("effective config (also in {}/config.json): {}", out_dir, config_json);
  fs::create_directories(out_dir);
  files::AtomicFile file((fs::path(out_dir) / "config.json").string());
  file.write(nlohmann::json::parse(config_json).dump(2) + "\n");
  file.commit();
}

int run_stage1(const Stage1Options& options, const World& world) {
  auto log = log::get("train");
  const int rank = world.rank(), world_size = world.size();
  const Clock::time_point start = Clock::now();
  if (options.threads > 0) torch::set_num_threads(options.threads);
  install_caching_cpu_allocator();  // Note [CPU page faults]
  // Where the model runs; every rank checks before reading any data, so a bad --device fails at once.
  const DeviceChoice device = prepare_training_device(options.device, options.precision, options.comm_backend, world);
  const torch::Device torch_dev = torch_device(device);
  const bool autocast = options.precision == "bf16";
  const fs::path data(options.data_dir);
  const std::string index_path = options.index_dir.empty() ? (data / "index").string() : options.index_dir;

  // Data: every rank reads the same files and builds the same pair list.
  auto corpus = data::read_corpus((data / "corpus.tsv").string());
  auto index = retrieval::load_index_dir(index_path);
  DGR_CHECK_AS(DataError, index.pids.size() == corpus.passages.size(),
               "{} indexes {} passages but {} has {}: rebuild the index with `dgr index --data {}`", index_path,
               index.pids.size(), (data / "corpus.tsv").string(), corpus.passages.size(), options.data_dir);
  const auto& special = index.tokenizer.special();
  std::vector<retrieval::PassageTokens> passages(index.pids.size());
  for (size_t d = 0; d < index.pids.size(); ++d) {
    auto it = corpus.index_of.find(index.pids[d]);
    DGR_CHECK_AS(DataError, it != corpus.index_of.end(), "{}: passage '{}' is not in {}: rebuild the index", index_path,
                 index.pids[d], (data / "corpus.tsv").string());
    passages[d] = retrieval::tokenize_passage(index.tokenizer, corpus.passages[it->second]);
  }
  auto train_queries = data::read_queries((data / "queries.train.tsv").string());
  auto train_qrels = data::read_qrels((data / "qrels.train.tsv").string(), &corpus, &train_queries);
  std::unordered_map<std::string, int32_t> first_positive;
  for (const auto& q : train_qrels)
    if (q.grade > 0) first_positive.emplace(q.qid, index.doc_of.at(q.pid));
  std::vector<TrainingQuery> queries;
  for (const auto& q : train_queries) {
    auto it = first_positive.find(q.qid);
    if (it != first_positive.end()) queries.push_back({index.tokenizer.encode(q.text), it->second});
  }
  Stage1Data pairs(std::move(passages), std::move(queries), special, options.data, options.seed);
  if (world.is_root()) log->info("stage 1 data: {} training queries; {}", first_positive.size(), pairs.describe());

  // Model, optimizer, reducer, checkpoints.
  ModelConfig config = model_preset(options.preset, index.tokenizer.vocab_size());
  if (options.dropout >= 0) config.dropout = options.dropout;
  torch::manual_seed(options.seed);
  auto model = std::make_shared<Seq2Seq>(config);
  if (device.cuda) model->to(torch_dev);  // initialised on the CPU, so every device starts from the same weights
  torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(options.lr)
                                                         .betas({options.beta1, options.beta2})
                                                         .eps(options.eps)
                                                         .weight_decay(options.weight_decay));
  auto communicator = make_train_communicator(options.comm_backend, options.comm_timeout_s, world);
  const auto named = named_parameters(*model);
  GradientReducer reducer(named, *communicator, reducer_options_from_mib(options.bucket_mib, options.piece_mib));
  std::vector<torch::Tensor> parameters = model->parameters();
  if (world.is_root()) {
    int64_t count = 0;
    for (auto& p : parameters) count += p.numel();
    log->info("model: preset {} ({} parameters), {} ranks x {} threads, device {} ({}), config {}", options.preset,
              count, world_size, torch::get_num_threads(), device.kind(), options.precision, config.to_json_string());
  }

  sharding::EpochSampler sampler(pairs.size(), options.global_batch, options.seed, rank, world_size);
  const int64_t total_steps = std::max<int64_t>(
      1, options.max_steps > 0 ? options.max_steps
                               : static_cast<int64_t>(std::ceil(options.epochs * static_cast<double>(sampler.steps_per_epoch()))));
  const int64_t warmup_steps = static_cast<int64_t>(options.warmup * static_cast<double>(total_steps));
  const int64_t save_every = options.save_every > 0 ? options.save_every : sampler.steps_per_epoch();
  const int64_t eval_every = options.eval_every > 0
                                 ? std::max<int64_t>(1, static_cast<int64_t>(std::llround(options.eval_every * static_cast<double>(sampler.steps_per_epoch()))))
                                 : total_steps;
  // load_index_dir verified fm_index.bin against this checksum already.
  const std::string index_sha256 = nlohmann::json::parse(index.manifest_json).at("fm_index_sha256").get<std::string>();
  // The checkpoint's config: the options, and what an export of any step needs (`dgr export`).
  nlohmann::json export_section = {
      {"model_config", {{"model", nlohmann::json::parse(config.to_json_string())},
                        {"view_limits", nlohmann::json::parse(view_limits_json(options.data.limits))}}},
      {"tokenizer_id", index.tokenizer.path()}, {"tokenizer_sha256", index.tokenizer.sha256()},
      {"index_id", index_path}, {"index_sha256", index_sha256}};
  const std::string config_json = nlohmann::json{{"train", options_json(options, device)}, {"export", export_section}}.dump();
  save_effective_config(options.out_dir, config_json, world);

  checkpoints::StoreOptions store_options;
  store_options.dir = (fs::path(options.out_dir) / "checkpoints").string();
  store_options.keep_last = options.keep_last;
  store_options.async = options.async_save;
  checkpoints::Store store(store_options, world);
  std::unique_ptr<WeightAverage> average;
  if (options.ema_decay > 0) average = std::make_unique<WeightAverage>(named, options.ema_decay);
  const ExtraTensors no_extras;
  const ExtraTensors& extras = average ? average->named_averages() : no_extras;
  TrainProgress progress =
      resume_or_start(store, options.resume, options.seed, *model, optimizer, sampler, rank, world_size, extras);

  // Evaluation: retrieval over each split's queries with the current weights, metrics on rank 0.
  const std::vector<EvalSet> eval_sets = load_eval_sets(data, options.eval_splits, options.eval_max_queries, corpus);
  std::ofstream jsonl;
  if (world.is_root()) {
    fs::create_directories(options.out_dir);
    jsonl.open(fs::path(options.out_dir) / "train.jsonl", std::ios::app);
  }
  // With --ema-decay the average is what is evaluated and exported (Note [Weight averaging]).
  auto swap_average = [&] {
    if (!average) return;
    store.wait_for_copies();  // swapping writes the parameters the checkpoint writer may still be copying
    average->swap();
  };
  auto evaluate = [&](const char* when) {
    swap_average();
    model->eval();
    auto scorer = make_model_scorer(model);
    evaluate_sets(*scorer, index, eval_sets, options.retrieval, options.data.limits, world,
                  {when, progress.step, static_cast<double>(progress.step) / static_cast<double>(sampler.steps_per_epoch()),
                   seconds_since(start)},
                  jsonl);
    model->train();
    swap_average();
  };

  signals::install_stop_handlers();
  // Tests only: DGR_TEST_STOP_AT_STEP=N makes rank 1 send itself SIGUSR1 after step N, as a scheduler would.
  const char* stop_env = std::getenv("DGR_TEST_STOP_AT_STEP");
  const int64_t test_stop_step = stop_env != nullptr ? std::atoll(stop_env) : 0;
  model->train();
  bool stopped = false;
  Clock::time_point window_start = Clock::now();
  double window_loss = 0, window_tokens = 0, window_examples = 0;
  int64_t window_steps = 0;
  Progress meter({.every_s = options.progress_every_s}, world.is_root(), progress.step);
  while (progress.step < total_steps) {
    auto batch = sampler.next();
    std::vector<Pair> local;
    local.reserve(batch.examples.size());
    for (int64_t e : batch.examples) local.push_back(pairs.pair(batch.epoch, e));
    std::vector<const std::vector<int32_t>*> sources, targets;
    int64_t tokens = 0;
    for (const auto& p : local) {
      sources.push_back(&p.source);
      targets.push_back(&p.target);
      tokens += static_cast<int64_t>(p.target.size());
    }
    // Every rank needs the global token count before backward (the loss is a mean over it). Through the
    // communicator, like every collective of the step, so that a rank that stalls anywhere in a step
    // trips a deadline that names it (comm/watchdog.h) instead of hanging the others.
    int64_t counts[2] = {tokens, static_cast<int64_t>(batch.examples.size())};  // [tokens, examples] of this rank
    allreduce_host(*communicator, comm::Buffer{counts, 2, comm::DType::kInt64}, comm::ReduceOp::kSum, device);
    const int64_t global_tokens = counts[0], global_examples = counts[1];
    const double lr = scheduled_lr(options.lr, progress.step, warmup_steps, total_steps, options.decay);
    for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);

    reducer.zero_grad();
    reducer.prepare_backward(true);
    torch::Tensor loss_sum;
    if (!local.empty()) {
      {
        AutocastScope scope(autocast);  // forward and loss only
        loss_sum = model->loss(to_device(pad_batch(sources, device.cuda), torch_dev),
                               to_device(pad_batch(targets, device.cuda), torch_dev), options.label_smoothing);
      }
      (loss_sum * (static_cast<double>(world_size) / static_cast<double>(std::max<int64_t>(1, global_tokens)))).backward();
    }
    reducer.finish_backward();
    if (options.clip > 0) torch::nn::utils::clip_grad_norm_(parameters, options.clip);
    store.wait_for_copies();  // the last checkpoint's writer has copied the parameters: they may change
    adamw_step(optimizer);  // Note [Fused AdamW]
    ++progress.step;
    if (average) average->update(progress.step);
    progress.position = sampler.position();

    float step_loss_sum = loss_sum.defined() ? loss_sum.item<float>() : 0.0F;  // fp32 like the loss itself
    allreduce_host(*communicator, comm::Buffer{&step_loss_sum, 1, comm::DType::kFloat32}, comm::ReduceOp::kSum, device);
    window_loss += static_cast<double>(step_loss_sum);
    window_tokens += static_cast<double>(global_tokens);
    window_examples += static_cast<double>(global_examples);
    ++window_steps;
    const bool epoch_end = progress.position.step_in_epoch == 0;
    const double epoch = static_cast<double>(progress.step) / static_cast<double>(sampler.steps_per_epoch());
    meter.step({progress.step, total_steps, epoch,
                static_cast<double>(step_loss_sum) / static_cast<double>(std::max<int64_t>(1, global_tokens)),
                global_examples, lr});
    if (world.is_root() && (epoch_end || window_steps >= 50 || progress.step == total_steps)) {
      double seconds = seconds_since(window_start);
      meter.clear();
      log->info("step {}/{} epoch {:.2f} loss {:.4f} lr {:.2e} {:.0f} examples/s {:.0f} tokens/s elapsed {:.0f}s",
                progress.step, total_steps, epoch, window_loss / std::max(1.0, window_tokens), lr,
                window_examples / seconds, window_tokens / seconds, seconds_since(start));
      nlohmann::json line = {{"event", "train"}, {"step", progress.step}, {"epoch", epoch},
                             {"loss", window_loss / std::max(1.0, window_tokens)}, {"lr", lr},
                             {"examples_per_s", window_examples / seconds}, {"elapsed_s", seconds_since(start)}};
      jsonl << line.dump() << "\n" << std::flush;
    }
    if (epoch_end || window_steps >= 50) {
      window_start = Clock::now();
      window_loss = window_tokens = window_examples = 0;
      window_steps = 0;
    }
    if (test_stop_step > 0 && progress.step == test_stop_step && rank == std::min(1, world_size - 1)) std::raise(SIGUSR1);
    stopped = agree_on_stop(*communicator, device) > 0;
    if (stopped || progress.step % save_every == 0 || progress.step == total_steps) {
      store.save(make_save_request(progress, *model, optimizer, config_json, store, extras));
    }
    if (stopped) break;
    if (progress.step % eval_every == 0 && progress.step != total_steps) {
      meter.pause();
      meter.clear();
      evaluate("during training");
      meter.resume();
      window_start = Clock::now();  // examples/s counts training only
    }
  }
  meter.finish();
  store.wait();
  if (stopped) {
    if (world.is_root())
      log->warn("stopped by a signal at step {}: checkpoint committed in {}; run the same command again to resume",
                progress.step, store_options.dir);
    return 3;
  }
  evaluate("final");
  swap_average();  // the export holds the average
  const std::string path = write_final_export(*model, options.out_dir, export_section["model_config"].dump(), index,
                                             index_path, index_sha256, world);
  if (world.is_root())
    log->info("stage 1 done: {} steps in {:.0f}s; model exported to {}", progress.step, seconds_since(start), path);
  return 0;
}

}  // namespace dgr::trainer
