// Stage 2 (DGR distillation, method.md section 7): the stage-1 model goes on learning from the prepared
// distillation data set (data/distill_data.h): per query, two lists sampled from its mined candidates
// (trainer/distill_sampler.h) are scored by the differentiable passage-score surrogate
// (trainer/surrogate.h), ranked against the teacher's order by the configured loss (trainer/distill_loss.h:
// DGR's distilled RankNet, LTRGR, listwise, or generation only), plus the generation loss on the top
// positive. Through the Trainer (trainer/trainer.h: data-parallel training, checkpoints with exact resume,
// evaluation by retrieval, the export at the end).
// `dgr train --stage distill` runs it. No LibTorch in this header: the launcher includes it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/world.h"
#include "trainer/options.h"

namespace dgr::trainer {

// Stage 2's own options; the shared ones are in `train` (trainer/options.h: data_dir holds corpus.tsv and
// the dev/test queries for evaluation; out_dir defaults to runs/distill).
struct Stage2Options {
  TrainOptions train = distill_defaults();
  std::string prepared_dir;                   // from `dgr prepare` (the distillation data set)
  std::string init_model;                     // the stage-1 export (OUT1/model.h5) the student starts from

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
};

// Collective. Returns 0 when training finished, 3 when it stopped on a signal after saving a checkpoint.
int run_stage2(const Stage2Options& options, const World& world);

}  // namespace dgr::trainer
