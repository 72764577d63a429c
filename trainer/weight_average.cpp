// WeightAverage (see weight_average.h).
//
// Note [Weight averaging]
// With a constant learning rate the weights keep moving around a minimum; an exponential moving average
// of them sits nearer its centre and usually generalises better than the last step (Polyak averaging;
// Marian's --exponential-smoothing, on by default in its transformer presets). dgr keeps the average in fp32
// beside the parameters on the same device, updates it after every optimizer step, checkpoints it
// ("ema/<key>" in model.h5: an exact resume continues the same average), and swaps it into the model for
// evaluation during training, the final evaluation and the export. Swapping writes the parameters, so the
// trainer first waits for the checkpoint writer's copy of them (Note [Overlapped copy] in
// checkpoints/store.cpp).
#include "trainer/weight_average.h"

#include <algorithm>

#include "common/error.h"

namespace dgr::trainer {

WeightAverage::WeightAverage(const std::vector<std::pair<std::string, torch::Tensor>>& named_parameters,
                             double decay)
    : decay_(decay) {
  DGR_CHECK_AS(ConfigError, decay > 0 && decay < 1, "--ema-decay must be between 0 and 1 (exclusive), got {}", decay);
  torch::NoGradGuard no_grad;
  for (const auto& [name, p] : named_parameters) {
    parameters_.push_back(p);
    averages_.emplace_back("ema/" + name, p.detach().clone());
  }
}

void WeightAverage::update(int64_t step) {
  const double d = std::min(decay_, (1.0 + static_cast<double>(step)) / (10.0 + static_cast<double>(step)));
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < parameters_.size(); ++i) averages_[i].second.mul_(d).add_(parameters_[i].detach(), 1.0 - d);
}

void WeightAverage::swap() {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    torch::Tensor held = parameters_[i].detach().clone();
    parameters_[i].detach().copy_(averages_[i].second);
    averages_[i].second.copy_(held);
  }
}

}  // namespace dgr::trainer
