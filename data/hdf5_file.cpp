// Checked HDF5 calls: RAII handles, chunked + Fletcher-32 datasets, string/int attributes, error text
// taken from HDF5's error stack (the automatic stderr printing is turned off on every thread that calls in).
#include "data/hdf5_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/error.h"
#include "common/files.h"

static_assert(std::is_same_v<hid_t, int64_t>, "hid_t is int64_t from HDF5 1.10 on");
static_assert(std::is_same_v<hsize_t, unsigned long long>, "hsize_t as declared in hdf5_file.h");

namespace dgr::data::h5 {
namespace {

// HDF5 keeps one error stack per thread (thread-safe build); switch off its stderr printing on each thread.
void quiet_this_thread() {
  thread_local bool done = false;
  if (!done) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    done = true;
  }
}

// The OS-level messages of the sec2 driver ("file write failed: time = ..., filename = ..., errno = 27,
// error message = 'File too large', buf = ...") are cut to "file write failed: File too large (errno 27)".
std::string shorten(std::string desc) {
  size_t message = desc.find("error message = '");
  size_t number = desc.find("errno = ");
  size_t colon = desc.find(": ");
  if (message == std::string::npos || number == std::string::npos || colon == std::string::npos) return desc;
  size_t begin = message + 17, end = desc.find('\'', begin);
  return fmt::format("{}: {} (errno {})", desc.substr(0, colon), desc.substr(begin, end - begin),
                     std::atoi(desc.c_str() + number + 8));
}

herr_t collect_error(unsigned n, const H5E_error2_t* err, void* data) {
  auto* out = static_cast<std::vector<std::string>*>(data);
  if (err->desc != nullptr && err->desc[0] != '\0') out->push_back(shorten(err->desc));
  return 0;
}

// HDF5's own explanation of the last failure on this thread: the innermost messages first (they carry
// the OS error or "data error detected by Fletcher32 checksum"), at most three, without repeats.
std::string hdf5_message() {
  std::vector<std::string> descs;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_error, &descs);
  std::reverse(descs.begin(), descs.end());
  std::vector<std::string> kept;
  for (const auto& d : descs) {
    if (std::find(kept.begin(), kept.end(), d) == kept.end()) kept.push_back(d);
    if (kept.size() == 3) break;
  }
  if (kept.empty()) return "no message from HDF5";
  std::string text = fmt::format("{}", fmt::join(kept, "; "));
  std::replace(text.begin(), text.end(), '\n', ' ');
  return text;
}

[[noreturn]] void fail(const char* call, const std::string& path, const std::string& object) {
  std::string message = hdf5_message();
  H5Eclear2(H5E_DEFAULT);
  std::string function(call);
  function = function.substr(0, function.find('('));
  throw CheckpointError(fmt::format("{}: {} failed{}: {}", path, function,
                                    object.empty() ? "" : fmt::format(" for '{}'", object), message));
}

template <typename T>
T checked(T rc, const char* call, const std::string& path, const std::string& object = "") {
  if (rc < 0) fail(call, path, object);
  return rc;
}
#define DGR_H5(call, path, object) checked((call), #call, path, object)

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

hid_t file_type(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return H5T_IEEE_F32LE;
    case DType::kBFloat16: return H5T_STD_U16LE;
    case DType::kFloat64: return H5T_IEEE_F64LE;
    case DType::kInt64: return H5T_STD_I64LE;
    case DType::kInt32: return H5T_STD_I32LE;
    case DType::kUInt8: return H5T_STD_U8LE;
  }
  return -1;
}

hid_t memory_type(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return H5T_NATIVE_FLOAT;
    case DType::kBFloat16: return H5T_NATIVE_UINT16;
    case DType::kFloat64: return H5T_NATIVE_DOUBLE;
    case DType::kInt64: return H5T_NATIVE_INT64;
    case DType::kInt32: return H5T_NATIVE_INT32;
    case DType::kUInt8: return H5T_NATIVE_UINT8;
  }
  return -1;
}

