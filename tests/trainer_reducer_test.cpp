// GradientReducer under mpiexec: W ranks with batch B each end 5 Adam steps with the same parameters as
// one process with batch W*B (also with 2 accumulation micro-steps, small buckets, a parameter unused on
// some ranks, and replicas that start different); a model that differs between ranks is a clear error.
#include <atomic>
#include <thread>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "comm/communicator.h"
#include "common/error.h"
#include "common/world.h"
#include "trainer/gradient_reducer.h"

namespace {

using dgr::World;

struct NetImpl : torch::nn::Module {
  explicit NetImpl(int hidden = 16) {
    fc1 = register_module("fc1", torch::nn::Linear(8, hidden));
    fc2 = register_module("fc2", torch::nn::Linear(hidden, 4));
    extra = register_module("extra", torch::nn::Linear(4, 4));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::tanh(fc1(x))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, extra{nullptr};
};
TORCH_MODULE(Net);

constexpr int kBatchPerRank = 6;
constexpr int kSteps = 5;

// The global batch of step `step`: [W*B, 8] inputs and [W*B, 4] targets, the same on every rank.
std::pair<torch::Tensor, torch::Tensor> global_batch(int step, int world_size) {
  torch::manual_seed(1000 + step);
  return {torch::randn({world_size * kBatchPerRank, 8}), torch::randn({world_size * kBatchPerRank, 4})};
}

// Loss of one rank's rows; `use_extra` adds a term through the `extra` layer.
torch::Tensor rank_loss(Net& net, const torch::Tensor& x, const torch::Tensor& y, bool use_extra) {
  torch::Tensor out = net->forward(x);
  torch::Tensor loss = torch::mse_loss(out, y);
  if (use_extra) loss = loss + net->extra->forward(out).pow(2).mean();
  return loss;
}

std::vector<std::pair<std::string, torch::Tensor>> named(Net& net) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& item : net->named_parameters()) out.emplace_back(item.key(), item.value());
  return out;
}

double max_relative_difference(Net& a, Net& b) {
  double worst = 0;
  auto pa = a->parameters(), pb = b->parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    double diff = (pa[i] - pb[i]).abs().max().item<double>();
    double scale = std::max(pb[i].abs().max().item<double>(), 1e-3);
    worst = std::max(worst, diff / scale);
  }
  return worst;
}

struct Case {
  int micro_steps = 1;
  size_t first_bucket_bytes = 1 << 20, bucket_bytes = 25 << 20;
  size_t piece_bytes = dgr::trainer::ReducerOptions::kAutoPieces;
  bool extra_on_rank0_only = false;
  bool reset_gradients = false;  // user code drops or replaces .grad between steps (set_to_none style)
};

