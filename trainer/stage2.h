// Stage 2 (DGR distillation, method.md section 7): the stage-1 model goes on learning from the prepared
// distillation data set (data/distill_data.h): per query, two lists sampled from its mined candidates
// (trainer/distill_sampler.h) are scored by the differentiable passage-score surrogate
// (trainer/surrogate.h), ranked against the teacher's order by the configured loss (trainer/distill_loss.h:
// DGR's distilled RankNet, LTRGR, listwise, or generation only), plus the generation loss on the top
// positive. Data-parallel over the ranks of `world` through the GradientReducer, with checkpoints (exact
// resume, also on another number of ranks), evaluation by retrieval and a model export at the end.
// `dgr train --stage distill` runs it. No LibTorch in this header: the launcher includes it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/world.h"
#include "trainer/stage1.h"

namespace dgr::trainer {

struct Stage2Options {
  std::string data_dir = "data/debian-tiny";  // corpus.tsv and the dev/test queries for evaluation
  std::string index_dir;                      // from `dgr index` ("" = DATA/index)
  std::string prepared_dir;                   // from `dgr prepare` (the distillation data set)
  std::string init_model;                     // the stage-1 export (OUT1/model.h5) the student starts from
  std::string out_dir = "runs/distill";       // OUT/checkpoints/step-*, OUT/model.h5, OUT/train.jsonl

  // The loss (trainer/distill_loss.h): dgr | ltrgr | listnet | listmle | lambdaloss | kl | generation.
  std::string loss = "dgr";
  double margin = 300;           // DGR: M; LTRGR: the top-pair margin
  double margin_step = 100;      // DGR: D (added per position between the pair)
  double second_margin = 400;    // LTRGR: the random-pair margin
  double first_weight = 3;       // DGR: w_0 (w_i = 1/(i+1) for the others)
  double temperature = 100;      // listwise losses: the student's scores are divided by it
  double teacher_temperature = 1;  // listnet, kl: the teacher's scores are divided by it
  double gen_weight = -1;        // < 0: 500 for dgr and the listwise losses, 1000 for ltrgr
  int max_keys = 40;             // keys per passage re-scored by the surrogate
  std::vector<std::string> gen_views = {"title", "body"};  // generation targets from the top positive

  double epochs = 3;
  int64_t global_batch = 8;      // queries per optimizer step over all ranks
  double lr = 1e-4;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0;
  double warmup = 0.1;
  std::string decay = "linear";  // linear | constant
  double clip = 1.0;
  double label_smoothing = 0.1;
  double dropout = -1;           // < 0: the stage-1 model's
  uint64_t seed = 1;
  int threads = 0;
  int64_t save_every = 0;        // 0 = once per epoch
  int keep_last = 3;
  bool async_save = true;
  bool resume = true;
  double eval_every = 1;         // epochs between evaluations (0 = only at the end)
  std::vector<std::string> eval_splits = {"dev"};
  int eval_max_queries = 0;
  int64_t max_steps = 0;
  double progress_every_s = 10;
  std::string comm_backend = "ring";
  std::string device = "auto";     // auto | cpu | cuda (GPU = local rank); trainer/device.h
  std::string precision = "fp32";  // fp32 | bf16 (autocast of forward and losses, CUDA only)
  int comm_timeout_s = 300;
  double bucket_mib = 25;                     // gradient buckets after the first (1 MiB); trainer/gradient_reducer.h
  double piece_mib = -1;                      // allreduce pieces of a bucket; < 0 = auto (Note [Pieces])
  RetrievalSettings retrieval;
};

// Collective. Returns 0 when training finished, 3 when it stopped on a signal after saving a checkpoint.
int run_stage2(const Stage2Options& options, const World& world);

}  // namespace dgr::trainer
