// A small checked wrapper over the HDF5 C API: one file, datasets written from and read into NamedArrays,
// string and integer attributes. Every HDF5 call is checked; a failure is a CheckpointError naming the
// call, the file, the object and HDF5's own message. HDF5's headers stay out of this header.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "checkpoints/array.h"

namespace dgr::data::h5 {

// Note [Dataset checksums]: every dataset with at least one element and a rank >= 1 is chunked (chunks of
// at most `chunk_bytes`, no compression) with HDF5's Fletcher-32 filter, which HDF5 verifies on every
// read. A scalar cannot be chunked: it is stored contiguous with an "md5" attribute of its bytes, checked
// on read. A dataset with no elements has no data to check. Each dataset has an attribute dtype="<name>".
struct WriteOptions {
  size_t chunk_bytes = size_t{4} << 20;  // upper bound of one chunk's bytes
};

// One open HDF5 file. Not copyable; movable. Local (no MPI); the library is thread-safe, and one File is
// used by one thread at a time.
class File {
 public:
  // Creates (truncates) `path` for writing; file format bounds 1.8..1.10 (readable by h5py and h5ls).
  static File create(const std::string& path);
  // Opens an existing file read-only. A missing or truncated file is a CheckpointError naming it.
  static File open_read(const std::string& path);

  File(File&& other) noexcept;
  File& operator=(File&& other) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File();  // closes, ignoring errors: call close() to see them

  const std::string& path() const { return path_; }

  // Writes `array` as dataset `group/array.name` ("" = the root; intermediate groups are created). Throws
  // on a bad name, a byte count that does not match shape x dtype, an existing dataset, or an HDF5 failure.
  void write_array(const NamedArray& array, const WriteOptions& options = {}, const std::string& group = "");
  // Creates group `name` (and its parents) unless it exists.
  void create_group(const std::string& name);
  // Reads and verifies one dataset (Fletcher-32 or md5, dtype attribute against the stored type).
  NamedArray read_array(const std::string& name) const;
  // Names of every dataset under `group` (recursively, full paths without the leading '/'), sorted.
  std::vector<std::string> array_names(const std::string& group = "/") const;
  // Every dataset under `group`, sorted by name; names are relative to `group`.
  std::vector<NamedArray> read_arrays(const std::string& group = "/") const;

  // Scalar attributes of an object ("/" = the file root). Strings are variable-length UTF-8 (h5py
  // returns str); readers also accept fixed-length strings.
  void set_string_attr(const std::string& name, const std::string& value, const std::string& object = "/");
  void set_int_attr(const std::string& name, int64_t value, const std::string& object = "/");
  std::optional<std::string> string_attr(const std::string& name, const std::string& object = "/") const;
  std::optional<int64_t> int_attr(const std::string& name, const std::string& object = "/") const;

  // Flushes and closes the file, checked (a full disk can show up only here).
  void close();

 private:
  File(int64_t id, std::string path) : id_(id), path_(std::move(path)) {}
  void abandon() noexcept;  // closes without reporting errors (Note [Failed writes] in hdf5_file.cpp)
  void write_chunks(int64_t dataset, const NamedArray& array, const std::vector<unsigned long long>& chunk,
                    const std::string& name);
  bool read_chunks(int64_t dataset, NamedArray& array, const std::string& name) const;
  int64_t id_ = -1;  // hid_t
  bool writable_ = false;
  mutable std::vector<uint8_t> chunk_buffer_;  // one stored chunk (data + 4-byte checksum), reused
  std::string path_;
};

// HDF5's Fletcher-32 (H5_checksum_fletcher32) of `num_bytes` bytes: what its filter stores after each chunk.
uint32_t fletcher32(const uint8_t* data, size_t num_bytes);

// fsync of a file or directory by path (a directory's fsync makes renames and new names in it durable).
// Throws CheckpointError naming the path.
void fsync_path(const std::string& path);

}  // namespace dgr::data::h5
