// Training-step benchmark: the same transformer as bench/ddp_reference.py (d_model 256, 8 heads, 2+2
// layers, ffn 2048, batch 16, source 32, target 16, Adam, one thread per rank), trained by dgr with its
// GradientReducer. Run under mpiexec -n 1 or 2; prints one key=value line (rank 0) with step-time min and
// median, and the reducer's communication and exposed communication.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <mpi.h>

#include "comm/communicator.h"
#include "common/world.h"
#include "trainer/gradient_reducer.h"

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  int steps = 30, warmup = 3, threads = 1;
  std::string backend = "ring";
  double bucket_mib = 25;
  double piece_mib = -1;  // -1: the reducer's default (whole buckets on the CPU)
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* name) { return a.rfind(name, 0) == 0 ? a.substr(std::strlen(name)) : std::string(); };
    if (!value("--steps=").empty()) steps = std::stoi(value("--steps="));
    else if (!value("--warmup=").empty()) warmup = std::stoi(value("--warmup="));
    else if (!value("--threads=").empty()) threads = std::stoi(value("--threads="));
    else if (!value("--backend=").empty()) backend = value("--backend=");
    else if (!value("--bucket-mib=").empty()) bucket_mib = std::stod(value("--bucket-mib="));
    else if (!value("--piece-mib=").empty()) piece_mib = std::stod(value("--piece-mib="));
    else { std::fprintf(stderr, "usage: train_step_bench [--steps=N] [--warmup=N] [--threads=N] [--backend=ring|mpi] [--bucket-mib=25] [--piece-mib=N (0: whole buckets; default: the reducer's)]\n"); return 2; }
  }
  dgr::World world(&argc, &argv);
  torch::set_num_threads(threads);
  dgr::comm::Options options;
  options.backend = backend;
  auto communicator = dgr::comm::make_communicator(options, world);

  torch::manual_seed(0);
  torch::nn::Transformer model(torch::nn::TransformerOptions(256, 8).num_encoder_layers(2).num_decoder_layers(2)
                                   .dim_feedforward(2048).dropout(0.1));
  std::vector<std::pair<std::string, torch::Tensor>> named;
  int64_t num_parameters = 0;
  for (auto& item : model->named_parameters()) {
    named.emplace_back(item.key(), item.value());
    num_parameters += item.value().numel();
  }
  dgr::trainer::ReducerOptions reducer_options;
  reducer_options.bucket_bytes = static_cast<size_t>(bucket_mib * (1 << 20));
  if (piece_mib >= 0) reducer_options.piece_bytes = static_cast<size_t>(piece_mib * (1 << 20));
  dgr::trainer::GradientReducer reducer(named, *communicator, reducer_options);
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(1e-4));
  torch::manual_seed(1 + world.rank());
  torch::Tensor src = torch::randn({32, 16, 256}), tgt = torch::randn({16, 16, 256}), target = torch::randn({16, 16, 256});

  std::vector<double> step_ms, comm_ms, exposed_ms, backward_ms, forward_ms, optimizer_ms;
  for (int step = 0; step < warmup + steps; ++step) {
    MPI_Barrier(MPI_COMM_WORLD);
    auto start = std::chrono::steady_clock::now();
    reducer.zero_grad();
    torch::Tensor loss = torch::mse_loss(model->forward(src, tgt), target);
    auto forward_end = std::chrono::steady_clock::now();
    reducer.prepare_backward(true);
    loss.backward();
    reducer.finish_backward();
    auto optimizer_start = std::chrono::steady_clock::now();
    optimizer.step();
    double optimizer_step_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - optimizer_start).count();
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    double slowest = 0;
    MPI_Allreduce(&ms, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (step < warmup) continue;
    step_ms.push_back(slowest);
    comm_ms.push_back(reducer.timers().communication_ms);
    exposed_ms.push_back(reducer.timers().exposed_ms);
    backward_ms.push_back(reducer.timers().backward_ms);
    forward_ms.push_back(std::chrono::duration<double, std::milli>(forward_end - start).count());
    optimizer_ms.push_back(optimizer_step_ms);
  }
  if (world.is_root()) {
    std::printf("impl=dgr ranks=%d threads=%d params=%lld buckets=%zu pieces=%zu steps=%d step_ms_min=%.1f step_ms_median=%.1f "
                "forward_ms_median=%.1f backward_ms_median=%.1f optimizer_ms_median=%.1f comm_ms_median=%.1f exposed_comm_ms_median=%.1f\n",
                world.size(), threads, static_cast<long long>(num_parameters), reducer.num_buckets(), reducer.num_pieces(), steps,
                *std::min_element(step_ms.begin(), step_ms.end()), median(step_ms), median(forward_ms), median(backward_ms),
                median(optimizer_ms),
                median(comm_ms), median(exposed_ms));
  }
  return 0;
}