// The dtype a stored type stands for when no dtype attribute says otherwise; nullopt when none fits.
std::optional<DType> infer_dtype(hid_t type) {
  H5T_class_t cls = H5Tget_class(type);
  size_t size = H5Tget_size(type);
  if (cls == H5T_FLOAT) {
    if (size == 4) return DType::kFloat32;
    if (size == 8) return DType::kFloat64;
  }
  if (cls == H5T_INTEGER) {
    bool is_signed = H5Tget_sign(type) == H5T_SGN_2;
    if (is_signed && size == 8) return DType::kInt64;
    if (is_signed && size == 4) return DType::kInt32;
    if (!is_signed && size == 1) return DType::kUInt8;
    if (!is_signed && size == 2) return DType::kBFloat16;  // only with dtype="bfloat16"; checked by caller
  }
  return std::nullopt;
}

// Chunk shape: the full shape, halving the leading dimensions (rows stay whole as long as possible) until
// one chunk holds at most `chunk_bytes`.
std::vector<hsize_t> chunk_dims(const std::vector<int64_t>& shape, size_t element_bytes, size_t chunk_bytes) {
  std::vector<hsize_t> chunk(shape.begin(), shape.end());
  auto bytes = [&] {
    hsize_t n = element_bytes;
    for (hsize_t c : chunk) n *= c;
    return n;
  };
  size_t d = 0;
  while (bytes() > chunk_bytes && d < chunk.size()) {
    if (chunk[d] > 1) {
      chunk[d] = (chunk[d] + 1) / 2;
    } else {
      ++d;
    }
  }
  return chunk;
}

std::string parent_of(const std::string& object) { return object.empty() ? "/" : object; }

// Opens attribute `name` of `object` (caller closes it), or returns -1 when the object has no such attribute.
hid_t open_attribute_if_present(hid_t file, const std::string& path, const std::string& object,
                                const std::string& name) {
  std::string where = parent_of(object) + "@" + name;
  if (DGR_H5(H5Aexists_by_name(file, parent_of(object).c_str(), name.c_str(), H5P_DEFAULT), path, where) == 0) {
    return -1;
  }
  return DGR_H5(H5Aopen_by_name(file, parent_of(object).c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT), path, where);
}

// Note [Direct chunk I/O]: HDF5's filter pipeline allocates a fresh buffer for every chunk on every write
// and read (and the Fletcher-32 filter a second one); on hosts where first-touch page faults are costly
// that made writing 256 MiB ~10x slower than fwrite. So datasets are still stored as chunked + Fletcher-32
// (any HDF5 reader, h5py and h5dump verify them as usual), but dgr writes and reads the stored chunks
// itself with H5Dwrite_chunk / H5Dread_chunk through one reused buffer, computing and checking the same
// checksum (fletcher32() below, identical to HDF5's, appended little-endian as the filter does). This
// needs every chunk to be one contiguous run of the row-major array: chunk shapes [1, .., 1, c, full, ..,
// full], which chunk_dims() makes. Files with other chunking or filters are read through H5Dread.

// Calls fn(offset, first_element, num_valid_elements) for every chunk of `shape` with `chunk` of that form;
// the last chunk along the split dimension may hold fewer valid elements than the chunk.
template <typename Fn>
void for_each_chunk(const std::vector<hsize_t>& shape, const std::vector<hsize_t>& chunk, Fn&& fn) {
  size_t rank = shape.size();
  size_t k = 0;  // the split dimension: the first whose chunk length is not 1 (the last when all are)
  while (k + 1 < rank && chunk[k] == 1) ++k;
  hsize_t inner = 1;
  for (size_t d = k + 1; d < rank; ++d) inner *= shape[d];
  std::vector<hsize_t> index(rank, 0);  // chunk grid position: dims < k elementwise, dim k by chunk[k]
  std::vector<hsize_t> stride(rank, 1);
  for (size_t d = rank - 1; d-- > 0;) stride[d] = stride[d + 1] * shape[d + 1];
  while (true) {
    hsize_t first = 0;
    for (size_t d = 0; d <= k; ++d) first += index[d] * stride[d];
    hsize_t rows = std::min(chunk[k], shape[k] - index[k]);
    fn(index, first, rows * inner);
    size_t d = k;
    index[k] += chunk[k];
    while (index[d] >= shape[d]) {
      if (d == 0) return;
      index[d] = 0;
      --d;
      index[d] += 1;
    }
  }
}

// True when every chunk of `chunk` over `shape` is one contiguous run (see Note [Direct chunk I/O]).
bool chunks_are_runs(const std::vector<hsize_t>& shape, const std::vector<hsize_t>& chunk) {
  size_t d = 0;
  while (d < shape.size() && chunk[d] == 1) ++d;  // leading dimensions split to single rows
  ++d;                                            // the split dimension, any chunk length
  for (; d < shape.size(); ++d) {
    if (chunk[d] != shape[d]) return false;       // trailing dimensions whole
  }
  return true;
}

