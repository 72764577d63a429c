#include "common/blas.h"

#include <dlfcn.h>

#include <cstdlib>

#include <fmt/format.h>

namespace dgr::blas {

Info info() {
  Info out;
  // Looked up rather than linked: LibTorch reaches BLAS through libblas.so.3, which Debian's alternatives
  // may point at OpenBLAS or at the reference BLAS.
  using Text = char* (*)();
  auto corename = reinterpret_cast<Text>(::dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  auto config = reinterpret_cast<Text>(::dlsym(RTLD_DEFAULT, "openblas_get_config"));
  if (corename == nullptr || config == nullptr) return out;
  out.openblas = true;
  if (const char* s = corename()) out.core = s;
  if (const char* s = config()) out.config = s;
  return out;
}

std::string describe() {
  Info blas = info();
  if (!blas.openblas) return "BLAS: not OpenBLAS (reference BLAS is ~8x slower: install libopenblas0-openmp)";
  std::string version = blas.config;
  // "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64" -> "OpenBLAS 0.3.21"
  if (size_t first = version.find(' '); first != std::string::npos) {
    if (size_t second = version.find(' ', first + 1); second != std::string::npos) version.resize(second);
  }
  const char* env = std::getenv("OPENBLAS_CORETYPE");
  return fmt::format("{}, kernels {}{}", version, blas.core,
                     env != nullptr ? fmt::format(" (OPENBLAS_CORETYPE={})", env) : std::string());
}

}  // namespace dgr::blas
