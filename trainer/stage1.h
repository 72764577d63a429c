// Stage 1 (MINDER, method.md section 3): the seq2seq model learns to generate passage identifiers from the
// stage-1 pairs (trainer/stage1_data.h), data-parallel over the ranks of `world` through the
// GradientReducer, with checkpoints (exact resume, also on another number of ranks), evaluation of
// retrieval during training, and a model export at the end. `dgr train --stage generate` runs it. No
// LibTorch in this header: the launcher includes it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/world.h"
#include "retrieval/views.h"
#include "trainer/stage1_data.h"

namespace dgr::trainer {

// Retrieval settings used for evaluation during training and by `dgr retrieve`.
struct RetrievalSettings {
  std::vector<std::string> views = {"title"};  // views searched at retrieval time
  int beam = 10;
  int top_k = 100;
  bool ngram_keys = true;     // body view: query word n-grams as extra keys
  bool unigram_keys = true;   // body view: top unigrams of the first decoding step
  bool overlapped_keys = false;  // also report keys found only on positions heavier keys took (mining)
};

struct Stage1Options {
  std::string data_dir = "data/debian-tiny";  // corpus.tsv, queries.train.tsv, qrels.train.tsv (+ dev/test)
  std::string index_dir;                      // from `dgr index` ("" = DATA/index)
  std::string out_dir = "runs/stage1";        // OUT/checkpoints/step-*, OUT/model.h5, OUT/train.jsonl
  std::string preset = "cpu";                 // model preset (trainer/model.h)
  double dropout = -1;                        // < 0: the preset's
  double epochs = 15;
  int64_t global_batch = 64;                  // pairs per optimizer step over all ranks
  double lr = 2e-3;
  double beta1 = 0.9, beta2 = 0.98, eps = 1e-8;
  double weight_decay = 0.01;
  double warmup = 0.05;                       // fraction of the steps (linear warmup, then the decay)
  std::string decay = "linear";               // after warmup: linear (to 0 at the last step) | constant
  double clip = 1.0;                          // global gradient norm (0 = off)
  double label_smoothing = 0.1;
  uint64_t seed = 1;
  int threads = 0;                            // LibTorch threads per rank (0 = cores per rank on this node)
  int64_t save_every = 0;                     // steps between checkpoints (0 = once per epoch)
  int keep_last = 3;
  bool async_save = true;
  bool resume = true;                         // continue from the newest committed checkpoint in OUT
  double eval_every = 1;                      // epochs between evaluations (0 = only at the end)
  std::vector<std::string> eval_splits = {"dev"};
  int eval_max_queries = 0;                   // 0 = every query of the split
  int64_t max_steps = 0;                      // stop after this many optimizer steps (0 = all epochs)
  double progress_every_s = 10;               // seconds between progress lines on rank 0 (0 = none; trainer/progress.h)
  std::string comm_backend = "ring";
  int comm_timeout_s = 300;
  double bucket_mib = 25;                     // gradient buckets after the first (1 MiB); trainer/gradient_reducer.h
  double piece_mib = -1;                      // allreduce pieces of a bucket; < 0 = auto (Note [Pieces])
  double ema_decay = 0;                       // > 0: evaluate and export an average of the weights (weight_average.h)
  std::string device = "auto";                // auto | cpu | cuda (GPU = local rank); trainer/device.h
  std::string precision = "fp32";             // fp32 | bf16 (autocast of forward and loss, CUDA only)
  RetrievalSettings retrieval;
  Stage1DataOptions data;
};

// Rank 0 (others return at once): logs the effective configuration of a run (options after the config
// file, flags and defaults, plus what an export needs) and writes it to OUT/config.json, atomically.
void save_effective_config(const std::string& out_dir, const std::string& config_json, const World& world);

// Collective. Returns 0 when training finished, 3 when it stopped on a signal after saving a checkpoint
// (resume by running the same command again). Errors are thrown as dgr::Error.
int run_stage1(const Stage1Options& options, const World& world);

}  // namespace dgr::trainer
