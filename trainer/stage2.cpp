// Stage 2's objective: this rank's queries of the global batch (the EpochSampler's, over the prepared data
// set), for each the two lists of DistillSampler::draw scored by the surrogate and put through the ranking
// loss, plus the generation loss (title and/or body span of the top positive). The step's loss is the mean
// ranking loss over the global batch's queries plus gen_weight times the mean cross-entropy per target
// token of each generation view (averaged over the views). The rest is the Trainer's.
#include "trainer/stage2.h"

#include <torch/torch.h>

#include <algorithm>

#include "checkpoints/export.h"
#include "common/error.h"
#include "common/log.h"
#include "data/distill_data.h"
#include "trainer/distill_loss.h"
#include "trainer/distill_sampler.h"
#include "trainer/exported_model.h"
#include "trainer/placement.h"
#include "trainer/run_common.h"
#include "trainer/stage1_data.h"
#include "trainer/surrogate.h"
#include "trainer/train_state.h"
#include "trainer/trainer.h"

namespace dgr::trainer {
namespace {

uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// What the lists objective needs besides the model.
struct ListsSetup {
  DistillLossOptions loss;
  std::vector<retrieval::View> gen_views;
  SurrogateOptions surrogate;
  retrieval::ViewLimits limits;
  double label_smoothing = 0.1;
  uint64_t seed = 1;
};

class ListsObjective : public Objective {
 public:
  ListsObjective(data::DistillDataset& dataset, const IndexedCorpus& data, Seq2Seq& model, ListsSetup setup,
                 const DeviceChoice& device)
      : dataset_(dataset), data_(data), model_(model), s_(std::move(setup)), gen_weight_(generation_weight(s_.loss)),
        draws_(DistillSamplerOptions{}, s_.seed), device_(device), torch_device_(torch_device(device)) {}

  int64_t num_examples() const override { return dataset_.size(); }

  // Counts: [title target tokens, body target tokens].
  std::vector<int64_t> load(const sharding::EpochSampler::Step& step) override {
    examples_.clear();
    draws_of_.clear();
    for (auto& slot : gen_targets_) slot.clear();
    for (auto& slot : gen_sources_) slot.clear();
    std::vector<int64_t> tokens = {0, 0};
    const auto& special = data_.index.tokenizer.special();
    for (int64_t e : step.examples) {
      examples_.push_back(dataset_.load(e));
      const data::DistillExample& example = examples_.back();
      draws_.check(example);
      draws_of_.push_back(draws_.draw(example, step.epoch, static_cast<uint64_t>(e)));
      const DistillDraw& draw = draws_of_.back();
      const auto& passage = data_.passages[static_cast<size_t>(example.candidates[static_cast<size_t>(draw.a.candidates[0])].doc)];
      for (auto view : s_.gen_views) {
        const int slot = view == retrieval::View::title ? 0 : 1;
        gen_sources_[slot].push_back(retrieval::make_source(example.query_tokens, view, special, s_.limits));
        if (view == retrieval::View::title) {
          gen_targets_[slot].push_back(retrieval::title_target(passage, special, s_.limits));
        } else {
          const uint64_t rng = mix(s_.seed ^ mix(static_cast<uint64_t>(step.epoch) ^ mix(static_cast<uint64_t>(e))));
          gen_targets_[slot].push_back(query_body_span(passage, &example.query_tokens, s_.limits, 1.0, rng));
        }
        tokens[static_cast<size_t>(slot)] += static_cast<int64_t>(gen_targets_[slot].back().size());
      }
    }
    return tokens;
  }

  torch::Tensor forward(const sharding::EpochSampler::Step& step, const std::vector<int64_t>& global_counts,
                        int world_size) override {
    rank_sum_ = torch::zeros({}, torch::TensorOptions(torch::kFloat64).device(torch_device_));
    head_first_ = gen_sum_ = 0;
    pairs_ = {};
    rank_part_ = torch::Tensor();
    if (s_.loss.kind != DistillLossKind::generation) {  // generation only: no surrogate pass at all
      for (size_t i = 0; i < examples_.size(); ++i) rank_example(examples_[i], draws_of_[i]);
    }
    if (examples_.empty()) return {};
    const double global_queries = static_cast<double>(std::max<int64_t>(1, step.global_count));
    torch::Tensor total = (rank_sum_ / global_queries).to(torch::kFloat32);
    rank_part_ = total * static_cast<double>(world_size);
    for (size_t slot = 0; slot < 2; ++slot) {
      if (gen_sources_[slot].empty()) continue;
      torch::Tensor sum = model_.loss(to_device(pad_batch(pointers(gen_sources_[slot]), model_.config().pad_id, device_.cuda), torch_device_),
                                      to_device(pad_batch(pointers(gen_targets_[slot]), model_.config().pad_id, device_.cuda), torch_device_),
                                      s_.label_smoothing);
      gen_sum_ += sum.item<double>();
      total = total + sum * (gen_weight_ / static_cast<double>(s_.gen_views.size()) /
                             static_cast<double>(std::max<int64_t>(1, global_counts[slot])));
    }
    return total * static_cast<double>(world_size);
  }

