// World under mpiexec with 1, 2 and 3 ranks: rank/size agree with MPI, ranks are distinct and complete,
// local ranks are consistent with hosts; and the fault probes of the CMake helper.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/log.h"
#include "common/world.h"
#include "tests/mpi_test_flags.h"

namespace {

const dgr::World& world() { return *dgr::World::current(); }

TEST(World, MatchesMpi) {
  int rank = -1, size = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  EXPECT_EQ(world().rank(), rank);
  EXPECT_EQ(world().size(), size);
  EXPECT_EQ(world().is_root(), rank == 0);
  EXPECT_FALSE(world().host().empty());
  EXPECT_GE(world().thread_level(), MPI_THREAD_SERIALIZED);
}

TEST(World, EveryRankExactlyOnce) {
  std::vector<int> ranks(world().size(), -1);
  int mine = world().rank();
  MPI_Allgather(&mine, 1, MPI_INT, ranks.data(), 1, MPI_INT, MPI_COMM_WORLD);
  std::set<int> unique(ranks.begin(), ranks.end());
  EXPECT_EQ(static_cast<int>(unique.size()), world().size());
  EXPECT_EQ(*unique.begin(), 0);
  EXPECT_EQ(*unique.rbegin(), world().size() - 1);
}

TEST(World, LocalRanksAreDenseOnEachHost) {
  // All ranks here share one host: local ranks are 0..local_size-1 and local_size == size.
  std::vector<int> local(world().size(), -1);
  int mine = world().local_rank();
  MPI_Allgather(&mine, 1, MPI_INT, local.data(), 1, MPI_INT, MPI_COMM_WORLD);
  std::set<int> unique(local.begin(), local.end());
  EXPECT_EQ(static_cast<int>(unique.size()), world().local_size());
  EXPECT_LT(world().local_rank(), world().local_size());
}

TEST(World, ErrorsNameRankAndHost) {
  try {
    DGR_CHECK(false, "value {} is wrong", 7);
    FAIL() << "DGR_CHECK did not throw";
  } catch (const dgr::Error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("world_mpi_test.cpp:"), std::string::npos) << what;
    EXPECT_NE(what.find("value 7 is wrong"), std::string::npos) << what;
    if (world().size() > 1) {
      EXPECT_NE(what.find("rank " + std::to_string(world().rank()) + " of " + std::to_string(world().size())),
                std::string::npos) << what;
      EXPECT_NE(what.find(world().host()), std::string::npos) << what;
    }
  }
}

TEST(World, MpiErrorsAreReportedWithTheCall) {
  // An invalid root returns an error (errors return, not abort) that DGR_MPI_CHECK turns into CommError.
  int value = 0;
  EXPECT_THROW(DGR_MPI_CHECK(MPI_Bcast(&value, 1, MPI_INT, world().size() + 5, MPI_COMM_WORLD)), dgr::CommError);
}

TEST(World, SumOfRanks) {
  int mine = world().rank() + 1, sum = 0;
  MPI_Allreduce(&mine, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  EXPECT_EQ(sum, world().size() * (world().size() + 1) / 2);
}

TEST(MpiHelperProbe, FailOrExitOnOneRankWhenAsked) {
  if (world().rank() == g_dgr_exit_on_rank) std::_Exit(3);
  EXPECT_NE(world().rank(), g_dgr_fail_on_rank) << "failing on purpose (--dgr-fail-on-rank)";
  MPI_Barrier(MPI_COMM_WORLD);  // the other ranks wait here for the one that died
}

}  // namespace
