// Checked HDF5 calls: files, datasets (chunked + Fletcher-32, or plain), string/int attributes, error text
// taken from HDF5's error stack (the automatic stderr printing is turned off on every thread that calls in).
// The direct chunk I/O and Fletcher-32 are in hdf5_chunks.cpp.
#include "data/hdf5_file.h"

#include <fcntl.h>
#include <sys/mman.h>
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
#include "data/hdf5_detail.h"

static_assert(std::is_same_v<hid_t, int64_t>, "hid_t is int64_t from HDF5 1.10 on");
static_assert(std::is_same_v<hsize_t, unsigned long long>, "hsize_t as declared in hdf5_file.h");

namespace dgr::data::h5 {
using namespace detail;

namespace {

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


hid_t file_type(DType dtype) {
  switch (dtype) {
    case DType::kInt8: return H5T_STD_I8LE;
    case DType::kUInt64: return H5T_STD_U64LE;
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
    case DType::kInt8: return H5T_NATIVE_INT8;
    case DType::kUInt64: return H5T_NATIVE_UINT64;
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
    if (is_signed && size == 1) return DType::kInt8;
    if (!is_signed && size == 8) return DType::kUInt64;
    if (!is_signed && size == 2) return DType::kBFloat16;  // only with dtype="bfloat16"; checked by caller
  }
  return std::nullopt;
}

std::string parent_of(const std::string& object) { return object.empty() ? "/" : object; }


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

namespace detail {

// HDF5 keeps one error stack per thread (thread-safe build); switch off its stderr printing on each thread.
void quiet_this_thread() {
  thread_local bool done = false;
  if (!done) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    done = true;
  }
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

[[noreturn]] void fail(const char* call, const ErrorStyle& errors, const std::string& path, const std::string& object) {
  std::string message = hdf5_message();
  H5Eclear2(H5E_DEFAULT);
  std::string function(call);
  function = function.substr(0, function.find('('));
  errors.raise(fmt::format("{}: {} failed{}: {}", path, function, object.empty() ? "" : fmt::format(" for '{}'", object),
                           message));
}

}  // namespace detail


void ErrorStyle::raise(const std::string& message) const {
  std::string text = advice.empty() ? message : fmt::format("{} ({})", message, advice);
  if (data_set) throw DataError(text);
  throw CheckpointError(text);
}

// Opens attribute `name` of `object` (caller closes it), or returns -1 when the object has no such attribute.
int64_t File::open_attribute_if_present(const std::string& object, const std::string& name) const {
  std::string where = parent_of(object) + "@" + name;
  if (DGR_H5(H5Aexists_by_name(id_, parent_of(object).c_str(), name.c_str(), H5P_DEFAULT), path_, where) == 0) {
    return -1;
  }
  return DGR_H5(H5Aopen_by_name(id_, parent_of(object).c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT), path_, where);
}

File File::create(const std::string& path, ErrorStyle errors) {
  quiet_this_thread();
  Handle fapl(checked(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate", errors, path, ""), H5Pclose);
  checked(H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_V110), "H5Pset_libver_bounds", errors, path, "");
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get());
  if (id < 0) {
    std::string message = hdf5_message();
    errors.raise(fmt::format("{}: cannot create the file (H5Fcreate failed: {}): is the directory writable and is "
                             "there free space?", path, message));
  }
  File file(id, path, std::move(errors));
  file.writable_ = true;
  return file;
}

File File::open_read(const std::string& path, ErrorStyle errors) {
  quiet_this_thread();
  if (::access(path.c_str(), R_OK) != 0) {
    errors.raise(fmt::format("{}: cannot open: {} (is the path right?)", path, std::strerror(errno)));
  }
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) {
    std::string message = hdf5_message();
    errors.raise(fmt::format("{}: not a readable HDF5 file (H5Fopen failed: {}): the file is damaged or truncated{}",
                             path, message, errors.advice.empty() ? "; use an earlier copy" : ""));
  }
  return File(id, path, std::move(errors));
}

File::File(File&& other) noexcept
    : id_(other.id_), writable_(other.writable_), path_(std::move(other.path_)), errors_(std::move(other.errors_)) {
  other.id_ = -1;
}

File& File::operator=(File&& other) noexcept {
  if (this != &other) {
    abandon();
    id_ = other.id_;
    writable_ = other.writable_;
    path_ = std::move(other.path_);
    errors_ = std::move(other.errors_);
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
    errors_.raise(fmt::format("{}: H5Fflush failed: {}", path_, message));
  }
  hid_t id = id_;
  id_ = -1;
  DGR_H5(H5Fclose(id), path_, "");
}

void File::write_array(const NamedArray& array, const WriteOptions& options, const std::string& group) {
  quiet_this_thread();
  for (const std::string* part : {&array.name, &group}) {
    if (part->empty() && part == &group) continue;
    std::string problem = array_name_problem(*part);
    if (!problem.empty()) errors_.raise(fmt::format("{}: {}", path_, problem));
  }
  const std::string name = group.empty() ? array.name : group + "/" + array.name;
  for (int64_t d : array.shape) {
    DGR_H5_CHECK(d >= 0, "{}: array '{}' has a negative dimension in shape {}", path_, name,
                 shape_string(array.shape));
  }
  DGR_H5_CHECK(array.bytes.size() == array.num_bytes(),
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
  const bool filtered = !options.plain && !array.shape.empty() && array.num_elements() > 0;
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
  if (options.plain) return;
  set_string_attr("dtype", dtype_name(array.dtype), name);
  if (array.shape.empty()) {
    set_string_attr("md5", files::md5_hex(std::string(array.bytes.begin(), array.bytes.end())), name);
  }
}

void File::create_group(const std::string& name) {
  quiet_this_thread();
  std::string problem = array_name_problem(name);
  if (!problem.empty()) errors_.raise(fmt::format("{}: {}", path_, problem));
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
    std::optional<DType> named = dtype_from_name(*dtype_attr);
    DGR_H5_CHECK(named, "{}: dataset '{}' has dtype '{}' (known: {}; was the file written by a newer dgr?)", path_,
                 name, *dtype_attr, known_dtype_names());
    array.dtype = *named;
    DGR_H5_CHECK(stored && H5Tget_size(type.get()) == dtype_size(array.dtype) &&
                     (*stored == array.dtype || array.dtype == DType::kBFloat16),
                 "{}: dataset '{}' says dtype={} but its HDF5 type does not match: the file is damaged; use an "
                 "earlier copy", path_, name, *dtype_attr);
  } else {
    DGR_H5_CHECK(stored && *stored != DType::kBFloat16,
                 "{}: dataset '{}' has an HDF5 type dgr cannot read (use float32/64, int8/32/64 or uint8/64, or set "
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
    DGR_H5_CHECK(found == *md5,
                 "{}: dataset '{}' fails its md5 check (stored {}, computed {}): the file is damaged; use an "
                 "earlier copy", path_, name, *md5, found);
  }
  return array;
}

bool File::has_array(const std::string& name) const {
  quiet_this_thread();
  size_t slash = 0;
  while ((slash = name.find('/', slash + 1)) != std::string::npos) {  // each group on the way must exist first
    if (DGR_H5(H5Lexists(id_, name.substr(0, slash).c_str(), H5P_DEFAULT), path_, name) <= 0) return false;
  }
  return DGR_H5(H5Lexists(id_, name.c_str(), H5P_DEFAULT), path_, name) > 0;
}

DatasetInfo File::describe(const std::string& name) const {
  quiet_this_thread();
  Handle dataset(DGR_H5(H5Dopen2(id_, name.c_str(), H5P_DEFAULT), path_, name), H5Dclose);
  Handle type(DGR_H5(H5Dget_type(dataset.get()), path_, name), H5Tclose);
  DatasetInfo info;
  std::optional<DType> stored = infer_dtype(type.get());
  std::optional<std::string> dtype_attr = string_attr("dtype", name);
  if (dtype_attr) stored = dtype_from_name(*dtype_attr);
  DGR_H5_CHECK(stored, "{}: dataset '{}' has an element type dgr cannot read", path_, name);
  info.dtype = *stored;
  Handle space(DGR_H5(H5Dget_space(dataset.get()), path_, name), H5Sclose);
  int ndims = DGR_H5(H5Sget_simple_extent_ndims(space.get()), path_, name);
  std::vector<hsize_t> dims(static_cast<size_t>(ndims));
  if (ndims > 0) DGR_H5(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), path_, name);
  info.shape.assign(dims.begin(), dims.end());
  return info;
}

NamedArray File::read_range(const std::string& name, int64_t begin, int64_t count, DType dtype) const {
  quiet_this_thread();
  Handle dataset(DGR_H5(H5Dopen2(id_, name.c_str(), H5P_DEFAULT), path_, name), H5Dclose);
  Handle type(DGR_H5(H5Dget_type(dataset.get()), path_, name), H5Tclose);
  std::optional<DType> stored = infer_dtype(type.get());
  DGR_H5_CHECK(stored == dtype, "{}: dataset '{}' does not hold {}", path_, name, dtype_name(dtype));
  Handle file_space(DGR_H5(H5Dget_space(dataset.get()), path_, name), H5Sclose);
  hsize_t length = 0;
  DGR_H5_CHECK(DGR_H5(H5Sget_simple_extent_ndims(file_space.get()), path_, name) == 1, "{}: dataset '{}' is not 1-D",
               path_, name);
  DGR_H5(H5Sget_simple_extent_dims(file_space.get(), &length, nullptr), path_, name);
  DGR_H5_CHECK(begin >= 0 && count >= 0 && static_cast<hsize_t>(begin + count) <= length,
               "{}: dataset '{}': elements [{}, {}) are outside its {} elements", path_, name, begin, begin + count,
               length);
  NamedArray out = NamedArray::allocate(name, {count}, dtype);
  if (count == 0) return out;
  hsize_t start[1] = {static_cast<hsize_t>(begin)}, n[1] = {static_cast<hsize_t>(count)};
  DGR_H5(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start, nullptr, n, nullptr), path_, name);
  Handle memory_space(DGR_H5(H5Screate_simple(1, n, nullptr), path_, name), H5Sclose);
  DGR_H5(H5Dread(dataset.get(), memory_type(dtype), memory_space.get(), file_space.get(), H5P_DEFAULT,
                 out.bytes.data()),
         path_, name);
  return out;
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
    errors_.raise(fmt::format("{}: listing '{}' failed: {}", path_, group, state.error.empty() ? hdf5_message() : state.error));
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

void File::set_string_attr(const std::string& name, const std::string& value, const std::string& object,
                           bool fixed_length) {
  quiet_this_thread();
  std::string where = parent_of(object) + "@" + name;
  Handle type(DGR_H5(H5Tcopy(H5T_C_S1), path_, where), H5Tclose);
  if (fixed_length) {
    DGR_H5(H5Tset_size(type.get(), std::max<size_t>(1, value.size())), path_, where);
  } else {
    DGR_H5(H5Tset_size(type.get(), H5T_VARIABLE), path_, where);
    DGR_H5(H5Tset_cset(type.get(), H5T_CSET_UTF8), path_, where);
  }
  Handle space(DGR_H5(H5Screate(H5S_SCALAR), path_, where), H5Sclose);
  Handle attr(DGR_H5(H5Acreate_by_name(id_, parent_of(object).c_str(), name.c_str(), type.get(), space.get(),
                                       H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                     path_, where),
              H5Aclose);
  if (fixed_length) {
    std::string padded = value.empty() ? std::string(1, '\0') : value;
    DGR_H5(H5Awrite(attr.get(), type.get(), padded.data()), path_, where);
    return;
  }
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
  hid_t attr_id = open_attribute_if_present(object, name);
  if (attr_id < 0) return std::nullopt;
  Handle attr(attr_id, H5Aclose);
  Handle stored(DGR_H5(H5Aget_type(attr.get()), path_, where), H5Tclose);
  DGR_H5_CHECK(H5Tget_class(stored.get()) == H5T_STRING,
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
  hid_t attr_id = open_attribute_if_present(object, name);
  if (attr_id < 0) return std::nullopt;
  Handle attr(attr_id, H5Aclose);
  Handle stored(DGR_H5(H5Aget_type(attr.get()), path_, where), H5Tclose);
  DGR_H5_CHECK(H5Tget_class(stored.get()) == H5T_INTEGER,
               "{}: attribute '{}' is not an integer: the file was not written by dgr or is damaged", path_, where);
  int64_t value = 0;
  DGR_H5(H5Aread(attr.get(), H5T_NATIVE_INT64, &value), path_, where);
  return value;
}

void fsync_path(const std::string& path, const ErrorStyle& errors) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) errors.raise(fmt::format("{}: cannot open for fsync: {}", path, std::strerror(errno)));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) errors.raise(fmt::format("{}: fsync failed: {} (disk full or I/O error?)", path, std::strerror(err)));
}

}  // namespace dgr::data::h5
