// The option groups' flags (flags.h).
#include "launcher/flags.h"

#include <fmt/format.h>

#include "launcher/commands.h"

namespace dgr::launcher {
namespace {

// A validator of numbers: `ok(value)` or the error `rule`.
CLI::Validator number_rule(const std::string& rule, std::function<bool(double)> ok, const std::string& description) {
  return CLI::Validator(
      [rule, ok](std::string& text) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(text, value)) return "'" + text + "' is not a number";
        return ok(value) ? std::string() : "must be " + rule + " (not " + text + ")";
      },
      description);
}

std::string number(double v) { return fmt::format("{}", v); }

void add_optimizer_flags(CLI::App& app, trainer::OptimizerOptions& o, StagedDefaults& staged) {
  const trainer::OptimizerOptions distill = trainer::distill_defaults().optimizer;
  staged.add(app, "--lr", o.lr, distill.lr, "Peak learning rate (AdamW)")->check(more_than(0));
  app.add_option("--beta1", o.beta1, "AdamW beta1")->check(between(0, 0.999999));
  staged.add(app, "--beta2", o.beta2, distill.beta2, "AdamW beta2")->check(between(0, 0.999999));
  app.add_option("--eps", o.eps, "AdamW epsilon")->check(more_than(0));
  staged.add(app, "--weight-decay", o.weight_decay, distill.weight_decay, "AdamW weight decay")->check(at_least(0));
  app.add_option("--clip", o.clip, "Gradient norm clipping (0 = off)")->check(at_least(0));
}

void add_schedule_flags(CLI::App& app, trainer::ScheduleOptions& o, StagedDefaults& staged) {
  const trainer::ScheduleOptions distill = trainer::distill_defaults().schedule;
  staged.add(app, "--epochs", o.epochs, distill.epochs, "Epochs over the stage's examples")->check(more_than(0));
  staged.add(app, "--batch", o.global_batch, distill.global_batch,
             "Examples per optimizer step over all ranks (pairs; queries in stage 2)")->check(at_least(1));
  staged.add(app, "--warmup", o.warmup, distill.warmup, "Warmup as a fraction of all steps (then the decay)")
      ->check(between(0, 1));
  app.add_option("--decay", o.decay, "Learning rate after warmup: linear (to 0) or constant")
      ->check(CLI::IsMember({"linear", "constant"}));
  app.add_option("--max-steps", o.max_steps, "Stop after this many optimizer steps (0 = all epochs)")->check(at_least(0));
}

void add_checkpoint_flags(CLI::App& app, trainer::CheckpointOptions& o) {
  app.add_option("--save-every", o.save_every, "Steps between checkpoints (0 = once per epoch)")->check(at_least(0));
  app.add_option("--keep-last", o.keep_last, "Committed checkpoints to keep (0 = all)")->check(at_least(0));
  app.add_flag("!--sync-save", o.async_save, "Write checkpoints in the training thread (default: in the background)");
  app.add_option("--resume", o.resume_from, "auto: continue from the newest committed step in OUT/checkpoints (or start); "
                 "never: start, refusing an OUT that holds a run unless --force; PATH: continue from this committed "
                 "step directory (e.g. OUT/checkpoints/step-00000500; later steps of OUT are moved aside)");
  app.add_flag("--force", o.force, "With --resume never or PATH: move the run already in OUT aside (checkpoints, "
               "train.jsonl as *.replaced-TIME) instead of refusing");
  app.add_flag("--accept-changes", o.accept_changes, "Resume even though the run's data, views, loss, global batch or "
               "seed differ from the checkpoint's (each change logged); another model is always refused");
  app.add_flag("!--no-resume", o.resume, "Start from scratch even when OUT/checkpoints has a committed step (= --resume "
               "never --force: the previous run's checkpoints and train.jsonl are moved aside as *.replaced-TIME)");
}

void add_comm_flags(CLI::App& app, trainer::CommOptions& o) {
  app.add_option("--comm", o.backend, "Gradient allreduce: ring, mpi, nccl")->check(CLI::IsMember({"ring", "mpi", "nccl"}));
  app.add_option("--comm-timeout", o.timeout_s, "Seconds before a collective that does not complete ends the job")
      ->check(at_least(1));
  app.add_option("--bucket-mib", o.bucket_mib, "Gradient bucket size in MiB after the first 1 MiB bucket (as DDP's "
                 "bucket_cap_mb)")->check(more_than(0));
  app.add_option("--piece-mib", o.piece_mib, "Allreduce a bucket in pieces of this many MiB as its gradients "
                 "become ready (0 = whole buckets; default: 4 with nccl, whole buckets on the CPU)")
      ->check(at_least(0))
      ->default_str("auto");
}

