// Exact resume on the same world size: training N steps straight and training N/2, stopping, resuming
// from the checkpoint and training N/2 more give the same loss sequence and the same parameters, bit for
// bit (2 ranks, dropout on, async checkpoints).
#include <gtest/gtest.h>

#include <filesystem>

#include <mpi.h>

#include "common/world.h"
#include "tests/toy_training.h"

namespace fs = std::filesystem;

namespace {

std::string shared_dir(const std::string& name) {
  // Rank 0 picks the directory and every rank uses it.
  char path[512] = {0};
  if (dgr::World::current()->is_root()) {
    fs::path dir = fs::temp_directory_path() / ("dgr_resume_test_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    std::snprintf(path, sizeof(path), "%s", dir.c_str());
  }
  MPI_Bcast(path, sizeof(path), MPI_CHAR, 0, MPI_COMM_WORLD);
  return path;
}

TEST(Resume, InterruptedRunEqualsUninterruptedBitForBit) {
  const dgr::World& world = *dgr::World::current();
  dgr::testing::ToyRunOptions straight;
  straight.checkpoint_dir = shared_dir("straight");
  straight.stop_at_step = 10;
  auto reference = dgr::testing::run_toy_training(straight, world);
  ASSERT_EQ(reference.losses.size(), 10u);

  dgr::testing::ToyRunOptions first_half;
  first_half.checkpoint_dir = shared_dir("interrupted");
  first_half.stop_at_step = 5;
  auto first = dgr::testing::run_toy_training(first_half, world);
  dgr::testing::ToyRunOptions second_half = first_half;
  second_half.stop_at_step = 10;
  auto second = dgr::testing::run_toy_training(second_half, world);

  EXPECT_EQ(second.first_step, 5);
  EXPECT_EQ(second.resumed_parameters_hash, first.final_parameters_hash);
  std::vector<double> joined = first.losses;
  joined.insert(joined.end(), second.losses.begin(), second.losses.end());
  ASSERT_EQ(joined.size(), reference.losses.size());
  for (size_t i = 0; i < joined.size(); ++i) EXPECT_EQ(joined[i], reference.losses[i]) << "step " << i + 1;
  ASSERT_EQ(second.parameters.size(), reference.parameters.size());
  size_t differing = 0;
  for (size_t i = 0; i < reference.parameters.size(); ++i) differing += second.parameters[i] != reference.parameters[i];
  EXPECT_EQ(differing, 0u) << "parameters differ from the uninterrupted run";
  EXPECT_EQ(second.final_parameters_hash, reference.final_parameters_hash);
}

TEST(Resume, SignalOnOneRankStopsEveryRankAtTheSameStepAndResumesExactly) {
  const dgr::World& world = *dgr::World::current();
  dgr::testing::ToyRunOptions straight;
  straight.checkpoint_dir = shared_dir("signal_straight");
  straight.stop_at_step = 9;
  auto reference = dgr::testing::run_toy_training(straight, world);

  dgr::testing::ToyRunOptions preempted;
  preempted.checkpoint_dir = shared_dir("signal_preempted");
  preempted.stop_at_step = 9;
  preempted.signal_rank = world.size() - 1;  // SIGUSR1 reaches only the last rank
  preempted.signal_after_step = 4;           // not a multiple of save_every (3)
  auto first = dgr::testing::run_toy_training(preempted, world);
  EXPECT_TRUE(first.stopped_by_signal) << "rank " << world.rank();
  EXPECT_EQ(first.last_step, 4) << "rank " << world.rank();
  EXPECT_TRUE(fs::exists(fs::path(preempted.checkpoint_dir) / "step-00000004" / "COMMITTED"));

  preempted.signal_rank = -1;
  auto second = dgr::testing::run_toy_training(preempted, world);
  EXPECT_EQ(second.first_step, 4);
  EXPECT_FALSE(second.stopped_by_signal);
  EXPECT_EQ(second.final_parameters_hash, reference.final_parameters_hash);
  std::vector<double> joined = first.losses;
  joined.insert(joined.end(), second.losses.begin(), second.losses.end());
  EXPECT_EQ(joined, reference.losses);
}

TEST(Resume, WithoutCheckpointStartsFromScratch) {
  const dgr::World& world = *dgr::World::current();
  dgr::testing::ToyRunOptions options;
  options.checkpoint_dir = shared_dir("fresh");
  options.stop_at_step = 2;
  auto run = dgr::testing::run_toy_training(options, world);
  EXPECT_EQ(run.first_step, 0);
  EXPECT_EQ(run.losses.size(), 2u);
}

}  // namespace