void run_case(const Case& c) {
  torch::set_num_threads(1);
  const World& world = *World::current();
  const int W = world.size(), r = world.rank();
  dgr::comm::Options options;
  options.timeout_ms = 60000;
  auto communicator = dgr::comm::make_communicator(options, world);

  torch::manual_seed(7);
  Net reference;
  torch::manual_seed(7 + 100 * r);  // replicas start different: the reducer broadcasts rank 0's values
  Net replica;
  dgr::trainer::ReducerOptions reducer_options;
  reducer_options.first_bucket_bytes = c.first_bucket_bytes;
  reducer_options.bucket_bytes = c.bucket_bytes;
  reducer_options.piece_bytes = c.piece_bytes;
  dgr::trainer::GradientReducer reducer(named(replica), *communicator, reducer_options);
  EXPECT_LT(max_relative_difference(replica, reference), 1e-7) << "parameters not broadcast from rank 0";

  torch::optim::Adam ref_opt(reference->parameters(), torch::optim::AdamOptions(1e-2));
  torch::optim::Adam opt(replica->parameters(), torch::optim::AdamOptions(1e-2));
  for (int step = 0; step < kSteps; ++step) {
    auto [x, y] = global_batch(step, W);
    // One process, the whole batch: mean over ranks of each rank's loss (= the mean over W*B rows).
    ref_opt.zero_grad();
    torch::Tensor ref_loss = torch::zeros({});
    for (int k = 0; k < W; ++k) {
      auto rows = torch::indexing::Slice(k * kBatchPerRank, (k + 1) * kBatchPerRank);
      bool extra = c.extra_on_rank0_only ? k == 0 : true;
      ref_loss = ref_loss + rank_loss(reference, x.index({rows}), y.index({rows}), extra) / W;
    }
    ref_loss.backward();
    ref_opt.step();
    // W ranks, this rank's rows, in micro-steps.
    if (c.reset_gradients) {
      // LibTorch's optimizer.zero_grad() refuses (detach_ on a view); code that drops or replaces gradients
      // instead must not make the reducer reduce stale buckets.
      auto params = replica->parameters();
      for (size_t i = 0; i < params.size(); ++i) {
        params[i].mutable_grad() = i % 2 == 0 ? torch::Tensor() : torch::zeros_like(params[i]);
      }
    } else {
      reducer.zero_grad();
    }
    int rows_per_micro = kBatchPerRank / c.micro_steps;
    for (int m = 0; m < c.micro_steps; ++m) {
      int begin = r * kBatchPerRank + m * rows_per_micro;
      auto rows = torch::indexing::Slice(begin, begin + rows_per_micro);
      bool extra = c.extra_on_rank0_only ? r == 0 : true;
      torch::Tensor loss = rank_loss(replica, x.index({rows}), y.index({rows}), extra) / c.micro_steps;
      reducer.prepare_backward(/*synchronize=*/m == c.micro_steps - 1);
      loss.backward();
      reducer.finish_backward();
    }
    opt.step();
  }
  double diff = max_relative_difference(replica, reference);
  EXPECT_LT(diff, 1e-5) << "rank " << r;
  const auto& t = reducer.timers();
  EXPECT_GE(t.backward_ms, 0);
  EXPECT_GE(t.exposed_ms, 0);
  if (W > 1) {
    EXPECT_GT(t.communication_ms, 0);
  }
}

TEST(GradientReducer, MatchesOneProcessWithTheWholeBatch) { run_case({}); }

// Note [Communication thread's device]: the thread-start step runs once, on the communication thread, before
// the constructor returns (so before any bucket is reduced); a failure there is the constructor's.
TEST(GradientReducer, CommunicationThreadStartsWithItsDeviceStep) {
  torch::set_num_threads(1);
  const World& world = *World::current();
  dgr::comm::Options options;
  options.timeout_ms = 60000;
  auto communicator = dgr::comm::make_communicator(options, world);
  torch::manual_seed(7);
  Net net;
  std::atomic<int> starts{0};
  std::atomic<bool> on_other_thread{false};
  const auto main_thread = std::this_thread::get_id();
  dgr::trainer::ReducerOptions reducer_options;
  reducer_options.on_thread_start = [&] {
    ++starts;
    on_other_thread = std::this_thread::get_id() != main_thread;
  };
  {
    dgr::trainer::GradientReducer reducer(named(net), *communicator, reducer_options);
    EXPECT_EQ(starts.load(), 1) << "the thread-start step must have run when the constructor returns";
    auto [x, y] = global_batch(0, world.size());
    reducer.zero_grad();
    reducer.prepare_backward(/*synchronize=*/true);
    rank_loss(net, x, y, true).backward();
    reducer.finish_backward();
  }
  EXPECT_EQ(starts.load(), 1);
  EXPECT_TRUE(on_other_thread.load());
  reducer_options.on_thread_start = [] { throw dgr::SystemError("no such device"); };
  EXPECT_THROW(dgr::trainer::GradientReducer(named(net), *communicator, reducer_options), dgr::SystemError);
}

TEST(GradientReducer, MatchesWithTwoAccumulationMicroSteps) {
  Case c;
  c.micro_steps = 2;
  run_case(c);
}

TEST(GradientReducer, MatchesWithManySmallBuckets) {
  Case c;
  c.first_bucket_bytes = 64;
  c.bucket_bytes = 256;
  run_case(c);
}

