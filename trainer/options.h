// The option groups of dgr's runs, declared once. Each group is one struct here; launcher/flags.cpp
// registers each group's flags (and so its config keys, Note [Config keys]) in one function, which `dgr train`
// (both stages), `dgr retrieve` and `dgr mine` reuse. Where the two training stages differ, it is only in
// their defaults: generate_defaults() and distill_defaults(). No LibTorch in this header.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dgr::trainer {

// Retrieval settings used for evaluation during training, by `dgr retrieve` and by `dgr mine`.
struct RetrievalSettings {
  std::vector<std::string> views = {"title"};  // views searched at retrieval time
  int beam = 10;
  int top_k = 100;
  // Extra keys of the body view (method.md section 4): they exist only when "body" is among `views`.
  bool ngram_keys = true;        // the query's word n-grams
  bool unigram_keys = true;      // top unigrams of the first decoding step
  bool partial_keys = false;     // title/pq keys also every unfinished prefix (SEAL's partial_titles; off: the method)

  bool searches(const std::string& view) const {
    for (const auto& v : views)
      if (v == view) return true;
    return false;
  }
  // As they take effect: a search without the body view has neither.
  bool uses_ngram_keys() const { return ngram_keys && searches("body"); }
  bool uses_unigram_keys() const { return unigram_keys && searches("body"); }
};

// AdamW and gradient clipping.
struct OptimizerOptions {
  double lr = 2e-3;  // peak learning rate
  double beta1 = 0.9, beta2 = 0.98, eps = 1e-8;
  double weight_decay = 0.01;
  double clip = 1.0;  // global gradient norm (0 = off)
};

// How long a run is and how the learning rate moves over it.
struct ScheduleOptions {
  double epochs = 15;
  int64_t global_batch = 64;     // examples per optimizer step over all ranks (pairs, or queries in stage 2)
  double warmup = 0.05;          // fraction of the steps (linear warmup, then the decay)
  std::string decay = "linear";  // after warmup: linear (to 0 at the last step) | constant
  int64_t max_steps = 0;         // stop after this many optimizer steps (0 = all epochs)
};

// Checkpoints (checkpoints/store.h) and resume.
struct CheckpointOptions {
  int64_t save_every = 0;  // steps between checkpoints (0 = once per epoch)
  int keep_last = 3;
  bool async_save = true;
  bool resume = true;  // continue from the newest committed checkpoint in OUT (--no-resume = --resume never --force)
  // --resume: "auto" (the newest committed step of OUT, or a fresh start), "never" (refuse an OUT that holds a
  // run unless `force`), or the path of a committed step directory to continue from (Note [Resume modes] in
  // trainer.cpp).
  std::string resume_from = "auto";
  bool force = false;  // with --resume never or PATH: move a previous run in OUT aside instead of refusing
  bool accept_changes = false;  // resume although data, views, loss, batch or seed changed (not the model)
};

// The gradient allreduce (comm/, trainer/gradient_reducer.h).
struct CommOptions {
  std::string backend = "ring";  // ring | mpi | nccl
  int timeout_s = 300;           // deadline of every collective
  double bucket_mib = 25;        // gradient buckets after the first (1 MiB)
  double piece_mib = -1;         // allreduce pieces of a bucket; < 0 = auto (Note [Pieces])
};

// Evaluation by retrieval during training.
struct EvalOptions {
  double every = 1;  // epochs between evaluations (0 = only at the end)
  std::vector<std::string> splits = {"dev"};
  int max_queries = 0;  // 0 = every query of the split
  RetrievalSettings retrieval;
  // "METRIC" or "SPLIT:METRIC" (e.g. "dev:MRR@10"; the first --eval-split when none is named): every evaluation
  // that improves it writes OUT/model.best.h5 and OUT/best.json, besides the last model (Note [Best model]).
  std::string keep_best;
};

// Where the model runs (trainer/device.h).
struct DeviceOptions {
  std::string device = "auto";     // auto | cpu | cuda (GPU = local rank)
  std::string precision = "fp32";  // fp32 | bf16 (autocast of forward and losses, CUDA only)
  int threads = 0;                 // LibTorch threads per rank (0 = cores per rank on this node)
};

// What every training stage takes (trainer/trainer.h).
// What the launcher knows of an attempt and the run directory records (OUT/attempts/attempt-N.json, .toml;
// Note [Run directory] in trainer.cpp): filled by `dgr train`, empty in tests.
struct RunRecord {
  std::string command_line;   // argv as typed, shell-quoted
  std::string resolved_toml;  // every option's value, re-feedable to --config
  std::string versions;       // dgr, git commit, libraries (launcher/version.h)
};

struct TrainOptions {
  RunRecord record;
  std::string data_dir = "data/debian-tiny";  // corpus.tsv, queries/qrels.{train,dev,test}.tsv
  std::string index_dir;                      // from `dgr index` ("" = DATA/index)
  std::string out_dir = "runs/stage1";        // OUT/checkpoints/step-*, OUT/model.h5, OUT/train.jsonl
  uint64_t seed = 1;
  double dropout = -1;           // < 0: the preset's (stage 1) or the initial model's (stage 2)
  double label_smoothing = 0.1;  // of the generation cross-entropy
  double ema_decay = 0;          // > 0: evaluate and export an average of the weights (weight_average.h)
  double progress_every_s = 10;  // seconds between progress lines on rank 0 (0 = none; trainer/progress.h)
  OptimizerOptions optimizer;
  ScheduleOptions schedule;
  CheckpointOptions checkpoint;
  CommOptions comm;
  EvalOptions eval;
  DeviceOptions device;
};

// Stage 1 (`--stage generate`): the values above.
TrainOptions generate_defaults();
// Stage 2 (`--stage distill`): a few epochs of small batches at a small learning rate, from the stage-1 model.
TrainOptions distill_defaults();

}  // namespace dgr::trainer
