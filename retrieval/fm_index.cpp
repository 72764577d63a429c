// The FM-index of fm_index.h on sdsl-lite: a compressed suffix array with a wavelet tree over the BWT
// (integer alphabet) of the reversed corpus text, plus the passage token arrays and the passage start
// positions needed to turn suffix-array entries into (passage, offset).
//
// Note [Reversed text]
// ~~~~~~~~~~~~~~~~~~~~
// T = B d_0 B d_1 B ... d_{n-1} B has N = n + 1 + sum |d_i| tokens (N = total_tokens()). Passage i starts
// at T position start_i = i + 1 + sum_{k<i} |d_k|; its boundary is at start_i - 1, and the last B is at N-1.
// The CSA is built over R = reverse(T) with every token stored as token + 1 (sdsl's integer alphabet keeps
// 0 for the sentinel it appends: R' = R 0, N + 1 symbols, so the suffix array has N + 1 rows and row 0 is
// the sentinel's suffix). R[j] = T[N-1-j].
//   * A string P = p_0..p_{m-1} occurs at T position s  <=>  reverse(P) occurs at R position j = N - s - m.
//     Backward search of reverse(P) consumes reverse(P) from its LAST symbol to its first, i.e. P from p_0
//     to p_{m-1}: each extend() is one backward-search (LF) step, and the interval after k steps is the
//     interval of p_0..p_{k-1}. The empty string's interval is every row, [0, N + 1).
//   * The rows of P's interval are the suffixes of R' that start with reverse(P); the BWT symbol of such a
//     row is the symbol just before reverse(P) in R, i.e. the token just AFTER P in T. So the distinct BWT
//     symbols of the interval (wavelet-tree interval_symbols) are the tokens that follow P, and their ranks
//     at both ends of the interval give the new intervals directly: C[c] + rank_c(lo), C[c] + rank_c(hi).
//     A sentinel (0) there means P is a prefix of T; it is not a token and is skipped.
//   * locate: SA[row] = j, the R position where reverse(P) starts, which is the T position of P's LAST
//     token (N - 1 - j); the start is s = N - m - j. That needs m, so a Range carries the length of its
//     string (Range::length). s maps to a passage by binary search over the boundary positions
//     start_i - 1: doc = the last i with start_i - 1 <= s, offset = s - start_i (-1 at the boundary). An
//     occurrence that starts at the final B (only possible for P = "B") reports doc n-1, offset |d_{n-1}|.
//
// File format (little-endian; see save()): a 64-byte header [magic "dgr-fmindex\0", version, passages,
// total tokens, boundary, CSA bytes, passage tokens, FNV-1a-64 of the payload], then the payload: the
// sdsl serialization of the CSA, the n + 1 passage offsets (uint64) and the passage tokens (int32).
#include "retrieval/fm_index.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <istream>
#include <sstream>

#include <sdsl/suffix_arrays.hpp>

#include "common/error.h"
#include "common/files.h"

namespace dgr::retrieval {
namespace {

using Csa = sdsl::csa_wt<sdsl::wt_int<>, 16, 256, sdsl::text_order_sa_sampling<>, sdsl::isa_sampling<>,
                         sdsl::int_alphabet<>>;

constexpr char kMagic[12] = {'d', 'g', 'r', '-', 'f', 'm', 'i', 'n', 'd', 'e', 'x', '\0'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 64;
constexpr int32_t kMaxToken = 2147483646;  // token + 1 must fit in int32

struct Header {
  char magic[12];
  uint32_t version;
  uint64_t num_passages;
  uint64_t total_tokens;
  int32_t boundary;
  uint32_t reserved;
  uint64_t csa_bytes;
  uint64_t passage_tokens;
  uint64_t checksum;
};
static_assert(sizeof(Header) == kHeaderBytes, "FM-index header layout");

uint64_t fnv1a(const char* data, size_t size) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < size; ++i) {
    h ^= static_cast<unsigned char>(data[i]);
    h *= 1099511628211ull;
  }
  return h;
}

// An istream over bytes already in memory (the CSA part of a loaded file), without a copy.
struct MemoryBuf : std::streambuf {
  MemoryBuf(char* begin, char* end) { setg(begin, begin, end); }
  size_t consumed() const { return static_cast<size_t>(gptr() - eback()); }
};

// sdsl's in-memory construction uses a process-wide RAM file system with non-atomic temporary names.
std::mutex& construction_mutex() {
  static std::mutex m;
  return m;
}

}  // namespace

