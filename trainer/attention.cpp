// Note [Small-matrix attention]
// The model attends over B*heads matrices of a few dozen rows (the `cpu` preset: 256 matrices of up to
// ~20 x 48 per call). LibTorch 1.13's CPU bmm/baddbmm loops over the batch with a select and an addmm per
// matrix, each through the dispatcher and OpenBLAS's packing: with the caching allocator, 1.4 ms forward
// and 2.3 ms backward for an encoder self-attention call of ~10 M multiply-adds, and a step makes six calls
// each way. Here each matrix is worked on in L1: the scores one query row at a time against the keys
// transposed (zero-padded to 16 columns), so that the accumulator of 16 keys stays in a register across
// head_dim instead of one horizontal reduction per key; LibTorch's vectorised exp over all scores at once;
// then the normalisation and the weighted sum of the values. Backward writes each gradient row once:
// dP = dO v^T (the same row-times-transposed loop), dS = scale P (dP - rowsum(P dP)), dq = dS k,
// dk = dS^T q, dv = P^T dO (weighted sums of rows, with dS and P transposed into scratch). The softmax
// probabilities are the only thing kept for backward. The loops use GCC's 16-float vector type, compiled
// for AVX-512, AVX2+FMA and baseline x86-64 (target_clones picks one when the program loads), and the
// matrices are split over LibTorch's intra-op threads. Measured on one thread (forward / backward, ms per
// call, LibTorch -> here): encoder self 1.43 / 2.29 -> 0.87 / 1.22, decoder self 0.96 / 1.54 -> 0.29 / 0.44,
// cross 1.09 / 1.90 -> 0.53 / 0.75. Values differ from LibTorch's path in the last bits (summation order);
// ModelTest.SmallMatrixAttentionMatchesLibTorch compares both, values and gradients.
#include "trainer/attention.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common/error.h"