TEST(GradientReducer, MatchesWithBucketsReducedInSmallPieces) {
  // Note [Pieces]: pieces that end inside a parameter and parameters that span several pieces.
  Case c;
  c.first_bucket_bytes = 256;
  c.bucket_bytes = 1 << 20;
  c.piece_bytes = 72;
  run_case(c);
  c.micro_steps = 2;
  c.extra_on_rank0_only = true;  // a parameter without gradient on some ranks: its pieces go out at the end
  run_case(c);
}

TEST(GradientReducer, WholeBucketsWhenPiecesAreOff) {
  Case c;
  c.piece_bytes = 0;
  run_case(c);
}

TEST(GradientReducer, PiecesCutEveryBucketIntoRangesOfAtMostPieceBytes) {
  dgr::comm::Options options;
  auto communicator = dgr::comm::make_communicator(options, *World::current());
  Net net;
  size_t total_bytes = 0;
  for (auto& p : net->parameters()) total_bytes += static_cast<size_t>(p.numel()) * p.element_size();
  dgr::trainer::ReducerOptions reducer_options;  // default buckets: this small net fits the first one
  reducer_options.piece_bytes = 100;
  dgr::trainer::GradientReducer reducer(named(net), *communicator, reducer_options);
  size_t bucket_total = 0;
  size_t at_least = 0;
  for (size_t b = 0; b < reducer.num_buckets(); ++b) {
    bucket_total += reducer.bucket_bytes(b);
    at_least += (reducer.bucket_bytes(b) + 99) / 100;
  }
  EXPECT_EQ(bucket_total, total_bytes);
  EXPECT_EQ(reducer.num_pieces(), at_least);
  reducer_options.piece_bytes = 0;
  dgr::trainer::GradientReducer whole(named(net), *communicator, reducer_options);
  EXPECT_EQ(whole.num_pieces(), whole.num_buckets());
  reducer_options.piece_bytes = dgr::trainer::ReducerOptions::kAutoPieces;  // CPU + ring: whole buckets
  dgr::trainer::GradientReducer automatic(named(net), *communicator, reducer_options);
  EXPECT_EQ(automatic.num_pieces(), automatic.num_buckets());
}

TEST(GradientReducer, ParameterUnusedOnSomeRanksKeepsBucketOrder) {
  Case c;
  c.extra_on_rank0_only = true;
  c.micro_steps = 2;
  c.first_bucket_bytes = 64;
  c.bucket_bytes = 256;
  run_case(c);
}

TEST(GradientReducer, SurvivesGradientsDroppedOrReplacedBetweenSteps) {
  Case c;
  c.reset_gradients = true;
  c.first_bucket_bytes = 64;
  c.bucket_bytes = 256;
  run_case(c);
}

TEST(GradientReducer, SmallBucketsAreSmallAndOrderedFromTheOutput) {
  dgr::comm::Options options;
  auto communicator = dgr::comm::make_communicator(options, *World::current());
  Net net;
  dgr::trainer::ReducerOptions reducer_options;
  reducer_options.first_bucket_bytes = 100;
  reducer_options.bucket_bytes = 400;
  dgr::trainer::GradientReducer reducer(named(net), *communicator, reducer_options);
  EXPECT_GT(reducer.num_buckets(), 2u);
  for (auto& p : net->parameters()) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_EQ(p.grad().abs().sum().item<double>(), 0.0);
  }
}

TEST(GradientReducer, ModelThatDiffersBetweenRanksIsAClearError) {
  const World& world = *World::current();
  if (world.size() == 1) GTEST_SKIP() << "needs 2 ranks";
  dgr::comm::Options options;
  auto communicator = dgr::comm::make_communicator(options, world);
  Net net(world.rank() == world.size() - 1 ? 17 : 16);
  try {
    dgr::trainer::GradientReducer reducer(named(net), *communicator);
    FAIL() << "no error for a model that differs between ranks";
  } catch (const dgr::ConfigError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("the model differs between ranks"), std::string::npos) << what;
    EXPECT_NE(what.find(std::to_string(world.size() - 1)), std::string::npos) << what;
  }
}

}  // namespace
