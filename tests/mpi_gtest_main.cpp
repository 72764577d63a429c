// gtest main for tests run under mpiexec: every rank runs the tests, the failures of all ranks are summed
// (nccl-tests style) and every rank exits non-zero when any rank failed, so one bad rank fails the test.
// Probes of the CMake helper itself: --dgr-fail-on-rank=R makes rank R fail a check, --dgr-exit-on-rank=R
// makes rank R die without finalising MPI (the job must end non-zero, not hang).
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "common/log.h"
#include "common/world.h"
#include "tests/mpi_test_flags.h"

int g_dgr_fail_on_rank = -1;
int g_dgr_exit_on_rank = -1;

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--dgr-fail-on-rank=", 19) == 0) g_dgr_fail_on_rank = std::atoi(argv[i] + 19);
    if (std::strncmp(argv[i], "--dgr-exit-on-rank=", 19) == 0) g_dgr_exit_on_rank = std::atoi(argv[i] + 19);
  }
  dgr::World world(&argc, &argv);
  dgr::log::init(dgr::log::Options{}, world.rank(), world.size());
  ::testing::InitGoogleTest(&argc, argv);
  if (!world.is_root()) {
    // Other ranks print only their failures (with the rank), not the whole progress.
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int local_failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  if (local_failed) std::fprintf(stderr, "rank %d of %d on %s: FAILED\n", world.rank(), world.size(), world.host().c_str());
  int failed_ranks = 0;
  MPI_Allreduce(&local_failed, &failed_ranks, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (world.is_root()) {
    std::printf("%d of %d ranks failed\n", failed_ranks, world.size());
  }
  return failed_ranks == 0 ? 0 : 1;
}
