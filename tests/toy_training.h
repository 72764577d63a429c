// A small but complete data-parallel training run for the resume tests: an MLP with dropout on 50
// synthetic examples, EpochSampler + GradientReducer + Adam + checkpoints::Store, saving every 3 steps.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/world.h"

namespace dgr::testing {

struct ToyRunOptions {
  std::string checkpoint_dir;
  int64_t stop_at_step = 8;    // train until this many optimizer steps are done, then save and stop
  int64_t save_every = 3;
  bool resume = true;          // resume from the newest committed checkpoint when there is one
  std::string seen_file;       // when set: every example this rank trains on, "epoch step example" per line
  int step_delay_ms = 0;       // sleep after every step (so a test can kill the job mid-run)
  int signal_rank = -1;        // this rank raises SIGUSR1 to itself after step `signal_after_step`
  int64_t signal_after_step = -1;
};

struct ToyRunResult {
  int64_t first_step = 0;              // step the run started from (0, or the resumed step)
  std::vector<double> losses;          // [step run] global mean loss
  std::vector<float> parameters;       // all parameters, flattened in registration order
  std::string resumed_parameters_hash; // hash of the parameters right after restore ("" when not resumed)
  std::string final_parameters_hash;
  bool stopped_by_signal = false;      // a stop request was agreed on: checkpointed and stopped early
  int64_t last_step = 0;               // optimizer steps done when the run ended
};

constexpr int64_t kToyExamples = 50;
constexpr int64_t kToyGlobalBatch = 8;  // 7 steps per epoch, the last one with 2 examples

// Collective: every rank of the world calls it with the same options.
ToyRunResult run_toy_training(const ToyRunOptions& options, const World& world);

}  // namespace dgr::testing