// Note [Failed writes]: when a write fails (disk full, file size limit), HDF5 1.10 cannot close the file
// any more: H5Fclose fails while flushing, the id stays "valid", and any later close of it (including the
// one HDF5 runs at exit) crashes. So (1) before closing a file whose writing failed, its descriptor is
// pointed at a memory file, so the flush and the truncate at close go there and the partial file on disk
// is released; (2) HDF5's at-exit clean-up is switched off (before the library starts), so an id left
// broken anyway is never touched again. Every file dgr writes is closed explicitly, so nothing is lost.
void detach_from_disk(hid_t file) {
  void* handle = nullptr;
  if (H5Fget_vfd_handle(file, H5P_DEFAULT, &handle) < 0 || handle == nullptr) return;
  int fd = *static_cast<int*>(handle);
  int sink = ::memfd_create("dgr-h5-discard", MFD_CLOEXEC);
  if (sink < 0) sink = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (sink >= 0) {
    ::dup2(sink, fd);
    ::close(sink);
  }
}

const bool kNoAtExit = [] {
  H5dont_atexit();  // Note [Failed writes]
  return true;
}();

}  // namespace

namespace {
// fletcher32(), and when `copy_to` is set a copy of the bytes made in the same pass (block by block, so
// the data is read from memory once).
uint32_t fletcher32_impl(const uint8_t* data, size_t num_bytes, uint8_t* copy_to) {
  // HDF5's algorithm (H5_checksum_fletcher32: big-endian 16-bit words, an odd last byte as the high half of
  // a word, sums folded with end-around carry) computed in blocks that the compiler can vectorise:
  // over a block of m words, sum1 grows by sum(w) and sum2 by m * sum1 + sum((m - i) * w_i). HDF5's folded
  // sums are the residues mod 65535 written in [1, 65535], except that all-zero data gives 0.
  constexpr size_t kBlockWords = 256;  // keeps sum((m - i) * w_i) below 2^32
  const size_t num_words = num_bytes / 2;
  uint64_t sum1 = 0, sum2 = 0;
  uint32_t any = 0;
  for (size_t done = 0; done < num_words;) {
    const uint32_t m = static_cast<uint32_t>(std::min(kBlockWords, num_words - done));
    const uint8_t* p = data + 2 * done;
    if (copy_to != nullptr) std::memcpy(copy_to + 2 * done, p, 2 * size_t{m});
    uint32_t a = 0, b = 0;
    for (uint32_t i = 0; i < m; ++i) {
      uint16_t raw;
      std::memcpy(&raw, p + 2 * i, 2);
      uint32_t w = __builtin_bswap16(raw);
      a += w;
      b += (m - i) * w;
    }
    sum2 = (sum2 + uint64_t{m} * sum1 + b) % 65535;
    sum1 = (sum1 + a) % 65535;
    any |= a;
    done += m;
  }
  if (num_bytes % 2) {
    if (copy_to != nullptr) copy_to[num_bytes - 1] = data[num_bytes - 1];
    uint32_t w = uint32_t{data[num_bytes - 1]} << 8;
    sum1 = (sum1 + w) % 65535;
    sum2 = (sum2 + sum1) % 65535;
    any |= w;
  }
  if (any == 0) return 0;
  if (sum1 == 0) sum1 = 65535;
  if (sum2 == 0) sum2 = 65535;
  return static_cast<uint32_t>((sum2 << 16) | sum1);
}
}  // namespace

uint32_t fletcher32(const uint8_t* data, size_t num_bytes) { return fletcher32_impl(data, num_bytes, nullptr); }

File File::create(const std::string& path) {
  quiet_this_thread();
  Handle fapl(DGR_H5(H5Pcreate(H5P_FILE_ACCESS), path, ""), H5Pclose);
  DGR_H5(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_V110), path, "");
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get());
  if (id < 0) {
    std::string message = hdf5_message();
    throw CheckpointError(fmt::format("{}: cannot create the file (H5Fcreate failed: {}): is the directory "
                                      "writable and is there free space?", path, message));
  }
  File file(id, path);
  file.writable_ = true;
  return file;
}

