// The training loop of every stage. A Trainer owns what the stages share: the communicator, the gradient
// reducer, AdamW with its schedule and clipping, the moving average of the weights, checkpoints with exact
// resume, stop signals, evaluation by retrieval, progress lines and OUT/train.jsonl, and the export at the
// end. A stage is an Objective: how to read its examples and what loss they give (stage 1, trainer/stage1.cpp:
// pairs -> cross-entropy; stage 2, trainer/stage2.cpp: lists -> ranking loss + generation loss).
//
// One step of Trainer::run, in this order on every rank:
//   batch    the EpochSampler's examples of this rank, read by Objective::load (host work);
//   counts   Objective::load's normalisers (e.g. target tokens) summed over the ranks;
//   forward  Objective::forward: this rank's loss, scaled so that the ranks' average gradient is the
//            gradient of the global batch's mean loss;
//   backward with the GradientReducer's allreduce overlapped, then clipping and AdamW;
//   log      Objective::statistics summed over the ranks: progress, and a key=value line and a JSONL
//            event per window;
//   stop     a vote on stop signals, a checkpoint at epoch ends (or every save_every steps) and on a stop;
//   eval     every eval_every epochs, retrieval with the current weights (the average, with --ema-decay).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/world.h"
#include "retrieval/index_dir.h"
#include "retrieval/views.h"
#include "data/readers.h"
#include "sharding/sampler.h"
#include "trainer/device.h"
#include "trainer/model.h"
#include "trainer/options.h"

namespace dgr::trainer {

// Named numbers of a log window, in the order they are printed.
using Fields = std::vector<std::pair<std::string, double>>;

class Objective {
 public:
  virtual ~Objective() = default;
  // Examples of one epoch (the EpochSampler permutes them).
  virtual int64_t num_examples() const = 0;
  // Reads this rank's examples of the step (host work only) and returns the counts that the loss is
  // normalised by (e.g. target tokens) on this rank; the Trainer sums them over the ranks for forward().
  virtual std::vector<int64_t> load(const sharding::EpochSampler::Step& step) = 0;
  // Forward over what load() read: the tensor to differentiate, scaled so that the average of the ranks'
  // gradients is the gradient of the global batch's mean loss. Undefined when this rank has no examples.
  virtual torch::Tensor forward(const sharding::EpochSampler::Step& step, const std::vector<int64_t>& global_counts,
                                int world_size) = 0;
  // This rank's sums for the log, after backward (the Trainer sums them over the ranks).
  virtual std::vector<float> statistics() = 0;
  // The mean loss of one step, from its global statistics, counts and number of examples (progress lines).
  virtual double step_loss(const std::vector<double>& statistics, const std::vector<double>& counts,
                           double examples) const = 0;
  // The losses of a log window from the statistics, counts and examples summed over its steps ("loss"
  // first): in the key=value line and the `train` event of OUT/train.jsonl.
  virtual Fields window_fields(const std::vector<double>& statistics, const std::vector<double>& counts,
                               double examples) const = 0;
  // Rates of the window for the key=value line only (e.g. tokens per second over `seconds` of training).
  virtual Fields window_rates(const std::vector<double>& /*statistics*/, const std::vector<double>& /*counts*/,
                              double /*seconds*/) const {
    return {};
  }
  // Note [Step diagnostics]: an objective whose loss is a sum of two terms names the first here (a part of
  // the tensor forward() returned, scaled the same way; undefined or without a graph on a rank that has
  // none of it: counted as zero). The Trainer then writes one `step` event per optimizer step into
  // OUT/train.jsonl: window_fields() of that step alone, the global gradient norm before clipping, and the
  // norms of the two terms' gradients (the part's by torch::autograd::grad, averaged over the ranks as the
  // gradients are; the rest's as the total minus it, exact by linearity). Same answer on every rank.
  virtual bool has_diagnosed_part() const { return false; }
  virtual torch::Tensor diagnosed_part() { return {}; }
  virtual std::string diagnosed_part_name() const { return "part"; }  // field prefix: "<name>_grad_norm"
  virtual std::string rest_name() const { return "rest"; }
};

// What a stage tells the Trainer about itself.
struct StageInfo {
  std::string name;                      // "stage 1" or "stage 2", in log lines
  std::string eval_when = "during training";
  bool evaluate_at_start = false;        // evaluate once before the first step ("before <eval_when>")
  nlohmann::json options;                // the stage's own options, for OUT/config.json and checkpoints
  retrieval::ViewLimits limits;          // identifier lengths of the views (evaluation, export)
  std::vector<std::string> trained_views;  // views the model has learnt to generate (export: trained_views)
};

// The index directory of a run, loaded and checked against the corpus, with its tokenized passages.
struct IndexedCorpus {
  std::string index_path;
  std::string index_sha256;  // of fm_index.bin (checked by load_index_dir)
  retrieval::IndexDir index;
  data::Corpus corpus;
  std::vector<retrieval::PassageTokens> passages;  // by document number of the index
};
// Reads DATA/corpus.tsv and the index (DATA/index or index_dir) and tokenizes every passage; DataError when
// they do not belong together.
IndexedCorpus load_indexed_corpus(const TrainOptions& options);

// Applies the thread count, installs the caching CPU allocator and resolves the device, before any data is
// read, so that a bad --device fails at once on every rank. Local.
DeviceChoice prepare_run(const TrainOptions& options, const World& world);

// Right-pads sequences with `pad` (the model's pad id) into an int64 [batch, longest] host tensor, pinned when
// it goes to a GPU.
torch::Tensor pad_batch(const std::vector<const std::vector<int32_t>*>& sequences, int64_t pad, bool pinned);

class Trainer {
 public:
  // Collective. `model` is initialised (identically on every rank) and on `device`; the optimizer,
  // communicator, reducer, checkpoint store and moving average are made here, and the newest committed
  // checkpoint of OUT is restored (unless options.checkpoint.resume is false).
  Trainer(const TrainOptions& options, const World& world, const DeviceChoice& device, std::shared_ptr<Seq2Seq> model,
          const IndexedCorpus& data, StageInfo stage, Objective& objective);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Collective. Trains to the last step, evaluates and exports OUT/model.h5: returns 0; or stops on a
  // signal after a checkpoint: returns 3 (run the same command again to resume).
  int run();

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace dgr::trainer
