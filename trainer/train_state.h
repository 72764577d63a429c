// Training state <-> checkpoints: a module's parameters and buffers, the Adam/AdamW state, the RNG of this
// rank and the data position become named arrays and JSON for checkpoints::Store, and come back from a
// LoadedCheckpoint. Note [Resume on another world size]: parameters, optimizer state, step and data
// position are replicated and restored exactly; RNG states are per rank and restored only when the world
// size is the one that saved them, otherwise re-derived from (seed, rank, step).
#pragma once

#include <torch/torch.h>

#include "trainer/torch_compat.h"

#include <string>

#include "checkpoints/store.h"
#include "sharding/sampler.h"

namespace dgr::trainer {

struct TrainProgress {
  int64_t step = 0;                  // optimizer steps done
  sharding::SamplerPosition position;  // next data step
  uint64_t seed = 0;                 // run seed (per-rank RNG is re-derived from it on another world size)
};

// The key of `p`'s entry in a LibTorch optimizer's state() (LibTorch's own spelling: its TensorImpl address).
compat::OptimizerStateKey state_key(const torch::Tensor& p);

// ("<state-dict key>", parameter) for every parameter of `model`, in registration order.
std::vector<std::pair<std::string, torch::Tensor>> named_parameters(torch::nn::Module& model);

// Tensors saved with the model, e.g. WeightAverage::named_averages(): ("ema/<key>", tensor), restored in place.
using ExtraTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Builds the request for store.save(): host copies of every parameter and buffer ("model/<key>") and of the
// optimizer state ("optimizer/<key>/exp_avg", ...) on the rank that writes them (rank 0), this rank's
// random state ("rng/cpu", and "rng/cuda" when the model is on a GPU), and the progress as JSON. The
// copies go into the store's recycled host buffers (checkpoints::StagingPool); host tensors are copied by
// the store's writer (Note [Overlapped copy] in checkpoints/store.cpp), so the caller must call
// store.wait_for_copies() before anything writes the parameters or the optimizer state again (its next
// optimizer step).
checkpoints::SaveRequest make_save_request(const TrainProgress& progress, torch::nn::Module& model,
                                           torch::optim::Optimizer& optimizer, const std::string& config_json,
                                           checkpoints::Store& store, const ExtraTensors& extras = {});

// Restores what make_save_request saved into `model` and `optimizer` (in place: the parameters keep their
// storage, so reducer views stay valid) and returns the progress. Every missing or mismatched array is
// reported in one CheckpointError. `rank` and `world_size` are this job's. An extra "<group>/<key>" that the
// checkpoint lacks (written without it) starts from the restored "model/<key>", with a warning.
TrainProgress restore(const checkpoints::LoadedCheckpoint& checkpoint, torch::nn::Module& model,
                      torch::optim::Optimizer& optimizer, int rank, int world_size, const ExtraTensors& extras = {});

// The model's parameters and buffers as arrays named by their state-dict keys (for export files), and
// back: every key of the model must be present with its shape and dtype (CheckpointError naming `file`
// and the first mismatch otherwise); extra arrays are an error too.
std::vector<checkpoints::NamedArray> model_arrays(torch::nn::Module& model);
void load_model_arrays(const std::vector<checkpoints::NamedArray>& arrays, torch::nn::Module& model,
                       const std::string& file);

// Seeds this rank's generators for a fresh start or a resume on another world size.
void seed_rank_rng(uint64_t seed, int rank, int64_t step);

// Collective. With `resume`, restores the newest committed checkpoint of `store` into model, optimizer
// and sampler (rank 0 logs where from) and returns its progress; otherwise, or when there is none, seeds
// this rank's generators and returns step 0 of run `seed`. With `config_json` (this run's effective config),
// the checkpoint's is compared first (check_resume_config).
// With `from_step_dir` (a committed step directory), that step is restored instead of the store's newest.
TrainProgress resume_or_start(checkpoints::Store& store, bool resume, uint64_t seed, torch::nn::Module& model,
                              torch::optim::Optimizer& optimizer, sharding::EpochSampler& sampler, int rank,
                              int world_size, const ExtraTensors& extras = {}, const std::string& config_json = "",
                              const std::string& from_step_dir = "", bool accept_changes = false);

// A resume must continue the same run: the model, the tokenizer and index, the stage, the training data
// (train_split / prepared data set, views, loss), the global batch and the seed must equal the checkpoint's
// (ConfigError listing every difference, naming `dir` and saying to use --no-resume or another --out; with
// `accept_changes` (--accept-changes) they are returned as changes instead, except another model). Other
// settings may change (a longer schedule, another learning rate, evaluation, paths to the same data): they
// are returned as "key: old -> new" lines for the caller to log.
std::vector<std::string> check_resume_config(const std::string& saved_json, const std::string& current_json,
                                             const std::string& dir, bool accept_changes = false);

}  // namespace dgr::trainer
