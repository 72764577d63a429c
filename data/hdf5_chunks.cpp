// Direct chunk I/O for chunked + Fletcher-32 datasets (Note [Direct chunk I/O]) and HDF5's Fletcher-32.
#include <algorithm>
#include <cstring>

#include "data/hdf5_detail.h"
#include "data/hdf5_file.h"

namespace dgr::data::h5 {
using namespace detail;

namespace detail {
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
}  // namespace detail

namespace {

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
    DGR_H5_CHECK(stored == chunk_bytes + 4,
                 "{}: dataset '{}': the chunk at {} holds {} bytes, expected {}: the file is damaged; use an "
                 "earlier copy", path_, name, shape_string({offset.begin(), offset.end()}), stored, chunk_bytes + 4);
    uint32_t filter_mask = 0;
    DGR_H5(H5Dread_chunk(dataset, H5P_DEFAULT, offset.data(), &filter_mask, buffer), path_, name);
    uint32_t stored_sum = 0;
    for (int i = 0; i < 4; ++i) stored_sum |= uint32_t{buffer[chunk_bytes + i]} << (8 * i);
    uint32_t computed = fletcher32(buffer, chunk_bytes);
    DGR_H5_CHECK(filter_mask == 0 && computed == stored_sum,
                 "{}: dataset '{}': the chunk at {} fails its Fletcher-32 checksum (stored {:08x}, computed {:08x}): "
                 "the file is damaged; use an earlier copy", path_, name,
                 shape_string({offset.begin(), offset.end()}), stored_sum, computed);
    std::memcpy(array.bytes.data() + first * element_bytes, buffer, count * element_bytes);
  });
  return true;
}

}  // namespace dgr::data::h5
