// Versions of dgr, LibTorch, MPI, HDF5 and (when built) NCCL.
#include "launcher/version.h"

#include <hdf5.h>
#include <mpi.h>
#include <torch/version.h>

#include <fmt/format.h>

#include "common/blas.h"
#include "common/text.h"

#ifdef DGR_HAVE_NCCL
#include <nccl.h>
#endif

#ifndef DGR_VERSION
#define DGR_VERSION "unknown"
#endif
#include "git_commit.h"  // DGR_GIT_COMMIT, written at build time by cmake/git_commit.cmake

namespace dgr::launcher {

std::string version_report() {
  std::string out = fmt::format("dgr {} (git {})\n", DGR_VERSION, DGR_GIT_COMMIT);
  out += fmt::format("LibTorch {}\n", TORCH_VERSION);
  char mpi[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
  int length = 0;
  MPI_Get_library_version(mpi, &length);
  std::string mpi_line(mpi, static_cast<size_t>(length));
  mpi_line = mpi_line.substr(0, mpi_line.find(','));
  out += fmt::format("MPI {} (standard {}.{})\n", text::trim(mpi_line), MPI_VERSION, MPI_SUBVERSION);
  unsigned major = 0, minor = 0, release = 0;
  H5get_libversion(&major, &minor, &release);
  out += fmt::format("HDF5 {}.{}.{}\n", major, minor, release);
  out += blas::describe() + "\n";
#ifdef DGR_HAVE_NCCL
  int nccl = 0;
  ncclGetVersion(&nccl);
  out += fmt::format("NCCL {}.{}.{}\n", nccl / 10000, (nccl % 10000) / 100, nccl % 100);
#else
  out += "NCCL not built (configure with CUDA and NCCL to enable)\n";
#endif
  return out;
}

std::string version_line() {
  std::string line(text::trim(version_report()));
  for (size_t at = line.find('\n'); at != std::string::npos; at = line.find('\n', at)) line.replace(at, 1, "; ");
  return line;
}

}  // namespace dgr::launcher
