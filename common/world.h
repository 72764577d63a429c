// World: who this process is in the job (rank, world size, local rank, host), from MPI.
#pragma once

#include <string>

namespace dgr {

class World {
 public:
  // Initialises MPI (thread level MPI_THREAD_MULTIPLE requested, SERIALIZED required) unless it already
  // is, and reads rank, size, local rank and host. One World per process; it finalises MPI when it
  // initialised it. Collective: every process of the job constructs it.
  World(int* argc, char*** argv);
  ~World();
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  const std::string& host() const { return host_; }
  bool is_root() const { return rank_ == 0; }
  int thread_level() const { return thread_level_; }

  // The World of this process, or nullptr before one is made (used by error messages and logging).
  static const World* current();

  // Ends every process of the job with `exit_code` (MPI_Abort when size > 1), so no rank waits forever
  // in a collective after another one failed.
  [[noreturn]] void abort(int exit_code) const;

 private:
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
  int local_size_ = 1;
  int thread_level_ = 0;
  bool owns_mpi_ = false;
  std::string host_;
};

}  // namespace dgr
