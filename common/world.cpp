// World: rank, size, local rank and host from MPI (local = same shared-memory node).
#include "common/world.h"

#include <malloc.h>
#include <mpi.h>
#include <unistd.h>

#include <cstdlib>

#include "common/error.h"

namespace dgr {
namespace {
const World* g_world = nullptr;
}

World::World(int* argc, char*** argv) {
  // Note [Allocator]: tensors of a few MiB are allocated and freed every step; with glibc's defaults each
  // one is a fresh mmap/munmap and its pages fault in again (measured: step time 468 ms -> 243 ms on the
  // training-step benchmark). Keep large blocks in the heap and never trim it, like a caching allocator.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, -1);
  int initialized = 0;
  DGR_MPI_CHECK(MPI_Initialized(&initialized));
  if (!initialized) {
    DGR_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &thread_level_));
    owns_mpi_ = true;
  } else {
    DGR_MPI_CHECK(MPI_Query_thread(&thread_level_));
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  DGR_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  DGR_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size_));
  MPI_Comm local;
  DGR_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local));
  DGR_MPI_CHECK(MPI_Comm_rank(local, &local_rank_));
  DGR_MPI_CHECK(MPI_Comm_size(local, &local_size_));
  MPI_Comm_free(&local);
  char name[256] = {0};
  if (gethostname(name, sizeof(name) - 1) != 0) name[0] = '?';
  host_ = name;
  g_world = this;
}

World::~World() {
  if (g_world == this) g_world = nullptr;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owns_mpi_ && !finalized) MPI_Finalize();
}

const World* World::current() { return g_world; }

void World::abort(int exit_code) const {
  if (size_ > 1) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::exit(exit_code);
}

}  // namespace dgr