  // Statistics: [ranking loss sum, generation loss sum, lists whose head outscores every negative, then the
  // pair counts of Note [Step diagnostics]: head pairs violated, head pairs, negative pairs violated,
  // negative pairs, negative pairs misordered].
  std::vector<float> statistics() override {
    return {static_cast<float>(rank_sum_.item<double>()), static_cast<float>(gen_sum_), static_cast<float>(head_first_),
            static_cast<float>(pairs_.head_violated), static_cast<float>(pairs_.head), static_cast<float>(pairs_.violated),
            static_cast<float>(pairs_.negative), static_cast<float>(pairs_.misordered)};
  }

  bool has_diagnosed_part() const override { return s_.loss.kind != DistillLossKind::generation; }
  torch::Tensor diagnosed_part() override { return rank_part_; }
  std::string diagnosed_part_name() const override { return "rank"; }
  std::string rest_name() const override { return "gen"; }

  double step_loss(const std::vector<double>& statistics, const std::vector<double>& counts,
                   double examples) const override {
    return statistics[0] / std::max(1.0, examples) + gen_weight_ * statistics[1] / std::max(1.0, counts[0] + counts[1]);
  }

  Fields window_fields(const std::vector<double>& statistics, const std::vector<double>& counts,
                       double examples) const override {
    const double queries = std::max(1.0, examples), tokens = std::max(1.0, counts[0] + counts[1]);
    Fields fields{{"loss", statistics[0] / queries + gen_weight_ * statistics[1] / tokens},
            {"rank_loss", statistics[0] / queries},
            {"gen_loss", statistics[1] / tokens},
            {"head_first", statistics[2] / queries}};
    if (statistics[4] > 0) {  // pairs were scored (not in the generation-only control)
      fields.push_back({"viol_head", statistics[3] / statistics[4]});
      fields.push_back({"viol_neg", statistics[6] > 0 ? statistics[5] / statistics[6] : 0.0});
      fields.push_back({"misordered_neg", statistics[6] > 0 ? statistics[7] / statistics[6] : 0.0});
    }
    return fields;
  }

 private:
  static std::vector<const std::vector<int32_t>*> pointers(const std::vector<std::vector<int32_t>>& sequences) {
    std::vector<const std::vector<int32_t>*> out;
    for (const auto& s : sequences) out.push_back(&s);
    return out;
  }

  // The surrogate's scores of both lists of one query, their ranking loss, and whether list a's head is first.
  void rank_example(const data::DistillExample& example, const DistillDraw& draw) {
    std::vector<int32_t> members = draw.a.candidates;
    members.insert(members.end(), draw.b.candidates.begin(), draw.b.candidates.end());
    const int64_t n = static_cast<int64_t>(draw.a.candidates.size());
    torch::Tensor scores = surrogate_scores(model_, example, members, s_.surrogate);
    torch::Tensor scores_a = scores.slice(0, 0, n), scores_b = scores.slice(0, n, 2 * n);
    rank_sum_ = rank_sum_ + ranking_loss(scores_a, scores_b, draw, s_.loss);
    torch::NoGradGuard no_grad;
    head_first_ += (scores_a.slice(0, 1, n).max().item<double>() < scores_a[0].item<double>()) ? 1 : 0;
    count_pairs(scores_a);
    count_pairs(scores_b);
  }

  // Note [Step diagnostics]: the pairs (i < j) of one list in list order (the positive head, then the
  // negatives in the teacher's order). Violated iff S_j - S_i + M + (j-i-1) D > 0 (the distilled RankNet's
  // margins, method.md section 7, whatever the loss kind); misordered iff S_j >= S_i. Head pairs have i = 0.
  void count_pairs(const torch::Tensor& scores) {
    const torch::Tensor s = scores.detach().to(torch::kCPU, torch::kDouble).contiguous();
    const double* v = s.data_ptr<double>();
    const int64_t n = s.numel();
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = i + 1; j < n; ++j) {
        const bool violated = v[j] - v[i] + s_.loss.margin + static_cast<double>(j - i - 1) * s_.loss.margin_step > 0;
        if (i == 0) {
          ++pairs_.head;
          pairs_.head_violated += violated ? 1 : 0;
        } else {
          ++pairs_.negative;
          pairs_.violated += violated ? 1 : 0;
          pairs_.misordered += v[j] >= v[i] ? 1 : 0;
        }
      }
    }
  }