struct FMIndex::Impl {
  Csa csa;
  int32_t boundary = 0;
  uint64_t total_tokens = 0;             // N
  uint64_t max_symbol = 0;               // largest token + 1 in the text
  std::vector<uint64_t> offsets;         // n + 1 offsets into tokens
  std::vector<int32_t> tokens;           // the passages, concatenated
  std::vector<uint64_t> boundary_pos;    // T position of the boundary before passage i (start_i - 1)

  void index_positions() {
    size_t n = offsets.size() - 1;
    boundary_pos.resize(n);
    for (size_t i = 0; i < n; ++i) boundary_pos[i] = i + offsets[i];
    total_tokens = n + 1 + tokens.size();
  }
  Occurrence occurrence_at(uint64_t s) const {
    auto it = std::upper_bound(boundary_pos.begin(), boundary_pos.end(), s);
    auto doc = static_cast<size_t>(it - boundary_pos.begin()) - 1;
    int64_t offset = static_cast<int64_t>(s) - static_cast<int64_t>(boundary_pos[doc]) - 1;
    return {static_cast<int32_t>(doc), static_cast<int32_t>(offset)};
  }
};

FMIndex::FMIndex() : impl_(std::make_unique<Impl>()) {}
FMIndex::FMIndex(FMIndex&&) noexcept = default;
FMIndex& FMIndex::operator=(FMIndex&&) noexcept = default;
FMIndex::~FMIndex() = default;

FMIndex FMIndex::build(const std::vector<std::vector<int32_t>>& passages, int32_t boundary) {
  DGR_CHECK_AS(DataError, boundary >= 0 && boundary <= kMaxToken, "FM-index boundary token {} out of range [0, {}]",
               boundary, kMaxToken);
  DGR_CHECK_AS(DataError, !passages.empty(), "cannot build an FM-index over no passages");
  DGR_CHECK_AS(DataError, passages.size() < (1ull << 31) - 1, "too many passages for the FM-index ({})",
               passages.size());
  FMIndex index;
  Impl& im = *index.impl_;
  im.boundary = boundary;
  im.offsets.reserve(passages.size() + 1);
  im.offsets.push_back(0);
  size_t total = 0;
  for (const auto& p : passages) total += p.size();
  DGR_CHECK_AS(DataError, total < (1ull << 31) - 1 - passages.size(),
               "corpus too large for the FM-index: {} tokens in {} passages (offsets are int32)", total,
               passages.size());
  im.tokens.reserve(total);
  for (size_t d = 0; d < passages.size(); ++d) {
    for (size_t k = 0; k < passages[d].size(); ++k) {
      int32_t t = passages[d][k];
      DGR_CHECK_AS(DataError, t >= 0 && t <= kMaxToken, "passage {} token {} is {}: token ids must be in [0, {}]",
                   d, k, t, kMaxToken);
      DGR_CHECK_AS(DataError, t != boundary,
                   "passage {} contains the document boundary token {} at offset {}: a passage must not contain "
                   "it (the tokenizer never produces it from text)", d, boundary, k);
    }
    im.tokens.insert(im.tokens.end(), passages[d].begin(), passages[d].end());
    im.offsets.push_back(im.tokens.size());
  }
  im.index_positions();

  // R = reverse(B d_0 B ... d_{n-1} B), every symbol + 1 (Note [Reversed text]).
  const uint64_t n_text = im.total_tokens;
  sdsl::int_vector<> text(n_text, 0, 32);
  uint64_t pos = 0;  // T position
  auto put = [&](int32_t token) {
    uint64_t symbol = static_cast<uint64_t>(token) + 1;
    text[n_text - 1 - pos] = symbol;
    im.max_symbol = std::max(im.max_symbol, symbol);
    ++pos;
  };
  for (size_t d = 0; d < passages.size(); ++d) {
    put(boundary);
    for (int32_t t : passages[d]) put(t);
  }
  put(boundary);
  DGR_CHECK(pos == n_text, "FM-index text length {} != {}", pos, n_text);
  sdsl::util::bit_compress(text);
  {
    std::lock_guard<std::mutex> lock(construction_mutex());
    sdsl::construct_im(im.csa, text, 0);
  }
  DGR_CHECK(im.csa.size() == n_text + 1, "sdsl CSA has {} rows, expected {}", im.csa.size(), n_text + 1);
  return index;
}