File File::open_read(const std::string& path) {
  quiet_this_thread();
  if (::access(path.c_str(), R_OK) != 0) {
    throw CheckpointError(fmt::format("{}: cannot open: {} (is the path right?)", path, std::strerror(errno)));
  }
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) {
    std::string message = hdf5_message();
    throw CheckpointError(fmt::format("{}: not a readable HDF5 file (H5Fopen failed: {}): the file is damaged "
                                      "or truncated; use an earlier copy", path, message));
  }
  return File(id, path);
}

File::File(File&& other) noexcept : id_(other.id_), writable_(other.writable_), path_(std::move(other.path_)) {
  other.id_ = -1;
}

File& File::operator=(File&& other) noexcept {
  if (this != &other) {
    abandon();
    id_ = other.id_;
    writable_ = other.writable_;
    path_ = std::move(other.path_);
    other.id_ = -1;
  }
  return *this;
}

File::~File() { abandon(); }

void File::abandon() noexcept {
  if (id_ < 0) return;
  quiet_this_thread();
  if (writable_) detach_from_disk(id_);  // not closed by close(): writing failed (Note [Failed writes])
  H5Fclose(id_);
  id_ = -1;
}

void File::close() {
  quiet_this_thread();
  if (id_ < 0) return;
  if (writable_ && H5Fflush(id_, H5F_SCOPE_LOCAL) < 0) {
    std::string message = hdf5_message();
    abandon();
    throw CheckpointError(fmt::format("{}: H5Fflush failed: {}", path_, message));
  }
  hid_t id = id_;
  id_ = -1;
  DGR_H5(H5Fclose(id), path_, "");
}

void File::write_array(const NamedArray& array, const WriteOptions& options, const std::string& group) {
  quiet_this_thread();
  check_array_name(array.name);
  if (!group.empty()) check_array_name(group);
  const std::string name = group.empty() ? array.name : group + "/" + array.name;
  for (int64_t d : array.shape) {
    DGR_CHECK_AS(CheckpointError, d >= 0, "{}: array '{}' has a negative dimension in shape {}", path_, name,
                 shape_string(array.shape));
  }
  DGR_CHECK_AS(CheckpointError, array.bytes.size() == array.num_bytes(),
               "{}: array '{}' has {} bytes, but shape {} of {} needs {} (the caller filled it wrongly)", path_,
               name, array.bytes.size(), shape_string(array.shape), dtype_name(array.dtype), array.num_bytes());

  std::vector<hsize_t> dims(array.shape.begin(), array.shape.end());
  Handle space(array.shape.empty() ? DGR_H5(H5Screate(H5S_SCALAR), path_, name)
                                   : DGR_H5(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
                                            path_, name),
               H5Sclose);
  Handle lcpl(DGR_H5(H5Pcreate(H5P_LINK_CREATE), path_, name), H5Pclose);
  DGR_H5(H5Pset_create_intermediate_group(lcpl.get(), 1), path_, name);
  Handle dcpl(DGR_H5(H5Pcreate(H5P_DATASET_CREATE), path_, name), H5Pclose);
  const bool filtered = !array.shape.empty() && array.num_elements() > 0;
  if (filtered) {
    std::vector<hsize_t> chunk = chunk_dims(array.shape, dtype_size(array.dtype), options.chunk_bytes);
    DGR_H5(H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()), path_, name);
    DGR_H5(H5Pset_fletcher32(dcpl.get()), path_, name);
  }
  Handle dataset(DGR_H5(H5Dcreate2(id_, name.c_str(), file_type(array.dtype), space.get(), lcpl.get(), dcpl.get(),
                                   H5P_DEFAULT),
                        path_, name),
                 H5Dclose);
  if (filtered) {
    write_chunks(dataset.get(), array, chunk_dims(array.shape, dtype_size(array.dtype), options.chunk_bytes), name);
  } else if (array.num_elements() > 0) {
    DGR_H5(H5Dwrite(dataset.get(), memory_type(array.dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, array.bytes.data()),
           path_, name);
  }
  set_string_attr("dtype", dtype_name(array.dtype), name);
  if (array.shape.empty()) {
    set_string_attr("md5", files::md5_hex(std::string(array.bytes.begin(), array.bytes.end())), name);
  }
}

