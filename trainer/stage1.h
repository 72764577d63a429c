// Stage 1 (MINDER, method.md section 3): the seq2seq model learns to generate passage identifiers from the
// stage-1 pairs (trainer/stage1_data.h), through the Trainer (trainer/trainer.h: data-parallel training,
// checkpoints with exact resume, evaluation by retrieval, the export at the end). `dgr train --stage generate` runs it. No
// LibTorch in this header: the launcher includes it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/world.h"
#include "trainer/options.h"
#include "trainer/stage1_data.h"

namespace dgr::trainer {

// Stage 1's own options; the shared ones are in `train` (trainer/options.h).
struct Stage1Options {
  TrainOptions train = generate_defaults();
  std::string preset = "cpu";  // model preset (trainer/model.h)
  // Start from this export's architecture and weights instead of the preset's random ones (an imported BART,
  // `dgr import`, or an earlier stage-1 model); its tokenizer must be the index's. "" = the preset.
  std::string init_model;
  // The training queries: DATA/queries.SPLIT.tsv with DATA/qrels.SPLIT.tsv (e.g. a part from `dgr data split`,
  // holding the rest out for stage 2).
  std::string train_split = "train";
  Stage1DataOptions data;
};

// Collective. Returns 0 when training finished, 3 when it stopped on a signal after saving a checkpoint
// (resume by running the same command again). Errors are thrown as dgr::Error.
int run_stage1(const Stage1Options& options, const World& world);

}  // namespace dgr::trainer
