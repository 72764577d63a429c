// Scaled dot-product attention over a batch of small matrices (the model's B*heads x L x head_dim),
// forward and backward, as one pass per matrix on the CPU (Note [Small-matrix attention]).
#pragma once

#include <torch/torch.h>

namespace dgr::trainer {

// softmax(scale * q k^T + bias) v. q [G, Lq, hd], k and v [G, Lk, hd], bias broadcastable to [G, Lq, Lk]
// and without gradient (the key-padding and causal masks). Differentiable in q, k and v. fp32 CPU tensors
// take the small-matrix kernels; anything else (GPU, bf16, double) goes to attention_reference().
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& bias, double scale);

// The same with LibTorch's batched matmuls and softmax: the GPU path, and the tests' reference.
torch::Tensor attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  const torch::Tensor& bias, double scale);

}  // namespace dgr::trainer