void File::write_chunks(int64_t dataset, const NamedArray& array, const std::vector<hsize_t>& chunk,
                        const std::string& name) {
  const size_t element_bytes = dtype_size(array.dtype);
  std::vector<hsize_t> shape(array.shape.begin(), array.shape.end());
  size_t chunk_bytes = element_bytes;
  for (hsize_t c : chunk) chunk_bytes *= c;
  if (chunk_buffer_.size() < chunk_bytes + 4) chunk_buffer_.resize(chunk_bytes + 4);
  uint8_t* buffer = chunk_buffer_.data();
  for_each_chunk(shape, chunk, [&](const std::vector<hsize_t>& offset, hsize_t first, hsize_t count) {
    size_t valid_bytes = count * element_bytes;
    const uint8_t* source = array.bytes.data() + first * element_bytes;
    uint32_t checksum;
    if (valid_bytes == chunk_bytes) {
      checksum = fletcher32_impl(source, chunk_bytes, buffer);  // copy and checksum in one pass
    } else {  // an edge chunk: zero padding, as HDF5 stores it
      std::memcpy(buffer, source, valid_bytes);
      std::memset(buffer + valid_bytes, 0, chunk_bytes - valid_bytes);
      checksum = fletcher32(buffer, chunk_bytes);
    }
    for (int i = 0; i < 4; ++i) buffer[chunk_bytes + i] = static_cast<uint8_t>(checksum >> (8 * i));  // LE, as H5Z
    DGR_H5(H5Dwrite_chunk(dataset, H5P_DEFAULT, 0, offset.data(), chunk_bytes + 4, buffer), path_, name);
  });
}

// Reads a chunked + Fletcher-32 dataset chunk by chunk (Note [Direct chunk I/O]); false when its layout
// is not one dgr writes, so the caller reads it through H5Dread instead.
bool File::read_chunks(int64_t dataset, NamedArray& array, const std::string& name) const {
  Handle dcpl(DGR_H5(H5Dget_create_plist(dataset), path_, name), H5Pclose);
  if (H5Pget_layout(dcpl.get()) != H5D_CHUNKED || H5Pget_nfilters(dcpl.get()) != 1) return false;
  unsigned flags = 0;
  size_t num_values = 0;
  unsigned config = 0;
  if (H5Pget_filter2(dcpl.get(), 0, &flags, &num_values, nullptr, 0, nullptr, &config) != H5Z_FILTER_FLETCHER32) {
    return false;
  }
  std::vector<hsize_t> shape(array.shape.begin(), array.shape.end());
  std::vector<hsize_t> chunk(shape.size());
  if (DGR_H5(H5Pget_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()), path_, name) !=
          static_cast<int>(chunk.size()) ||
      !chunks_are_runs(shape, chunk)) {
    return false;
  }
  const size_t element_bytes = dtype_size(array.dtype);
  size_t chunk_bytes = element_bytes;
  for (hsize_t c : chunk) chunk_bytes *= c;
  if (chunk_buffer_.size() < chunk_bytes + 4) chunk_buffer_.resize(chunk_bytes + 4);
  uint8_t* buffer = chunk_buffer_.data();
  for_each_chunk(shape, chunk, [&](const std::vector<hsize_t>& offset, hsize_t first, hsize_t count) {
    hsize_t stored = 0;
    DGR_H5(H5Dget_chunk_storage_size(dataset, offset.data(), &stored), path_, name);
    DGR_CHECK_AS(CheckpointError, stored == chunk_bytes + 4,
                 "{}: dataset '{}': the chunk at {} holds {} bytes, expected {}: the file is damaged; use an "
                 "earlier copy", path_, name, shape_string({offset.begin(), offset.end()}), stored, chunk_bytes + 4);
    uint32_t filter_mask = 0;
    DGR_H5(H5Dread_chunk(dataset, H5P_DEFAULT, offset.data(), &filter_mask, buffer), path_, name);
    uint32_t stored_sum = 0;
    for (int i = 0; i < 4; ++i) stored_sum |= uint32_t{buffer[chunk_bytes + i]} << (8 * i);
    uint32_t computed = fletcher32(buffer, chunk_bytes);
    DGR_CHECK_AS(CheckpointError, filter_mask == 0 && computed == stored_sum,
                 "{}: dataset '{}': the chunk at {} fails its Fletcher-32 checksum (stored {:08x}, computed {:08x}): "
                 "the file is damaged; use an earlier copy", path_, name,
                 shape_string({offset.begin(), offset.end()}), stored_sum, computed);
    std::memcpy(array.bytes.data() + first * element_bytes, buffer, count * element_bytes);
  });
  return true;
}

