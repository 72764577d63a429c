// One AdamW step in one pass over each parameter (trainer/adamw.cpp, Note [Fused AdamW]).
#pragma once

#include <torch/torch.h>

namespace dgr::trainer {

// The update of torch::optim::AdamW::step() (LibTorch 1.13), on the optimizer's own per-parameter state,
// so checkpoints, resume and the optimizer's options are unchanged. When every parameter with a gradient,
// the gradient and the moments are contiguous fp32 CPU tensors and amsgrad is off, each parameter is updated in one loop over its
// elements; otherwise this is optimizer.step().
void adamw_step(torch::optim::AdamW& optimizer);

}  // namespace dgr::trainer
