// For every candidate of a prepared distillation data set: DGR's surrogate (trainer/surrogate.h), with the
// options `dgr train --stage distill` uses and without gradient (eval mode), against the passage score the
// stage-1 retriever gave the candidate when `dgr mine` found it. They must be equal (method.md section 7:
// the surrogate is the retrieval score made differentiable) whenever the candidate's keys were not cut at
// --max-keys. Prints one summary line; exit 1 on any candidate that differs, listing the first few.
// Usage: surrogate_check_driver MODEL INDEX_DIR PREP_DIR MAX_KEYS
#include <algorithm>
#include <cmath>
#include <iostream>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "checkpoints/export.h"
#include "common/error.h"
#include "data/distill_data.h"
#include "retrieval/index_dir.h"
#include "trainer/exported_model.h"
#include "trainer/model.h"
#include "trainer/surrogate.h"
#include "trainer/train_state.h"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: surrogate_check_driver MODEL INDEX_DIR PREP_DIR MAX_KEYS\n";
    return 2;
  }
  using namespace dgr;
  try {
    torch::set_num_threads(1);
    const std::string model_path = argv[1];
    const int max_keys = std::stoi(argv[4]);
    auto exported = checkpoints::read_export(model_path);
    const auto config = nlohmann::json::parse(exported.info.model_config_json);
    auto model = std::make_shared<trainer::Seq2Seq>(trainer::ModelConfig::from_json_string(config.at("model").dump()));
    trainer::load_model_arrays(exported.weights, *model, model_path);
    model->eval();
    const auto limits = trainer::parse_view_limits(config.at("view_limits").dump(), model_path);
    const retrieval::IndexDir index = retrieval::load_index_dir(argv[2]);
    const auto options =
        trainer::stage2_surrogate_options(index.tokenizer.special(), index.fm.total_tokens(), limits, max_keys);
    data::DistillDataset dataset(argv[3]);

    torch::NoGradGuard no_grad;
    int64_t compared = 0, cut = 0, differ = 0, keys = 0;
    int views[3] = {0, 0, 0};
    double max_relative = 0;
    for (int64_t i = 0; i < dataset.size(); ++i) {
      const data::DistillExample example = dataset.load(i);
      std::vector<int32_t> all(example.candidates.size());
      for (size_t c = 0; c < all.size(); ++c) all[c] = static_cast<int32_t>(c);
      const torch::Tensor s = trainer::surrogate_scores(*model, example, all, options);
      for (size_t c = 0; c < all.size(); ++c) {
        const data::DistillCandidate& candidate = example.candidates[c];
        if (candidate.keys.size() >= static_cast<size_t>(max_keys)) {
          ++cut;  // mining may have cut its keys: the retrieval score saw more than the surrogate can
          continue;
        }
        for (const auto& k : candidate.keys) ++views[std::clamp<int>(k.view, 0, 2)];
        keys += static_cast<int64_t>(candidate.keys.size());
        const double got = s[static_cast<int64_t>(c)].item<double>();
        const double relative = std::abs(got - candidate.retriever_score) / std::max(1.0, std::abs(candidate.retriever_score));
        max_relative = std::max(max_relative, relative);
        ++compared;
        if (relative > 1e-3 && ++differ <= 5) {
          std::cout << fmt::format("query {} doc {}: surrogate {} but retrieval scored {} ({} keys)\n", example.qid,
                                   candidate.doc, got, candidate.retriever_score, candidate.keys.size());
        }
      }
    }
    std::cout << fmt::format("surrogate vs retrieval: {} queries, {} candidates compared ({} keys: title {}, body {}, "
                             "pq {}), {} skipped with {} keys (possibly cut), {} differ; max relative error {:.3g}\n",
                             dataset.size(), compared, keys, views[0], views[1], views[2], cut, max_keys, differ,
                             max_relative);
    return differ == 0 && compared > 0 ? 0 : 1;
  } catch (const dgr::Error& e) {
    std::cerr << "surrogate_check_driver: " << e.what() << "\n";
    return 1;
  }
}