void FMIndex::save(const std::string& path) const {
  const Impl& im = *impl_;
  std::ostringstream csa_out(std::ios::binary);
  im.csa.serialize(csa_out);
  std::string payload = csa_out.str();
  Header h{};
  std::memcpy(h.magic, kMagic, sizeof(kMagic));
  h.version = kVersion;
  h.num_passages = im.offsets.size() - 1;
  h.total_tokens = im.total_tokens;
  h.boundary = im.boundary;
  h.csa_bytes = payload.size();
  h.passage_tokens = im.tokens.size();
  payload.append(reinterpret_cast<const char*>(im.offsets.data()), im.offsets.size() * sizeof(uint64_t));
  payload.append(reinterpret_cast<const char*>(im.tokens.data()), im.tokens.size() * sizeof(int32_t));
  h.checksum = fnv1a(payload.data(), payload.size());
  files::AtomicFile out(path);
  out.write(std::string(reinterpret_cast<const char*>(&h), sizeof(h)));
  out.write(payload);
  out.commit();
}

FMIndex FMIndex::load(const std::string& path) {
  std::string bytes = files::read_all(path);
  const std::string rebuild = "rebuild it with `dgr index`";
  DGR_CHECK_AS(DataError, bytes.size() >= kHeaderBytes && std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) == 0,
               "{}: not a dgr FM-index (no 'dgr-fmindex' header; {} bytes): {}", path, bytes.size(), rebuild);
  Header h;
  std::memcpy(&h, bytes.data(), sizeof(h));
  DGR_CHECK_AS(DataError, h.version == kVersion, "{}: dgr FM-index version {}, this dgr reads version {}: {}", path,
               h.version, kVersion, rebuild);
  // Sizes first (guarding against overflow from a damaged header), then the checksum, then the parse.
  const uint64_t max_size = bytes.size();
  DGR_CHECK_AS(DataError,
               h.csa_bytes <= max_size && h.num_passages >= 1 && h.num_passages < max_size / 8 && h.passage_tokens <= max_size / 4 &&
                   kHeaderBytes + h.csa_bytes + (h.num_passages + 1) * 8 + h.passage_tokens * 4 == bytes.size(),
               "{}: truncated or damaged dgr FM-index ({} bytes, the header announces {} passages, {} tokens, a {}-byte "
               "CSA): {}", path, bytes.size(), h.num_passages, h.passage_tokens, h.csa_bytes, rebuild);
  DGR_CHECK_AS(DataError, fnv1a(bytes.data() + kHeaderBytes, bytes.size() - kHeaderBytes) == h.checksum,
               "{}: damaged dgr FM-index (checksum mismatch): {}", path, rebuild);

  FMIndex index;
  Impl& im = *index.impl_;
  im.boundary = h.boundary;
  char* base = bytes.data() + kHeaderBytes;
  {
    MemoryBuf buf(base, base + h.csa_bytes);
    std::istream in(&buf);
    im.csa.load(in);
    DGR_CHECK_AS(DataError, in.good() && buf.consumed() == h.csa_bytes, "{}: damaged CSA in the dgr FM-index: {}",
                 path, rebuild);
  }
  im.offsets.resize(h.num_passages + 1);
  std::memcpy(im.offsets.data(), base + h.csa_bytes, im.offsets.size() * 8);
  im.tokens.resize(h.passage_tokens);
  std::memcpy(im.tokens.data(), base + h.csa_bytes + im.offsets.size() * 8, im.tokens.size() * 4);
  bool monotone = im.offsets.front() == 0 && im.offsets.back() == im.tokens.size();
  for (size_t i = 1; monotone && i < im.offsets.size(); ++i) monotone = im.offsets[i - 1] <= im.offsets[i];
  DGR_CHECK_AS(DataError, monotone, "{}: inconsistent passage offsets in the dgr FM-index: {}", path, rebuild);
  im.index_positions();
  DGR_CHECK_AS(DataError, im.total_tokens == h.total_tokens && im.csa.size() == im.total_tokens + 1,
               "{}: inconsistent dgr FM-index ({} tokens in the header, {} from the passages, {} CSA rows): {}", path,
               h.total_tokens, im.total_tokens, im.csa.size(), rebuild);
  for (int32_t t : im.tokens) im.max_symbol = std::max(im.max_symbol, static_cast<uint64_t>(t) + 1);
  im.max_symbol = std::max(im.max_symbol, static_cast<uint64_t>(im.boundary) + 1);
  return index;
}

