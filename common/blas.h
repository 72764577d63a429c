// Which BLAS kernels this process runs: most of a CPU training step is sgemm, so the kernel set decides
// the throughput (docs/benchmarks.md). Reported by `dgr --version`, in every run's log and by the benches.
#pragma once

#include <string>

namespace dgr::blas {

// The BLAS library LibTorch's CPU matmuls go to, as far as this process can tell.
struct Info {
  bool openblas = false;  // false: not OpenBLAS (reference BLAS, MKL, ...): nothing else is known
  std::string core;       // OpenBLAS's kernel set ("Haswell", "Cooperlake", ...)
  std::string config;     // OpenBLAS's build line ("OpenBLAS 0.3.21 DYNAMIC_ARCH ...")
};
Info info();

// One line: "OpenBLAS 0.3.21, kernels Haswell (OPENBLAS_CORETYPE=Haswell)". OpenBLAS picks its kernels
// from the CPU when it is loaded unless OPENBLAS_CORETYPE names them; the variable, when set, is shown.
std::string describe();

}  // namespace dgr::blas