void File::create_group(const std::string& name) {
  quiet_this_thread();
  check_array_name(name);
  if (DGR_H5(H5Lexists(id_, name.c_str(), H5P_DEFAULT), path_, name) > 0) return;
  Handle lcpl(DGR_H5(H5Pcreate(H5P_LINK_CREATE), path_, name), H5Pclose);
  DGR_H5(H5Pset_create_intermediate_group(lcpl.get(), 1), path_, name);
  Handle group(DGR_H5(H5Gcreate2(id_, name.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT), path_, name), H5Gclose);
}

NamedArray File::read_array(const std::string& name) const {
  quiet_this_thread();
  NamedArray array;
  array.name = name;
  Handle dataset(DGR_H5(H5Dopen2(id_, name.c_str(), H5P_DEFAULT), path_, name), H5Dclose);
  Handle type(DGR_H5(H5Dget_type(dataset.get()), path_, name), H5Tclose);
  std::optional<std::string> dtype_attr = string_attr("dtype", name);
  std::optional<DType> stored = infer_dtype(type.get());
  if (dtype_attr) {
    array.dtype = parse_dtype(*dtype_attr);
    DGR_CHECK_AS(CheckpointError,
                 stored && H5Tget_size(type.get()) == dtype_size(array.dtype) &&
                     (*stored == array.dtype || array.dtype == DType::kBFloat16),
                 "{}: dataset '{}' says dtype={} but its HDF5 type does not match: the file is damaged; use an "
                 "earlier copy", path_, name, *dtype_attr);
  } else {
    DGR_CHECK_AS(CheckpointError, stored && *stored != DType::kBFloat16,
                 "{}: dataset '{}' has an HDF5 type dgr cannot read (use float32/64, int32/64 or uint8, or set "
                 "the attribute dtype)", path_, name);
    array.dtype = *stored;
  }
  Handle space(DGR_H5(H5Dget_space(dataset.get()), path_, name), H5Sclose);
  int ndims = DGR_H5(H5Sget_simple_extent_ndims(space.get()), path_, name);
  std::vector<hsize_t> dims(static_cast<size_t>(ndims));
  if (ndims > 0) DGR_H5(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), path_, name);
  DType dtype = array.dtype;
  array = NamedArray::allocate(name, std::vector<int64_t>(dims.begin(), dims.end()), dtype);
  if (array.num_elements() > 0 && !read_chunks(dataset.get(), array, name)) {
    DGR_H5(H5Dread(dataset.get(), memory_type(array.dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, array.bytes.data()),
           path_, name);
  }
  if (std::optional<std::string> md5 = string_attr("md5", name)) {
    std::string found = files::md5_hex(std::string(array.bytes.begin(), array.bytes.end()));
    DGR_CHECK_AS(CheckpointError, found == *md5,
                 "{}: dataset '{}' fails its md5 check (stored {}, computed {}): the file is damaged; use an "
                 "earlier copy", path_, name, *md5, found);
  }
  return array;
}

namespace {
struct VisitState {
  std::vector<std::string> names;
  std::string error;
};

herr_t visit_link(hid_t group, const char* name, const H5L_info_t* info, void* data) {
  auto* state = static_cast<VisitState*>(data);
  if (info->type != H5L_TYPE_HARD) return 0;
  hid_t object = H5Oopen(group, name, H5P_DEFAULT);
  if (object < 0) {
    state->error = fmt::format("H5Oopen('{}') failed: {}", name, hdf5_message());
    return -1;
  }
  if (H5Iget_type(object) == H5I_DATASET) state->names.emplace_back(name);
  H5Oclose(object);
  return 0;
}
}  // namespace

std::vector<std::string> File::array_names(const std::string& group) const {
  quiet_this_thread();
  Handle g(DGR_H5(H5Gopen2(id_, group.c_str(), H5P_DEFAULT), path_, group), H5Gclose);
  VisitState state;
  if (H5Lvisit(g.get(), H5_INDEX_NAME, H5_ITER_INC, visit_link, &state) < 0) {
    throw CheckpointError(fmt::format("{}: listing '{}' failed: {}", path_, group,
                                      state.error.empty() ? hdf5_message() : state.error));
  }
  std::sort(state.names.begin(), state.names.end());
  return state.names;
}