FMIndex::Range FMIndex::full() const { return Range{0, impl_->csa.size(), 0}; }

FMIndex::Range FMIndex::extend(Range range, int32_t token) const {
  const Impl& im = *impl_;
  if (range.empty() || token < 0 || static_cast<uint64_t>(token) + 1 > im.max_symbol) {
    return Range{0, 0, range.length + 1};
  }
  uint64_t c = static_cast<uint64_t>(token) + 1;
  auto cc = im.csa.char2comp[c];
  if (cc == 0) return Range{0, 0, range.length + 1};
  uint64_t begin = im.csa.C[cc];
  return Range{begin + im.csa.wavelet_tree.rank(range.lo, c), begin + im.csa.wavelet_tree.rank(range.hi, c),
               range.length + 1};
}

FMIndex::Range FMIndex::find(std::span<const int32_t> tokens) const {
  Range range = full();
  for (int32_t t : tokens) {
    range = extend(range, t);
    if (range.empty()) return Range{0, 0, static_cast<uint32_t>(tokens.size())};
  }
  return range;
}

std::vector<FMIndex::Extension> FMIndex::extensions(Range range) const {
  const Impl& im = *impl_;
  std::vector<Extension> out;
  if (range.empty()) return out;
  // Reused per thread: interval_symbols needs vectors of at least sigma entries.
  thread_local std::vector<uint64_t> symbols, rank_lo, rank_hi;
  const auto& wt = im.csa.wavelet_tree;
  if (symbols.size() < wt.sigma) {
    symbols.resize(wt.sigma);
    rank_lo.resize(wt.sigma);
    rank_hi.resize(wt.sigma);
  }
  uint64_t k = 0;
  wt.interval_symbols(range.lo, range.hi, k, symbols, rank_lo, rank_hi);
  out.reserve(k);
  for (uint64_t i = 0; i < k; ++i) {
    uint64_t c = symbols[i];
    if (c == 0) continue;  // the sentinel: the string is a prefix of the text
    uint64_t begin = im.csa.C[im.csa.char2comp[c]];
    out.push_back({static_cast<int32_t>(c - 1), Range{begin + rank_lo[i], begin + rank_hi[i], range.length + 1}});
  }
  // wt_int reports symbols in increasing order (left-to-right traversal); keep the promise regardless.
  if (!std::is_sorted(out.begin(), out.end(), [](const Extension& a, const Extension& b) { return a.token < b.token; })) {
    std::sort(out.begin(), out.end(), [](const Extension& a, const Extension& b) { return a.token < b.token; });
  }
  return out;
}

std::vector<FMIndex::Occurrence> FMIndex::locate(Range range, size_t limit) const {
  const Impl& im = *impl_;
  std::vector<Occurrence> out;
  if (range.empty()) return out;
  const uint64_t n = im.total_tokens;
  const uint64_t m = range.length;
  uint64_t hi = std::min<uint64_t>(range.hi, im.csa.size());
  out.reserve(std::min<uint64_t>(hi - range.lo, limit));
  for (uint64_t row = range.lo; row < hi && out.size() < limit; ++row) {
    uint64_t j = im.csa[row];
    // The empty string "occurs" at s = N - j for every row; s = N (j = 0) is past the last token: skipped.
    if (j + m > n || (m == 0 && j == 0)) continue;
    out.push_back(im.occurrence_at(n - m - j));  // Note [Reversed text]
  }
  return out;
}

std::vector<int32_t> FMIndex::passages_containing(std::span<const int32_t> tokens, size_t limit) const {
  std::vector<int32_t> docs;
  for (const auto& o : locate(find(tokens), limit)) docs.push_back(o.doc);
  std::sort(docs.begin(), docs.end());
  docs.erase(std::unique(docs.begin(), docs.end()), docs.end());
  return docs;
}

size_t FMIndex::num_passages() const { return impl_->offsets.size() - 1; }
uint64_t FMIndex::total_tokens() const { return impl_->total_tokens; }
int32_t FMIndex::boundary() const { return impl_->boundary; }

std::span<const int32_t> FMIndex::passage(int32_t doc) const {
  const Impl& im = *impl_;
  DGR_CHECK(doc >= 0 && static_cast<size_t>(doc) < num_passages(), "passage {} out of range [0, {})", doc,
            num_passages());
  return std::span<const int32_t>(im.tokens.data() + im.offsets[doc], im.offsets[doc + 1] - im.offsets[doc]);
}

}  // namespace dgr::retrieval
