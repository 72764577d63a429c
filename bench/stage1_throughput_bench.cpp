// Stage-1 training throughput of dgr's model (trainer/model.h, preset "cpu": d192, 4 heads, 2+2 layers,
// ffn 768, pre-norm, tied) on synthetic pairs shaped like bench/stage1_reference.py's (vocab 8000, sources
// 8-20 tokens, targets 4-11, label smoothing 0.1, AdamW lr 2e-3 betas 0.9/0.98, weight decay 0.01).
// Batches are generated before timing. Prints one key=value line (rank 0); bench/stage1_throughput_bench.sh
// compares it with the Python reference.
// Under mpiexec -n N: every rank takes --batch examples per step (global batch = batch x N) from its own
// synthetic data (seed + rank), gradients are averaged by dgr's GradientReducer (as bench/train_step_bench),
// and examples_per_s is the total over all ranks: batch x N x timed steps / the wall time of the timed
// steps, which start together (a barrier) and end when the last rank's last step does (a barrier). The
// ranks meet only where training meets: in the reducer. step_ms_median is rank 0's own step. At N = 1 no
// reducer is made: the step is as it always was.
// --allocator: caching (default, as `dgr train`: trainer/cpu_allocator.h) or system (LibTorch's own);
// page_faults_per_step counts this rank's minor page faults in a timed step. --bucket-mib, --piece-mib,
// --first-bucket-mib: the reducer's options. DGR_BENCH_PER_RANK=1 (pass it with mpiexec -x) prints every
// rank's per-step forward, backward, exposed communication and page faults, and its allocator's counts, to
// stderr.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <sys/resource.h>

#include <mpi.h>

#include "comm/communicator.h"
#include "common/blas.h"
#include "common/world.h"
#include "trainer/adamw.h"
#include "trainer/cpu_allocator.h"
#include "trainer/gradient_reducer.h"
#include "trainer/model.h"

namespace {

torch::Tensor padded(const std::vector<std::vector<int64_t>>& rows) {
  size_t width = 0;
  for (const auto& r : rows) width = std::max(width, r.size());
  auto t = torch::zeros({static_cast<int64_t>(rows.size()), static_cast<int64_t>(width)}, torch::kLong);
  auto a = t.accessor<int64_t, 2>();
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t j = 0; j < rows[i].size(); ++j) a[static_cast<int64_t>(i)][static_cast<int64_t>(j)] = rows[i][j];
  return t;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

long page_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

double mean(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v) sum += x;
  return v.empty() ? 0 : sum / static_cast<double>(v.size());
}

}  // namespace

