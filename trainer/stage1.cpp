// Stage 1's objective: this rank's share of the global batch of pairs, padded into one batch, the
// label-smoothed cross-entropy summed over target tokens and scaled so that the reducer's average over
// ranks is the mean over all target tokens of the global batch. The rest is the Trainer's.
#include "trainer/stage1.h"

#include <torch/torch.h>

#include <unordered_map>

#include "common/log.h"
#include "trainer/placement.h"
#include "trainer/run_common.h"
#include "trainer/trainer.h"

namespace dgr::trainer {
namespace {

class PairsObjective : public Objective {
 public:
  PairsObjective(const Stage1Data& pairs, Seq2Seq& model, double label_smoothing, const DeviceChoice& device)
      : pairs_(pairs), model_(model), label_smoothing_(label_smoothing), device_(device),
        torch_device_(torch_device(device)) {}

  int64_t num_examples() const override { return pairs_.size(); }

  // Counts: [target tokens].
  std::vector<int64_t> load(const sharding::EpochSampler::Step& step) override {
    local_.clear();
    int64_t tokens = 0;
    for (int64_t e : step.examples) {
      local_.push_back(pairs_.pair(step.epoch, e));
      tokens += static_cast<int64_t>(local_.back().target.size());
    }
    return {tokens};
  }

  torch::Tensor forward(const sharding::EpochSampler::Step&, const std::vector<int64_t>& global_counts,
                        int world_size) override {
    loss_sum_ = torch::Tensor();
    if (local_.empty()) return loss_sum_;
    std::vector<const std::vector<int32_t>*> sources, targets;
    for (const auto& p : local_) {
      sources.push_back(&p.source);
      targets.push_back(&p.target);
    }
    loss_sum_ = model_.loss(to_device(pad_batch(sources, model_.config().pad_id, device_.cuda), torch_device_),
                            to_device(pad_batch(targets, model_.config().pad_id, device_.cuda), torch_device_), label_smoothing_);
    return loss_sum_ * (static_cast<double>(world_size) / static_cast<double>(std::max<int64_t>(1, global_counts[0])));
  }

  // Statistics: [loss summed over target tokens] (fp32, like the loss itself).
  std::vector<float> statistics() override { return {loss_sum_.defined() ? loss_sum_.item<float>() : 0.0F}; }

  double step_loss(const std::vector<double>& statistics, const std::vector<double>& counts, double) const override {
    return statistics[0] / std::max(1.0, counts[0]);
  }

  Fields window_fields(const std::vector<double>& statistics, const std::vector<double>& counts,
                       double) const override {
    return {{"loss", statistics[0] / std::max(1.0, counts[0])}};
  }

  Fields window_rates(const std::vector<double>&, const std::vector<double>& counts, double seconds) const override {
    return {{"tokens_per_s", counts[0] / seconds}};
  }

 private:
  const Stage1Data& pairs_;
  Seq2Seq& model_;
  double label_smoothing_;
  DeviceChoice device_;
  torch::Device torch_device_;
  std::vector<Pair> local_;
  torch::Tensor loss_sum_;
};

nlohmann::json stage1_options_json(const Stage1Options& o) {
  const Stage1DataOptions& d = o.data;
  return {{"stage", "generate"}, {"preset", o.init_model.empty() ? o.preset : ""}, {"init_model", o.init_model},
          {"train_split", o.train_split}, {"views", {d.views[0], d.views[1], d.views[2]}},
          {"title_copies", d.title_copies}, {"body_spans", d.body_spans}, {"pq_copies", d.pq_copies},
          {"indexing_pairs", d.indexing_pairs},
          {"indexing_source", {d.indexing_source_min, d.indexing_source_max, d.indexing_prefix_probability}}};
}

// The training queries with a relevant passage, each with its first relevant passage's document number.
std::vector<TrainingQuery> training_queries(const Stage1Options& options, const IndexedCorpus& data) {
  const std::string dir = options.train.data_dir + "/";
  auto queries = data::read_queries(dir + "queries." + options.train_split + ".tsv");
  auto qrels = data::read_qrels(dir + "qrels." + options.train_split + ".tsv", &data.corpus, &queries);
  std::unordered_map<std::string, int32_t> first_positive;
  for (const auto& q : qrels)
    if (q.grade > 0) first_positive.emplace(q.qid, data.index.doc_of.at(q.pid));
  std::vector<TrainingQuery> out;
  for (const auto& q : queries) {
    auto it = first_positive.find(q.qid);
    if (it != first_positive.end()) out.push_back({data.index.tokenizer.encode(q.text), it->second});
  }
  return out;
}

}  // namespace

int run_stage1(const Stage1Options& options, const World& world) {
  const TrainOptions& o = options.train;
  const DeviceChoice device = prepare_run(o, world);
  // Data: every rank reads the same files and builds the same pair list.
  IndexedCorpus data = load_indexed_corpus(o);
  std::vector<TrainingQuery> queries = training_queries(options, data);
  const size_t num_queries = queries.size();
  Stage1Data pairs(std::move(data.passages), std::move(queries), data.index.tokenizer.special(), options.data, o.seed);
  if (world.is_root()) log::get("train")->info("stage 1 data: {} training queries ({}); {}", num_queries, options.train_split, pairs.describe());

  std::shared_ptr<Seq2Seq> model;
  if (options.init_model.empty()) {
    ModelConfig config = model_preset(options.preset, data.index.tokenizer.vocab_size());
    if (o.dropout >= 0) config.dropout = o.dropout;
    torch::manual_seed(o.seed);
    model = std::make_shared<Seq2Seq>(config);
  } else {
    model = load_initial_model(options.init_model, data.index, data.index_path, o.dropout, o.seed).model;
    if (world.is_root()) log::get("train")->info("stage 1 starts from the weights of {}", options.init_model);
  }
  if (device.cuda) model->to(torch_device(device));  // initialised on the CPU: every device starts from the same weights

  PairsObjective objective(pairs, *model, o.label_smoothing, device);
  StageInfo stage{"stage 1", "during training", false, stage1_options_json(options), options.data.limits, {}};
  for (int v = 0; v < retrieval::kNumViews; ++v) {
    if (options.data.views[v]) stage.trained_views.emplace_back(retrieval::view_name(static_cast<retrieval::View>(v)));
  }
  Trainer trainer(o, world, device, model, data, std::move(stage), objective);
  return trainer.run();
}

}  // namespace dgr::trainer
