// WeightAverage: an exponential moving average of the parameters (Marian's --exponential-smoothing,
// TensorFlow's ExponentialMovingAverage with num_updates), evaluated and exported instead of the last
// weights when `dgr train --ema-decay D` is given. See Note [Weight averaging] in weight_average.cpp.
#pragma once

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

namespace dgr::trainer {

class WeightAverage {
 public:
  // Starts the averages at the parameters' current values. 0 < decay < 1.
  WeightAverage(const std::vector<std::pair<std::string, torch::Tensor>>& named_parameters, double decay);

  // After optimizer step number `step` (1 for the first): average = d * average + (1 - d) * parameter,
  // d = min(decay, (1 + step) / (10 + step)), so that early averages are not dominated by the random start.
  void update(int64_t step);
  // Exchanges the parameters' values with the averages: call it, evaluate or export, call it again.
  void swap();
  // The averages as ("ema/<state-dict key>", tensor), for checkpoints (saved and restored in place).
  const std::vector<std::pair<std::string, torch::Tensor>>& named_averages() const { return averages_; }
  double decay() const { return decay_; }

 private:
  std::vector<torch::Tensor> parameters_;
  std::vector<std::pair<std::string, torch::Tensor>> averages_;
  double decay_;
};

}  // namespace dgr::trainer
