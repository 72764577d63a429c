// A small checked wrapper over the HDF5 C API, used by checkpoints/ and by the prepared data sets: one file,
// datasets written from and read into NamedArrays (whole or a 1-D range), string and integer attributes.
// Every HDF5 call is checked; a failure names the call, the file, the object and HDF5's own message, and is
// thrown as the file's ErrorStyle says. HDF5's headers stay out of this header.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/array.h"

namespace dgr::data::h5 {

// Note [Dataset checksums]: every dataset with at least one element and a rank >= 1 is chunked (chunks of
// at most `chunk_bytes`, no compression) with HDF5's Fletcher-32 filter, which HDF5 verifies on every
// read. A scalar cannot be chunked: it is stored contiguous with an "md5" attribute of its bytes, checked
// on read. A dataset with no elements has no data to check. Each dataset has an attribute dtype="<name>".
// With `plain` a dataset is written as it is: contiguous, no filter, no dtype or md5 attribute, for a format
// that carries checksums of its own (the prepared shards' sha256 in their manifest, Note [Shard layout]).
struct WriteOptions {
  size_t chunk_bytes = size_t{4} << 20;  // upper bound of one chunk's bytes
  bool plain = false;
};

// What a failure of a file is thrown as: checkpoints and export files throw CheckpointError (the default);
// a data set throws DataError, each message ending in `advice`, what to do (e.g. "re-run `dgr prepare`").
struct ErrorStyle {
  bool data_set = false;
  std::string advice;  // "" = none beyond what the message says
  [[noreturn]] void raise(const std::string& message) const;
};

// A dataset's shape and element type, read from the file without its data.
struct DatasetInfo {
  std::vector<int64_t> shape;
  DType dtype = DType::kFloat32;
};

// One open HDF5 file. Not copyable; movable. Local (no MPI); the library is thread-safe, and one File is
// used by one thread at a time.
class File {
 public:
  // Creates (truncates) `path` for writing; file format bounds 1.8..1.10 (readable by h5py and h5ls).
  static File create(const std::string& path, ErrorStyle errors = {});
  // Opens an existing file read-only. A missing or truncated file is an error (of `errors`) naming it.
  static File open_read(const std::string& path, ErrorStyle errors = {});

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
  // True when dataset `name` exists (its groups too).
  bool has_array(const std::string& name) const;
  // Shape and element type of dataset `name` (its dtype attribute when it has one, else its HDF5 type).
  DatasetInfo describe(const std::string& name) const;
  // Elements [begin, begin + count) of the 1-D dataset `name`, which must hold `dtype` (Fletcher-32 is
  // checked by HDF5 when the dataset has it). A range outside the dataset is an error naming both.
  NamedArray read_range(const std::string& name, int64_t begin, int64_t count, DType dtype) const;

  // Scalar attributes of an object ("/" = the file root). Strings are variable-length UTF-8 (h5py
  // returns str), or with `fixed_length` fixed-length ASCII of the value's size (as the prepared shards
  // store them); readers accept both.
  void set_string_attr(const std::string& name, const std::string& value, const std::string& object = "/",
                       bool fixed_length = false);
  void set_int_attr(const std::string& name, int64_t value, const std::string& object = "/");
  std::optional<std::string> string_attr(const std::string& name, const std::string& object = "/") const;
  std::optional<int64_t> int_attr(const std::string& name, const std::string& object = "/") const;

  // Flushes and closes the file, checked (a full disk can show up only here).
  void close();

 private:
  File(int64_t id, std::string path, ErrorStyle errors)
      : id_(id), path_(std::move(path)), errors_(std::move(errors)) {}
  void abandon() noexcept;
  int64_t open_attribute_if_present(const std::string& object, const std::string& name) const;  // -1: none  // closes without reporting errors (Note [Failed writes] in hdf5_file.cpp)
  void write_chunks(int64_t dataset, const NamedArray& array, const std::vector<unsigned long long>& chunk,
                    const std::string& name);
  bool read_chunks(int64_t dataset, NamedArray& array, const std::string& name) const;
  int64_t id_ = -1;  // hid_t
  bool writable_ = false;
  mutable std::vector<uint8_t> chunk_buffer_;  // one stored chunk (data + 4-byte checksum), reused
  std::string path_;
  ErrorStyle errors_;
};

// HDF5's Fletcher-32 (H5_checksum_fletcher32) of `num_bytes` bytes: what its filter stores after each chunk.
uint32_t fletcher32(const uint8_t* data, size_t num_bytes);

// fsync of a file or directory by path (a directory's fsync makes renames and new names in it durable).
// Throws an error of `errors` naming the path.
void fsync_path(const std::string& path, const ErrorStyle& errors = {});

}  // namespace dgr::data::h5
