// Internal to data/hdf5_file.cpp and data/hdf5_chunks.cpp (not a public header): checked HDF5 calls and RAII
// handles. Includes <hdf5.h>.
#pragma once

#include <hdf5.h>

#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/error.h"
#include "data/hdf5_file.h"

namespace dgr::data::h5::detail {

// HDF5 keeps one error stack per thread (thread-safe build); switch off its stderr printing on each thread.
void quiet_this_thread();
// HDF5's own explanation of the last failure on this thread: the innermost messages first (they carry
// the OS error or "data error detected by Fletcher32 checksum"), at most three, without repeats.
std::string hdf5_message();
// Raises "PATH: H5Xxx failed for 'object': <HDF5's message>" as `errors` says.
[[noreturn]] void fail(const char* call, const ErrorStyle& errors, const std::string& path, const std::string& object);

template <typename T>
T checked(T rc, const char* call, const ErrorStyle& errors, const std::string& path, const std::string& object) {
  if (rc < 0) fail(call, errors, path, object);
  return rc;
}


// Owns one hid_t and closes it with the matching H5?close.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() {
    if (id_ >= 0) closer_(id_);
  }
  hid_t get() const { return id_; }

 private:
  hid_t id_;
  Closer closer_;
};

// Chunk shape: the full shape, halving the leading dimensions (rows stay whole as long as possible) until
// one chunk holds at most `chunk_bytes`.
std::vector<hsize_t> chunk_dims(const std::vector<int64_t>& shape, size_t element_bytes, size_t chunk_bytes);

}  // namespace dgr::data::h5::detail

// In File's members: an HDF5 call checked against the file's ErrorStyle.
#define DGR_H5(call, path, object) ::dgr::data::h5::detail::checked((call), #call, errors_, path, object)
// In File's members: DGR_CHECK with the file's ErrorStyle.
#define DGR_H5_CHECK(cond, ...)                                                                               \
  do {                                                                                                        \
    if (!(cond)) {                                                                                            \
      errors_.raise(::dgr::detail::where(__FILE__, __LINE__) + ::fmt::format(__VA_ARGS__) +                   \
                    ::dgr::detail::rank_host_suffix());                                                       \
    }                                                                                                         \
  } while (0)