  data::DistillDataset& dataset_;  // load() reads shards through a cache
  const IndexedCorpus& data_;
  Seq2Seq& model_;
  ListsSetup s_;
  double gen_weight_;
  DistillSampler draws_;
  DeviceChoice device_;
  torch::Device torch_device_;
  std::vector<data::DistillExample> examples_;  // this step's, with their draws
  std::vector<DistillDraw> draws_of_;
  std::vector<std::vector<int32_t>> gen_sources_[2], gen_targets_[2];  // [title, body]
  torch::Tensor rank_sum_, rank_part_;
  double head_first_ = 0, gen_sum_ = 0;
  struct {
    int64_t head = 0, head_violated = 0, negative = 0, violated = 0, misordered = 0;
  } pairs_;
};

DistillLossOptions loss_options(const Stage2Options& o) {
  DistillLossOptions loss;
  loss.kind = parse_distill_loss_kind(o.loss);
  loss.margin = o.margin;
  loss.margin_step = o.margin_step;
  loss.head_weight = o.first_weight;
  loss.ltrgr_top_margin = o.margin;
  loss.ltrgr_random_margin = o.second_margin;
  loss.student_temperature = o.temperature;
  loss.teacher_temperature = o.teacher_temperature;
  if (o.gen_weight >= 0) loss.gen_weight = o.gen_weight;
  loss.validate();
  return loss;
}

nlohmann::json stage2_options_json(const Stage2Options& o, const DistillLossOptions& loss) {
  return {{"stage", "distill"}, {"prepared_dir", o.prepared_dir}, {"init_model", o.init_model}, {"loss", o.loss},
          {"margin", loss.margin}, {"margin_step", loss.margin_step}, {"head_weight", loss.head_weight},
          {"ltrgr_margins", {loss.ltrgr_top_margin, loss.ltrgr_random_margin}},
          {"temperature", loss.student_temperature}, {"teacher_temperature", loss.teacher_temperature},
          {"gen_weight", generation_weight(loss)}, {"gen_views", o.gen_views}, {"max_keys", o.max_keys}};
}

}  // namespace

int run_stage2(const Stage2Options& options, const World& world) {
  const TrainOptions& o = options.train;
  const DeviceChoice device = prepare_run(o, world);
  DGR_CHECK_AS(ConfigError, !options.prepared_dir.empty(),
               "--stage distill needs --prepared DIR (the distillation data set from `dgr prepare`)");
  DGR_CHECK_AS(ConfigError, !options.init_model.empty(),
               "--stage distill needs --init-model FILE (the stage-1 export, OUT/model.h5 of `dgr train --stage generate`)");
  ListsSetup setup;
  setup.loss = loss_options(options);
  for (const auto& name : options.gen_views) setup.gen_views.push_back(retrieval::parse_view(name));
  for (auto v : setup.gen_views)
    DGR_CHECK_AS(ConfigError, v != retrieval::View::pq, "--gen-views: only title and body targets exist in stage 2");
  setup.label_smoothing = o.label_smoothing;
  setup.seed = o.seed;

  // Data: the index and corpus (generation targets), the prepared data set (this rank loads its examples).
  IndexedCorpus data = load_indexed_corpus(o);
  data::DistillDataset dataset(options.prepared_dir);
  DGR_CHECK_AS(DataError, dataset.manifest().tokenizer_sha256 == data.index.tokenizer.sha256() &&
                              dataset.manifest().fm_index_sha256 == data.index_sha256,
               "{} was mined with another tokenizer or FM-index than {} (tokenizer {} vs {}): prepare it again from "
               "this index, or pass the index it was mined with (--index)", options.prepared_dir, data.index_path,
               dataset.manifest().tokenizer_sha256, data.index.tokenizer.sha256());
  std::vector<std::string> trained_views;  // the stage-1 model's, then the generation loss's
  // The student: the stage-1 export's architecture and weights (dropout from the options when given).
  InitialModel student = load_initial_model(options.init_model, data.index, data.index_path, o.dropout, o.seed);
  setup.limits = student.limits;
  trained_views = std::move(student.trained_views);
  auto model = std::move(student.model);
  if (!trained_views.empty()) {
    for (const auto& view : options.gen_views)
      if (std::find(trained_views.begin(), trained_views.end(), view) == trained_views.end()) trained_views.push_back(view);
  }
  if (device.cuda) model->to(torch_device(device));  // loaded on the CPU, then moved: parameters and buffers
  setup.surrogate = stage2_surrogate_options(data.index.tokenizer.special(), data.index.fm.total_tokens(), setup.limits,
                                             options.max_keys);
  if (world.is_root())
    log::get("train")->info("stage 2: {} queries from {}, loss {} (gen weight {})", dataset.size(), options.prepared_dir,
                            options.loss, generation_weight(setup.loss));

  StageInfo stage{"stage 2", "during distillation", true, stage2_options_json(options, setup.loss), setup.limits,
                  std::move(trained_views)};
  ListsObjective objective(dataset, data, *model, std::move(setup), device);
  Trainer trainer(o, world, device, model, data, std::move(stage), objective);
  return trainer.run();
}

}  // namespace dgr::trainer
