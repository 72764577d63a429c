// The toy training run of the resume tests (see toy_training.h).
#include "tests/toy_training.h"

#include <mpi.h>
#include <torch/torch.h>

#include <chrono>
#include <csignal>
#include <thread>
#include <fstream>

#include "checkpoints/store.h"
#include "comm/communicator.h"
#include "common/files.h"
#include "common/signals.h"
#include "sharding/sampler.h"
#include "trainer/gradient_reducer.h"
#include "trainer/stop.h"
#include "trainer/train_state.h"

namespace dgr::testing {
namespace {

struct ToyNetImpl : torch::nn::Module {
  ToyNetImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(8, 32));
    dropout = register_module("dropout", torch::nn::Dropout(0.2));
    fc2 = register_module("fc2", torch::nn::Linear(32, 4));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2(dropout(torch::relu(fc1(x)))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(ToyNet);

std::string parameters_hash(ToyNet& net) {
  std::string bytes;
  for (auto& p : net->parameters()) {
    torch::Tensor c = p.detach().contiguous();
    bytes.append(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
  }
  return files::md5_hex(bytes);
}

}  // namespace

ToyRunResult run_toy_training(const ToyRunOptions& options, const World& world) {
  torch::set_num_threads(1);
  const int rank = world.rank(), world_size = world.size();
  constexpr uint64_t kSeed = 1234;
  torch::manual_seed(99);  // the data set: the same on every rank
  torch::Tensor inputs = torch::randn({kToyExamples, 8});
  torch::Tensor targets = torch::randn({kToyExamples, 4});

  torch::manual_seed(7);
  ToyNet net;
  torch::optim::Adam optimizer(net->parameters(), torch::optim::AdamOptions(1e-2));
  comm::Options comm_options;
  comm_options.timeout_ms = 120000;
  auto communicator = comm::make_communicator(comm_options, world);
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (auto& item : net->named_parameters()) named.emplace_back(item.key(), item.value());
  trainer::GradientReducer reducer(named, *communicator);
  sharding::EpochSampler sampler(kToyExamples, kToyGlobalBatch, kSeed, rank, world_size);
  checkpoints::StoreOptions store_options;
  store_options.dir = options.checkpoint_dir;
  store_options.keep_last = 2;
  checkpoints::Store store(store_options, world);

  ToyRunResult result;
  trainer::TrainProgress progress;
  progress.seed = kSeed;
  std::optional<checkpoints::LoadedCheckpoint> loaded;
  if (options.resume) loaded = store.load_latest();
  if (loaded) {
    progress = trainer::restore(*loaded, *net, optimizer, rank, world_size);
    sampler.set_position(progress.position);
    result.resumed_parameters_hash = parameters_hash(net);
  } else {
    trainer::seed_rank_rng(kSeed, rank, 0);
  }
  result.first_step = progress.step;
  std::ofstream seen;
  if (!options.seen_file.empty()) seen.open(options.seen_file, std::ios::app);

  signals::reset_for_testing();
  signals::install_stop_handlers();
  net->train();
  while (progress.step < options.stop_at_step) {
    auto batch = sampler.next();
    torch::Tensor index = torch::tensor(batch.examples, torch::kInt64);
    torch::Tensor x = inputs.index_select(0, index), y = targets.index_select(0, index);
    reducer.zero_grad();
    torch::Tensor local_sum = (net->forward(x) - y).pow(2).sum();
    // The reducer averages over ranks: scale so the result is the mean over the global batch.
    torch::Tensor loss = local_sum * (static_cast<double>(world_size) / (batch.global_count * 4.0));
    reducer.prepare_backward(true);
    loss.backward();
    reducer.finish_backward();
    store.wait_for_copies();  // the last checkpoint's writer has copied the parameters: they may change
    optimizer.step();
    double sum = local_sum.item<double>(), global_sum = 0;
    MPI_Allreduce(&sum, &global_sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    result.losses.push_back(global_sum / (batch.global_count * 4.0));
    for (int64_t e : batch.examples) seen << batch.epoch << " " << batch.step_in_epoch << " " << e << "\n";
    ++progress.step;
    progress.position = sampler.position();
    if (options.step_delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(options.step_delay_ms));
    if (rank == options.signal_rank && progress.step == options.signal_after_step) std::raise(SIGUSR1);
    bool stop = trainer::agree_on_stop(*communicator) > 0;
    if (stop || progress.step % options.save_every == 0 || progress.step == options.stop_at_step) {
      store.save(trainer::make_save_request(progress, *net, optimizer, "{\"test\":\"toy\"}", store));
    }
    if (stop) {
      result.stopped_by_signal = true;
      break;
    }
  }
  result.last_step = progress.step;
  store.wait();
  for (auto& p : net->parameters()) {
    torch::Tensor c = p.detach().contiguous();
    result.parameters.insert(result.parameters.end(), c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  }
  result.final_parameters_hash = parameters_hash(net);
  return result;
}

}  // namespace dgr::testing
