// What the stage-1 and stage-2 training loops share around their steps: the learning-rate schedule, the
// evaluation sets and the evaluation by retrieval (metrics logged and appended to OUT/train.jsonl), and the
// model export at the end. No LibTorch in this header.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "common/world.h"
#include "retrieval/index_dir.h"
#include "retrieval/seq2seq.h"
#include "retrieval/views.h"
#include "data/readers.h"
#include "trainer/options.h"

namespace dgr::trainer {

class Seq2Seq;

// Rank 0 (others return at once): logs the effective configuration of a run (options after the config
// file, flags and defaults, plus what an export needs) and writes it to OUT/config.json, atomically.
void save_effective_config(const std::string& out_dir, const std::string& config_json, const World& world);

// The communicator of a training run: `backend` (ring, mpi, nccl) with a deadline of `timeout_s` seconds on
// every collective. Collective.
std::unique_ptr<comm::Communicator> make_train_communicator(const std::string& backend, int timeout_s,
                                                            const World& world);

// Linear warmup over warmup_steps to `base`, then `decay`: "constant", or "linear" to 0 at total_steps.
double scheduled_lr(double base, int64_t step, int64_t warmup_steps, int64_t total_steps, const std::string& decay);

struct EvalSet {
  std::string split;
  std::vector<data::Query> queries;  // the first max_queries of DATA/queries.SPLIT.tsv (0 = all)
  std::vector<data::Qrel> qrels;
};
std::vector<EvalSet> load_eval_sets(const std::filesystem::path& data_dir, const std::vector<std::string>& splits,
                                    int max_queries, const data::Corpus& corpus);

// Where an evaluation happens in a run, for the log line and the `eval` event.
struct EvalPoint {
  const char* when = "";  // "during training", "final", ...
  int64_t step = 0;
  double epoch = 0;
  double elapsed_s = 0;
  int64_t attempt = 0;  // the run's attempt (Note [Run directory] in trainer.cpp)
};
// Collective over `control` (a host communicator): retrieves every set's queries with `scorer` (sharded over
// the ranks); rank 0 logs the metrics and appends one `eval` event per set to `jsonl` (ignored elsewhere),
// and returns split -> metric -> mean (empty on other ranks).
std::map<std::string, std::map<std::string, double>> evaluate_sets(retrieval::Seq2SeqScorer& scorer, const retrieval::IndexDir& index, const std::vector<EvalSet>& sets,
                   const RetrievalSettings& settings, const retrieval::ViewLimits& limits, comm::Communicator& control,
                   const EvalPoint& point, std::ostream& jsonl);

// A model to train on from (stage 1 `--init-model`: an imported BART or an earlier export; stage 2's student):
// the export's architecture and weights, built on the CPU after torch::manual_seed(seed), dropout replaced when
// `dropout` >= 0. Refuses (CheckpointError naming the file) an export made with another tokenizer than the
// index's, and one whose pad or decoder-start id is not the tokenizer's.
struct InitialModel {
  std::shared_ptr<Seq2Seq> model;
  retrieval::ViewLimits limits;            // the view limits recorded in the export
  std::vector<std::string> trained_views;  // the views it learnt (empty: an import, or an old export)
};
InitialModel load_initial_model(const std::string& path, const retrieval::IndexDir& index, const std::string& index_path,
                                double dropout, uint64_t seed);

// The wall-clock time as train.jsonl records it: UTC, ISO 8601 with milliseconds ("2026-12-07T22:58:01.123Z").
std::string utc_time_now();

// Rank 0 (others return ""): writes OUT/model.h5 (checkpoints/export.h) with the model's weights, its
// config ({"model", "view_limits"} JSON) and the ids and checksums of the tokenizer and index; returns the path.
std::string write_final_export(Seq2Seq& model, const std::string& out_dir, const std::string& model_config_json,
                               const retrieval::IndexDir& index, const std::string& index_path,
                               const std::string& index_sha256, const World& world,
                               const std::string& file_name = "model.h5");

}  // namespace dgr::trainer
