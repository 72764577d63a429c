// The ranking part of the stage-2 loss (method.md section 7) over the surrogate scores S of one draw's
// lists (trainer/surrogate.h, trainer/distill_sampler.h). The training loop adds the generation part:
//   L = ranking_loss(...) + generation_weight(options) * (0.5 CE_title + 0.5 CE_span)   (targets from P_a)
//
// kinds:
//   dgr        distilled RankNet on L_a and L_b: 0.5 L_list(L_a) + 0.5 L_list(L_b), with
//              L_list = mean over the violated pairs i < j of w_i [S_j - S_i + M + (j-i-1) D]_+,
//              violated iff S_j - S_i + M + (j-i-1) D > 0; w_0 = head_weight, w_i = 1/(i+1). A list with no
//              violated pair gives exactly 0 (gradient 0, never NaN).
//   ltrgr      0.5 [S(top neg) - S(top pos) + m_top]_+ + 0.5 [S(rand neg) - S(rand pos) + m_rand]_+: top pos =
//              L_a's head, rand pos = L_b's head, top/rand neg at DistillDraw's positions.
//   listnet    cross-entropy of softmax(teacher / T_t) against softmax(S / T_s)
//   kl         KL(softmax(teacher / T_t) || softmax(S / T_s)) (ListNet minus the teacher's entropy: same
//              gradient, 0 when the distributions agree)
//   listmle    -log Plackett-Luce likelihood of the teacher's order under S / T_s (ties: list order)
//   lambdaloss LambdaRank-weighted pairwise logistic loss: sum over pairs with t_i > t_j of
//              |dNDCG_ij| log(1 + e^{-(S_i - S_j) / T_s}); gains 2^rel - 1 with rel = n-1 - the teacher's rank
//              (0-based), discounts 1/log2(1 + rank) at the student's current ranks (constants), normalised
//              by the ideal DCG (Burges 2010; the LambdaLoss paper's "NDCG-Loss1"-style lambda weights).
//              -- the listwise kinds use the teacher's scores of all list members, positive included, and
//              are averaged over L_a and L_b.
//   generation no ranking term (MINDER stage 1 continued): ranking_loss returns 0.
//
// Scaling to a smaller model. S is a sum of squared log-odds over up to 40 keys: its range grows with the
// model's confidence and the keys' lengths, so the paper's constants (fit to BART-large on NQ) are not
// absolute. Rule: with the stage-1 model, compute S on the mined lists and take g = the median over
// training queries of |S(top positive) - S(top negative)|. Set the margin to half of it, M = g / 2, and keep
// the paper's ratios for the rest: D = M / 3, m_top = M, m_rand = 4/3 M (300 : 100 : 300 : 400), the prepare
// filter "S(top pos) < S(top neg) + M" with the same M, T_s = D (S / T_s then moves by ~1 per list step),
// and gen_weight = 500 * M / 300 (the hinge terms scale with M; the cross-entropy does not).
#pragma once

#include <torch/torch.h>

#include <optional>
#include <string>

#include "trainer/distill_sampler.h"

namespace dgr::trainer {

enum class DistillLossKind { dgr, ltrgr, listnet, listmle, lambdaloss, kl, generation };
const char* distill_loss_kind_name(DistillLossKind kind);  // "dgr", "ltrgr", ...
DistillLossKind parse_distill_loss_kind(const std::string& name);  // throws ConfigError listing the kinds

struct DistillLossOptions {
  DistillLossKind kind = DistillLossKind::dgr;
  double margin = 300;            // dgr: M
  double margin_step = 100;       // dgr: D, added per list position between i and j
  double head_weight = 3;         // dgr: w_0 (w_i = 1/(i+1) for i >= 1)
  double ltrgr_top_margin = 300;  // ltrgr: margin of the (top pos, top neg) pair
  double ltrgr_random_margin = 400;  // ltrgr: margin of the (random pos, random neg) pair
  double student_temperature = 100;  // listwise kinds: T_s, S is divided by it (see the scaling rule above)
  double teacher_temperature = 1;    // listnet, kl: T_t, the teacher's scores are divided by it
  // Weight of the generation term; unset = 500 (dgr and the listwise kinds), 1000 (ltrgr), 1 (generation).
  std::optional<double> gen_weight;
  // Throws ConfigError naming the first value that cannot work.
  void validate() const;
};

// gen_weight, or the kind's default.
double generation_weight(const DistillLossOptions& options);

// The ranking loss of one draw: scores_a, scores_b are S of L_a and L_b ([n] each, list order, any float
// dtype); a 0-dim tensor of their dtype. 0 without a graph for kind generation.
torch::Tensor ranking_loss(const torch::Tensor& scores_a, const torch::Tensor& scores_b, const DistillDraw& draw,
                           const DistillLossOptions& options);

// The terms, for one list ([n] student scores, [n] teacher scores); each returns a 0-dim tensor.
torch::Tensor distilled_ranknet(const torch::Tensor& scores, const DistillLossOptions& options);
torch::Tensor ltrgr_loss(const torch::Tensor& top_positive, const torch::Tensor& top_negative,
                         const torch::Tensor& random_positive, const torch::Tensor& random_negative,
                         const DistillLossOptions& options);
torch::Tensor listnet_loss(const torch::Tensor& scores, const torch::Tensor& teacher, const DistillLossOptions& options);
torch::Tensor kl_loss(const torch::Tensor& scores, const torch::Tensor& teacher, const DistillLossOptions& options);
torch::Tensor listmle_loss(const torch::Tensor& scores, const torch::Tensor& teacher, const DistillLossOptions& options);
torch::Tensor lambda_loss(const torch::Tensor& scores, const torch::Tensor& teacher, const DistillLossOptions& options);

}  // namespace dgr::trainer