void add_eval_flags(CLI::App& app, trainer::EvalOptions& o) {
  app.add_option("--eval-every", o.every, "Epochs between retrieval evaluations (0 = at the end only)")->check(at_least(0));
  app.add_option("--eval-split", o.splits, "Splits evaluated during training; repeatable");
  app.add_option("--keep-best", o.keep_best, "Also export the best evaluated model: METRIC or SPLIT:METRIC (e.g. "
                 "dev:MRR@10, R@5): OUT/model.best.h5 and OUT/best.json, updated at every evaluation that improves it");
  app.add_option("--eval-max-queries", o.max_queries, "Queries per evaluated split (0 = all)")->check(at_least(0));
  add_retrieval_flags(app, o.retrieval, {.views_flag = "--eval-views", .depth = false});
}

}  // namespace

CLI::Validator at_least(double min) {
  return number_rule("at least " + number(min), [min](double v) { return v >= min; }, "NUMBER >= " + number(min));
}

CLI::Validator more_than(double min) {
  return number_rule("more than " + number(min), [min](double v) { return v > min; }, "NUMBER > " + number(min));
}

CLI::Validator between(double min, double max) {
  return number_rule(fmt::format("between {} and {}", number(min), number(max)),
                     [min, max](double v) { return v >= min && v <= max; },
                     fmt::format("NUMBER in [{}, {}]", number(min), number(max)));
}

void add_retrieval_flags(CLI::App& app, trainer::RetrievalSettings& settings, const RetrievalFlags& which) {
  app.add_option(which.views_flag, settings.views, "Views searched: title, body, pq")->delimiter(',');
  app.add_option("--beam", settings.beam, "Beam size")->check(at_least(1));
  if (which.depth) app.add_option("--depth", settings.top_k, "Passages per query")->check(at_least(1));
  app.add_flag("!--no-ngram-keys", settings.ngram_keys,
               "Without the query n-gram keys (body-view keys: only when the body view is searched)");
  app.add_flag("!--no-unigram-keys", settings.unigram_keys,
               "Without the unigram keys (body-view keys: only when the body view is searched)");
  app.add_flag("--partial-keys", settings.partial_keys,
               "Title and pseudo-query keys also every unfinished prefix of the beam history (SEAL's partial_titles, "
               "dgr before 2026-12-07; default: complete identifiers only, method.md section 4)");
}

void add_device_flags(CLI::App& app, trainer::DeviceOptions& options, bool precision) {
  app.add_option("--device", options.device, kDeviceHelp)->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  if (precision) {
    app.add_option("--precision", options.precision, "fp32, or bf16: autocast to bfloat16 for forward and loss on "
                   "CUDA (weights, optimizer and gradient allreduce stay fp32)")->check(CLI::IsMember({"fp32", "bf16"}));
  }
  app.add_option("--threads", options.threads, "LibTorch threads per rank (0 = the node's cores / ranks on the node)")
      ->check(at_least(0));
}

void add_train_flags(CLI::App& app, trainer::TrainOptions& o, StagedDefaults& staged) {
  app.add_option("--data", o.data_dir, "Data set directory (corpus.tsv, queries/qrels.{train,dev,test}.tsv)");
  app.add_option("--index", o.index_dir, "Index directory from `dgr index` ('' = DATA/index)");
  staged.add(app, "--out", o.out_dir, trainer::distill_defaults().out_dir,
             "Run directory: OUT/checkpoints, OUT/model.h5, OUT/train.jsonl");
  app.add_option("--seed", o.seed, "Seed of the model init, the data order and the examples");
  app.add_option("--dropout", o.dropout, "Dropout (< 0: the preset's, or the initial model's in stage 2)");
  app.add_option("--label-smoothing", o.label_smoothing, "Label smoothing of the cross-entropy")->check(between(0, 1));
  app.add_option("--ema-decay", o.ema_decay, "Evaluate and export an exponential moving average of the weights with "
                 "this decay, e.g. 0.999 (Marian's exponential smoothing; 0 = off)")->check(between(0, 0.999999));
  app.add_option("--progress-every-s", o.progress_every_s, "Seconds between progress lines on rank 0 in a log file "
                 "or pipe (a bar on a terminal; 0 = off; docs/monitoring.md)")->check(at_least(0));
  add_optimizer_flags(app, o.optimizer, staged);
  add_schedule_flags(app, o.schedule, staged);
  add_checkpoint_flags(app, o.checkpoint);
  add_comm_flags(app, o.comm);
  add_eval_flags(app, o.eval);
  add_device_flags(app, o.device, true);
}

}  // namespace dgr::launcher