int main(int argc, char** argv) {
  int steps = 30, warmup = 10, threads = 1, batch = 64, seed = 0;
  double bucket_mib = 25, piece_mib = -1, first_bucket_mib = 1;
  std::string preset = "cpu", profile, allocator = "caching";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* name) { return a.rfind(name, 0) == 0 ? a.substr(std::strlen(name)) : std::string(); };
    if (!value("--steps=").empty()) steps = std::stoi(value("--steps="));
    else if (!value("--warmup=").empty()) warmup = std::stoi(value("--warmup="));
    else if (!value("--threads=").empty()) threads = std::stoi(value("--threads="));
    else if (!value("--batch=").empty()) batch = std::stoi(value("--batch="));
    else if (!value("--seed=").empty()) seed = std::stoi(value("--seed="));
    else if (!value("--preset=").empty()) preset = value("--preset=");
    else if (!value("--profile=").empty()) profile = value("--profile=");
    else if (!value("--bucket-mib=").empty()) bucket_mib = std::stod(value("--bucket-mib="));
    else if (!value("--piece-mib=").empty()) piece_mib = std::stod(value("--piece-mib="));
    else if (!value("--first-bucket-mib=").empty()) first_bucket_mib = std::stod(value("--first-bucket-mib="));
    else if (!value("--allocator=").empty()) allocator = value("--allocator=");
    else {
      std::fprintf(stderr, "usage: stage1_throughput_bench [--steps=30] [--warmup=10] [--threads=1] [--batch=64] "
                           "[--seed=0] [--preset=cpu] [--profile=TRACE.json] [--bucket-mib=25] [--piece-mib=-1 (auto)] [--first-bucket-mib=1] "
                           "[--allocator=caching|system]\n");
      return 2;
    }
  }
  dgr::World world(&argc, &argv);
  const int ranks = world.size(), rank = world.rank();
  torch::set_num_threads(threads);
  // As `dgr train` does (Note [CPU page faults] in trainer/cpu_allocator.cpp); system: LibTorch's own.
  if (allocator == "caching") {
    dgr::trainer::install_caching_cpu_allocator();
  } else if (allocator != "system") {
    std::fprintf(stderr, "--allocator: caching or system, not %s\n", allocator.c_str());
    return 2;
  }
  torch::manual_seed(seed);
  const int vocab = 8000;
  auto model = std::make_shared<dgr::trainer::Seq2Seq>(dgr::trainer::model_preset(preset, vocab));
  model->train();
  torch::optim::AdamW optimizer(model->parameters(),
                                torch::optim::AdamWOptions(2e-3).betas({0.9, 0.98}).weight_decay(0.01));
  // More than one rank: the reducer broadcasts rank 0's parameters and averages the gradients.
  std::unique_ptr<dgr::comm::Communicator> communicator;
  std::unique_ptr<dgr::trainer::GradientReducer> reducer;
  if (ranks > 1) {
    communicator = dgr::comm::make_communicator(dgr::comm::Options{}, world);
    std::vector<std::pair<std::string, torch::Tensor>> named;
    for (auto& item : model->named_parameters()) named.emplace_back(item.key(), item.value());
    auto options = dgr::trainer::reducer_options_from_mib(bucket_mib, piece_mib);
    options.first_bucket_bytes = static_cast<size_t>(first_bucket_mib * (1 << 20));
    reducer = std::make_unique<dgr::trainer::GradientReducer>(named, *communicator, options);
    torch::manual_seed(seed + rank);  // dropout masks differ between ranks
  }

  std::mt19937 rng(static_cast<uint32_t>(seed + rank));
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  std::vector<std::pair<torch::Tensor, torch::Tensor>> batches;
  for (int s = 0; s < warmup + steps; ++s) {
    std::vector<std::vector<int64_t>> src(batch), tgt(batch);
    for (auto& r : src) { r.resize(uniform(8, 20)); for (auto& x : r) x = uniform(4, vocab - 1); }
    for (auto& r : tgt) { r.resize(uniform(4, 11)); for (auto& x : r) x = uniform(4, vocab - 1); }
    batches.emplace_back(padded(src), padded(tgt));
  }

  std::vector<double> times, forward, backward, update, comm, exposed, faults;
  double loss_value = 0;
  // --profile: a Chrome trace of rank 0's timed steps from LibTorch's autograd profiler (op-level costs).
  std::unique_ptr<torch::autograd::profiler::RecordProfile> recorder;
  auto seconds = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  std::chrono::steady_clock::time_point timed_start;
  for (int s = 0; s < warmup + steps; ++s) {
    if (s == warmup) {
      if (!profile.empty() && world.is_root())
        recorder = std::make_unique<torch::autograd::profiler::RecordProfile>(profile);
      if (reducer) MPI_Barrier(MPI_COMM_WORLD);
      timed_start = std::chrono::steady_clock::now();
    }
    const long faults_before = page_faults();
    auto t0 = std::chrono::steady_clock::now();
    const auto& [src, tgt] = batches[s];
    auto tokens = tgt.ne(0).sum().item<double>();
    auto loss = model->loss(src, tgt, 0.1) / tokens;
    auto t1 = std::chrono::steady_clock::now();
    if (reducer) {
      reducer->zero_grad();
      reducer->prepare_backward(true);
      loss.backward();
      reducer->finish_backward();
    } else {
      optimizer.zero_grad();
      loss.backward();
    }
    auto t2 = std::chrono::steady_clock::now();
    dgr::trainer::adamw_step(optimizer);  // as `dgr train` (Note [Fused AdamW])
    loss_value = loss.item<double>();
    auto t3 = std::chrono::steady_clock::now();
    if (s >= warmup) {
      times.push_back(seconds(t0, t3));
      forward.push_back(seconds(t0, t1));
      backward.push_back(seconds(t1, t2));
      update.push_back(seconds(t2, t3));
      comm.push_back(reducer ? reducer->timers().communication_ms / 1e3 : 0.0);
      exposed.push_back(reducer ? reducer->timers().exposed_ms / 1e3 : 0.0);
      faults.push_back(static_cast<double>(page_faults() - faults_before));
    }
  }
  if (reducer) MPI_Barrier(MPI_COMM_WORLD);
  const double total = seconds(timed_start, std::chrono::steady_clock::now());
  recorder.reset();
  int64_t params = 0;
  for (const auto& p : model->parameters()) params += p.numel();
  if (world.is_root()) {
    std::printf("impl=dgr ranks=%d threads=%d batch=%d global_batch=%d steps=%d params=%lld step_ms_median=%.2f "
                "examples_per_s=%.2f examples_per_s_per_rank=%.2f loss=%.4f forward_ms=%.2f backward_ms=%.2f "
                "optimizer_ms=%.2f comm_ms=%.2f exposed_comm_ms=%.2f step_ms_mean=%.2f backward_ms_mean=%.2f "
                "exposed_comm_ms_mean=%.2f page_faults_per_step=%.0f allocator=%s blas_kernels=%s\n",
                ranks, threads, batch, batch * ranks, steps, static_cast<long long>(params), median(times) * 1e3,
                static_cast<double>(batch) * ranks * times.size() / total,
                static_cast<double>(batch) * times.size() / total, loss_value, median(forward) * 1e3,
                median(backward) * 1e3, median(update) * 1e3, median(comm) * 1e3, median(exposed) * 1e3,
                mean(times) * 1e3, mean(backward) * 1e3, mean(exposed) * 1e3, mean(faults), allocator.c_str(),
                dgr::blas::info().core.c_str());
    std::fflush(stdout);
  }
  if (std::getenv("DGR_BENCH_PER_RANK") != nullptr) {
    const auto cache = dgr::trainer::caching_cpu_allocator_stats();
    std::fprintf(stderr, "rank=%d cpu_cache installed=%d hits=%llu misses=%llu released=%llu cached_mib=%.1f live_mib=%.1f\n",
                 rank, cache.installed ? 1 : 0, static_cast<unsigned long long>(cache.hits),
                 static_cast<unsigned long long>(cache.misses), static_cast<unsigned long long>(cache.released),
                 cache.cached_bytes / 1048576.0, cache.live_bytes / 1048576.0);
    std::fprintf(stderr, "rank=%d forward_ms_mean=%.2f backward_ms_mean=%.2f optimizer_ms_mean=%.2f exposed_comm_ms_mean=%.2f\n",
                 rank, mean(forward) * 1e3, mean(backward) * 1e3, mean(update) * 1e3, mean(exposed) * 1e3);
    for (size_t i = 0; i < times.size(); ++i)
      std::fprintf(stderr, "rank=%d step=%zu fwd=%.1f bwd=%.1f exp=%.1f faults=%.0f\n", rank, i, forward[i] * 1e3,
                   backward[i] * 1e3, exposed[i] * 1e3, faults[i]);
  }
  return 0;
}