namespace dgr::trainer {
namespace {

using torch::Tensor;

// The shapes and the bias's strides (0 where it broadcasts).
struct Shape {
  int64_t G, Lq, Lk, hd;
  int64_t bg, bi, bj;
};

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DGR_KERNEL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DGR_KERNEL_CLONES
#endif

// 16 floats: one AVX-512 register, two AVX2 ones, four SSE ones (GCC splits it for the target). Loops over a
// fixed 16 lanes with the accumulator in a register, instead of an accumulator array that goes through
// memory (and store-to-load forwarding) on every step of a runtime-length loop.
using Vec = float __attribute__((vector_size(64)));
constexpr int64_t kLanes = 16;
[[gnu::always_inline]] inline Vec load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
[[gnu::always_inline]] inline void store(float* p, const Vec& v) { std::memcpy(p, &v, sizeof v); }
inline int64_t padded(int64_t n) { return (n + kLanes - 1) / kLanes * kLanes; }

// t [hd, ld] = the rows x [L, hd] transposed, columns L..ld zero.
[[gnu::always_inline]] inline void transpose_padded(const float* __restrict x, float* __restrict t, int64_t L, int64_t ld, int64_t hd) {
  std::fill(t, t + hd * ld, 0.0F);
  for (int64_t j = 0; j < L; ++j)
    for (int64_t d = 0; d < hd; ++d) t[d * ld + j] = x[j * hd + d];
}

// out [ld] = a [hd] times t [hd, ld]: a row's dot products with every transposed row at once.
[[gnu::always_inline]] inline void row_times(const float* __restrict a, const float* __restrict t, int64_t hd, int64_t ld,
                      float* __restrict out) {
  for (int64_t jb = 0; jb < ld; jb += kLanes) {
    Vec acc{};
    for (int64_t d = 0; d < hd; ++d) acc += a[d] * load(t + d * ld + jb);
    store(out + jb, acc);
  }
}

// y [hd] = sum over r < n of w[r] * x[r, :] (x [n, hd] rows).
[[gnu::always_inline]] inline void weighted_rows(const float* __restrict w, const float* __restrict x, int64_t n, int64_t hd,
                          float* __restrict y) {
  int64_t db = 0;
  for (; db + kLanes <= hd; db += kLanes) {
    Vec acc{};
    for (int64_t r = 0; r < n; ++r) acc += w[r] * load(x + r * hd + db);
    store(y + db, acc);
  }
  for (; db < hd; ++db) {
    float acc = 0;
    for (int64_t r = 0; r < n; ++r) acc += w[r] * x[r * hd + db];
    y[db] = acc;
  }
}

// Scratch per thread: padded(Lk) * (hd + 1) floats, and for backward 2 * Lk * Lq + Lk more.
struct Scratch {
  std::vector<float> t, row, sT, pT, ds;
  Scratch(const Shape& s, bool backward)
      : t(static_cast<size_t>(s.hd * padded(s.Lk))),
        row(static_cast<size_t>(padded(s.Lk))),
        sT(backward ? static_cast<size_t>(s.Lk * s.Lq) : 0),
        pT(backward ? static_cast<size_t>(s.Lk * s.Lq) : 0),
        ds(backward ? static_cast<size_t>(s.Lk) : 0) {}
};

// Matrices [g0, g1): p [G, Lq, Lk] = scale * q k^T + bias - (row max). The exp is LibTorch's (vectorised).
DGR_KERNEL_CLONES
void scores_range(const float* __restrict q, const float* __restrict k, const float* __restrict bias,
                  float* __restrict p, Scratch& scratch, const Shape s, const float scale, int64_t g0, int64_t g1) {
  const int64_t hd = s.hd, Lk = s.Lk, ld = padded(Lk);
  float* kt = scratch.t.data();
  float* row = scratch.row.data();
  for (int64_t g = g0; g < g1; ++g) {
    transpose_padded(k + g * Lk * hd, kt, Lk, ld, hd);
    for (int64_t i = 0; i < s.Lq; ++i) {
      const float* bi = bias + g * s.bg + i * s.bi;
      float* pi = p + (g * s.Lq + i) * Lk;
      row_times(q + (g * s.Lq + i) * hd, kt, hd, ld, row);
      float max = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < Lk; ++j) max = std::max(max, pi[j] = row[j] * scale + bi[j * s.bj]);
      for (int64_t j = 0; j < Lk; ++j) pi[j] -= max;
    }
  }
}

// Matrices [g0, g1): p (holding exp of the shifted scores) normalised into the softmax, o = p v.
DGR_KERNEL_CLONES
void weighted_values_range(const float* __restrict v, float* __restrict p, float* __restrict o, const Shape s,
                           int64_t g0, int64_t g1) {
  const int64_t hd = s.hd, Lk = s.Lk;
  for (int64_t g = g0; g < g1; ++g) {
    for (int64_t i = 0; i < s.Lq; ++i) {
      float* pi = p + (g * s.Lq + i) * Lk;
      float sum = 0;
      for (int64_t j = 0; j < Lk; ++j) sum += pi[j];
      const float inv = 1.0F / sum;
      for (int64_t j = 0; j < Lk; ++j) pi[j] *= inv;
      weighted_rows(pi, v + g * Lk * hd, Lk, hd, o + (g * s.Lq + i) * hd);
    }
  }
}

// Matrices [g0, g1): dq, dk, dv from dout and the saved probabilities, each row written once:
// dP = dO v^T (row_times against v transposed), dS = scale P (dP - rowsum(P dP)), dq = dS k,
// dk = dS^T q, dv = P^T dO (weighted_rows over the transposed dS and P).
DGR_KERNEL_CLONES
void backward_range(const float* __restrict q, const float* __restrict k, const float* __restrict v,
                    const float* __restrict p, const float* __restrict dout, float* __restrict dq,
                    float* __restrict dk, float* __restrict dv, Scratch& scratch, const Shape s, const float scale,
                    int64_t g0, int64_t g1) {
  const int64_t hd = s.hd, Lk = s.Lk, Lq = s.Lq, ld = padded(Lk);
  float* vt = scratch.t.data();
  float* dp = scratch.row.data();
  float* sT = scratch.sT.data();
  float* pT = scratch.pT.data();
  float* ds = scratch.ds.data();
  for (int64_t g = g0; g < g1; ++g) {
    const float* qg = q + g * Lq * hd;
    const float* dog = dout + g * Lq * hd;
    transpose_padded(v + g * Lk * hd, vt, Lk, ld, hd);
    for (int64_t i = 0; i < Lq; ++i) {
      const float* pi = p + (g * Lq + i) * Lk;
      row_times(dog + i * hd, vt, hd, ld, dp);
      float rowsum = 0;
      for (int64_t j = 0; j < Lk; ++j) rowsum += pi[j] * dp[j];
      for (int64_t j = 0; j < Lk; ++j) {
        ds[j] = pi[j] * (dp[j] - rowsum) * scale;
        sT[j * Lq + i] = ds[j];
        pT[j * Lq + i] = pi[j];
      }
      weighted_rows(ds, k + g * Lk * hd, Lk, hd, dq + (g * Lq + i) * hd);
    }
    for (int64_t j = 0; j < Lk; ++j) {
      weighted_rows(sT + j * Lq, qg, Lq, hd, dk + (g * Lk + j) * hd);
      weighted_rows(pT + j * Lq, dog, Lq, hd, dv + (g * Lk + j) * hd);
    }
  }
}

// Matrices per parallel task: enough work to cover a thread's start (a matrix is ~20-40 k multiply-adds).
constexpr int64_t kGrain = 16;

Shape shape_of(const Tensor& q, const Tensor& k, const Tensor& bias_expanded) {
  return {q.size(0),
          q.size(1),
          k.size(1),
          q.size(2),
          bias_expanded.stride(0),
          bias_expanded.stride(1),
          bias_expanded.stride(2)};
}

struct SmallMatrixAttention : public torch::autograd::Function<SmallMatrixAttention> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, Tensor q, Tensor k, Tensor v, Tensor bias, double scale) {
    q = q.contiguous();
    k = k.contiguous();
    v = v.contiguous();
    Tensor b = bias.expand({q.size(0), q.size(1), k.size(1)});
    const Shape s = shape_of(q, k, b);
    Tensor p = torch::empty({s.G, s.Lq, s.Lk}, q.options());
    Tensor o = torch::empty({s.G, s.Lq, s.hd}, q.options());
    const float* qp = q.data_ptr<float>();
    const float* kp = k.data_ptr<float>();
    const float* vp = v.data_ptr<float>();
    const float* bp = b.data_ptr<float>();
    float* pp = p.data_ptr<float>();
    float* op = o.data_ptr<float>();
    const auto sc = static_cast<float>(scale);
    at::parallel_for(0, s.G, kGrain, [&](int64_t g0, int64_t g1) {
      Scratch scratch(s, /*backward=*/false);
      scores_range(qp, kp, bp, pp, scratch, s, sc, g0, g1);
    });
    p.exp_();
    at::parallel_for(0, s.G, kGrain, [&](int64_t g0, int64_t g1) { weighted_values_range(vp, pp, op, s, g0, g1); });
    ctx->save_for_backward({q, k, v, p});
    ctx->saved_data["scale"] = scale;
    return o;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                  torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor &q = saved[0], &k = saved[1], &v = saved[2], &p = saved[3];
    const auto sc = static_cast<float>(ctx->saved_data["scale"].toDouble());
    Tensor dout = grads[0].contiguous();
    Tensor dq = torch::empty_like(q), dk = torch::empty_like(k), dv = torch::empty_like(v);
    Shape s{q.size(0), q.size(1), k.size(1), q.size(2), 0, 0, 0};
    const float* qp = q.data_ptr<float>();
    const float* kp = k.data_ptr<float>();
    const float* vp = v.data_ptr<float>();
    const float* pp = p.data_ptr<float>();
    const float* dop = dout.data_ptr<float>();
    float* dqp = dq.data_ptr<float>();
    float* dkp = dk.data_ptr<float>();
    float* dvp = dv.data_ptr<float>();
    at::parallel_for(0, s.G, kGrain, [&](int64_t g0, int64_t g1) {
      Scratch scratch(s, /*backward=*/true);
      backward_range(qp, kp, vp, pp, dop, dqp, dkp, dvp, scratch, s, sc, g0, g1);
    });
    return {dq, dk, dv, Tensor(), Tensor()};
  }
};

bool small_matrix_kernels_apply(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias) {
  for (const Tensor* t : {&q, &k, &v, &bias}) {
    if (!t->device().is_cpu() || t->scalar_type() != torch::kFloat32 || t->is_sparse()) return false;
  }
  return !bias.requires_grad();
}

}  // namespace

Tensor attention_reference(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias, double scale) {
  auto w = torch::softmax(torch::baddbmm(bias, q, k.transpose(1, 2), 1.0, scale), -1);
  return torch::bmm(w, v);
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& bias, double scale) {
  DGR_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3 && bias.dim() == 3,
            "attention: q, k, v and bias must be 3-d, found {}, {}, {}, {}", q.dim(), k.dim(), v.dim(), bias.dim());
  DGR_CHECK(k.size(0) == q.size(0) && v.size(0) == q.size(0) && k.size(2) == q.size(2) && v.sizes() == k.sizes(),
            "attention: q [G, Lq, hd], k and v [G, Lk, hd] expected");
  if (!small_matrix_kernels_apply(q, k, v, bias)) return attention_reference(q, k, v, bias, scale);
  return SmallMatrixAttention::apply(q, k, v, bias, scale);
}

}  // namespace dgr::trainer
