// dgr's error hierarchy and check macros: every failure names where it happened (file:line), what was
// expected, what was found and what to do, plus the rank and host that saw it.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace dgr {

// Base of every error dgr throws on purpose. `what()` is the full one-line message.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};
// A config file, flag or option value is wrong.
class ConfigError : public Error { using Error::Error; };
// An input file (corpus, queries, qrels, run, lists) is missing, malformed or inconsistent.
class DataError : public Error { using Error::Error; };
// A collective, MPI, NCCL or CUDA call failed or timed out.
class CommError : public Error { using Error::Error; };
// A checkpoint or exported model cannot be written or read.
class CheckpointError : public Error { using Error::Error; };
// Something outside dgr's control (a library call, the OS) failed.
class SystemError : public Error { using Error::Error; };

namespace detail {
// "file.cpp:42: " prefix plus rank/host suffix, as used by the macros below.
std::string where(const char* file, int line);
std::string rank_host_suffix();
}  // namespace detail

}  // namespace dgr

// Throws ErrorType with "file:line: <message> [rank R on HOST]" when `cond` is false.
#define DGR_CHECK_AS(ErrorType, cond, ...)                                                       \
  do {                                                                                           \
    if (!(cond)) {                                                                               \
      throw ErrorType(::dgr::detail::where(__FILE__, __LINE__) + ::fmt::format(__VA_ARGS__) +    \
                      ::dgr::detail::rank_host_suffix());                                        \
    }                                                                                            \
  } while (0)

#define DGR_CHECK(cond, ...) DGR_CHECK_AS(::dgr::Error, cond, __VA_ARGS__)

// Wraps an MPI call: on failure reports the call, MPI's error string, the rank and the host.
#define DGR_MPI_CHECK(call)                                                                      \
  do {                                                                                           \
    int dgr_mpi_rc_ = (call);                                                                    \
    if (dgr_mpi_rc_ != 0) {                                                                      \
      throw ::dgr::CommError(::dgr::detail::where(__FILE__, __LINE__) + #call + " failed: " +    \
                             ::dgr::detail::mpi_error_string(dgr_mpi_rc_) +                      \
                             ::dgr::detail::rank_host_suffix());                                 \
    }                                                                                            \
  } while (0)

namespace dgr::detail {
std::string mpi_error_string(int code);
}