std::vector<NamedArray> File::read_arrays(const std::string& group) const {
  std::vector<NamedArray> out;
  std::string prefix = group == "/" ? "" : group + "/";
  for (const std::string& name : array_names(group)) {
    out.push_back(read_array(prefix + name));
    out.back().name = name;
  }
  return out;
}

void File::set_string_attr(const std::string& name, const std::string& value, const std::string& object) {
  quiet_this_thread();
  std::string where = parent_of(object) + "@" + name;
  Handle type(DGR_H5(H5Tcopy(H5T_C_S1), path_, where), H5Tclose);
  DGR_H5(H5Tset_size(type.get(), H5T_VARIABLE), path_, where);
  DGR_H5(H5Tset_cset(type.get(), H5T_CSET_UTF8), path_, where);
  Handle space(DGR_H5(H5Screate(H5S_SCALAR), path_, where), H5Sclose);
  Handle attr(DGR_H5(H5Acreate_by_name(id_, parent_of(object).c_str(), name.c_str(), type.get(), space.get(),
                                       H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                     path_, where),
              H5Aclose);
  const char* text = value.c_str();
  DGR_H5(H5Awrite(attr.get(), type.get(), &text), path_, where);
}

void File::set_int_attr(const std::string& name, int64_t value, const std::string& object) {
  quiet_this_thread();
  std::string where = parent_of(object) + "@" + name;
  Handle space(DGR_H5(H5Screate(H5S_SCALAR), path_, where), H5Sclose);
  Handle attr(DGR_H5(H5Acreate_by_name(id_, parent_of(object).c_str(), name.c_str(), H5T_STD_I64LE, space.get(),
                                       H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                     path_, where),
              H5Aclose);
  DGR_H5(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value), path_, where);
}

std::optional<std::string> File::string_attr(const std::string& name, const std::string& object) const {
  quiet_this_thread();
  std::string where = parent_of(object) + "@" + name;
  hid_t attr_id = open_attribute_if_present(id_, path_, object, name);
  if (attr_id < 0) return std::nullopt;
  Handle attr(attr_id, H5Aclose);
  Handle stored(DGR_H5(H5Aget_type(attr.get()), path_, where), H5Tclose);
  DGR_CHECK_AS(CheckpointError, H5Tget_class(stored.get()) == H5T_STRING,
               "{}: attribute '{}' is not a string: the file was not written by dgr or is damaged", path_, where);
  Handle type(DGR_H5(H5Tcopy(H5T_C_S1), path_, where), H5Tclose);
  DGR_H5(H5Tset_cset(type.get(), H5Tget_cset(stored.get())), path_, where);  // no ASCII <-> UTF-8 conversion
  if (DGR_H5(H5Tis_variable_str(stored.get()), path_, where) > 0) {
    DGR_H5(H5Tset_size(type.get(), H5T_VARIABLE), path_, where);
    char* text = nullptr;
    DGR_H5(H5Aread(attr.get(), type.get(), &text), path_, where);
    std::string value = text != nullptr ? text : "";
    H5free_memory(text);
    return value;
  }
  size_t size = H5Tget_size(stored.get());
  DGR_H5(H5Tset_size(type.get(), size + 1), path_, where);
  std::string buffer(size + 1, '\0');
  DGR_H5(H5Aread(attr.get(), type.get(), buffer.data()), path_, where);
  return std::string(buffer.c_str());
}

std::optional<int64_t> File::int_attr(const std::string& name, const std::string& object) const {
  quiet_this_thread();
  std::string where = parent_of(object) + "@" + name;
  hid_t attr_id = open_attribute_if_present(id_, path_, object, name);
  if (attr_id < 0) return std::nullopt;
  Handle attr(attr_id, H5Aclose);
  Handle stored(DGR_H5(H5Aget_type(attr.get()), path_, where), H5Tclose);
  DGR_CHECK_AS(CheckpointError, H5Tget_class(stored.get()) == H5T_INTEGER,
               "{}: attribute '{}' is not an integer: the file was not written by dgr or is damaged", path_, where);
  int64_t value = 0;
  DGR_H5(H5Aread(attr.get(), H5T_NATIVE_INT64, &value), path_, where);
  return value;
}

void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw CheckpointError(fmt::format("{}: cannot open for fsync: {}", path, std::strerror(errno)));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) {
    throw CheckpointError(fmt::format("{}: fsync failed: {} (disk full or I/O error?)", path, std::strerror(err)));
  }
}

}  // namespace dgr::data::h5
