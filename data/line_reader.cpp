// LineReader over zlib's gz* API (which also reads uncompressed files as they are), plus the error
// helpers every reader shares.
#include "data/line_reader.h"

#include <sys/stat.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "common/error.h"

namespace dgr::data {

namespace {

constexpr size_t kBufferBytes = 1 << 16;
constexpr std::string_view kUtf8Bom = "\xEF\xBB\xBF";

// Copies `s`, writing control bytes (and DEL) as \xNN so the result stays on one line.
std::string escape_controls(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) {
      out += fmt::format("\\x{:02X}", u);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

void throw_data_error(const std::string& path, size_t line, const std::string& message) {
  std::string where = line > 0 ? fmt::format("{}:{}: ", path, line) : fmt::format("{}: ", path);
  throw DataError(escape_controls(where + message) + escape_controls(detail::rank_host_suffix()));
}

std::string quote(std::string_view s) {
  constexpr size_t kMax = 60;
  bool cut = false;
  if (s.size() > kMax) {
    size_t n = kMax;
    // Back up to a UTF-8 character boundary so the cut does not leave half a character.
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
    s = s.substr(0, n);
    cut = true;
  }
  return "'" + escape_controls(s) + (cut ? "...'" : "'");
}

LineReader::LineReader(std::string path) : path_(std::move(path)) {
  struct stat st {};
  if (::stat(path_.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    throw_data_error(path_, 0, "cannot open: it is a directory, expected a file (check the path)");
  }
  errno = 0;
  file_ = gzopen(path_.c_str(), "rb");
  if (file_ == nullptr) {
    const char* reason = errno != 0 ? std::strerror(errno) : "out of memory";
    throw_data_error(path_, 0, fmt::format("cannot open: {} (check the path)", reason));
  }
  gzbuffer(file_, kBufferBytes);
  buffer_.resize(kBufferBytes);
}

LineReader::~LineReader() {
  if (file_ != nullptr) gzclose(file_);
}

bool LineReader::fill() {
  if (eof_) return false;
  int n = gzread(file_, buffer_.data(), static_cast<unsigned>(buffer_.size()));
  int code = Z_OK;
  const char* message = gzerror(file_, &code);
  if (n < 0 || (code != Z_OK && code != Z_STREAM_END)) {
    std::string reason = message != nullptr && *message != '\0' ? message : "unknown error";
    throw_data_error(path_, line_number_ + 1,
                     fmt::format("cannot read or gunzip the file: {}, expected a readable file "
                                 "(the file is corrupt or truncated: re-create or re-download it)",
                                 reason));
  }
  pos_ = 0;
  end_ = static_cast<size_t>(n);
  if (n == 0) eof_ = true;
  return n > 0;
}

bool LineReader::next(std::string& line) {
  line.clear();
  bool got_any = false;
  while (true) {
    if (pos_ == end_ && !fill()) break;
    got_any = true;
    const char* begin = buffer_.data() + pos_;
    const void* newline = std::memchr(begin, '\n', end_ - pos_);
    if (newline != nullptr) {
      size_t len = static_cast<const char*>(newline) - begin;
      line.append(begin, len);
      pos_ += len + 1;
      break;
    }
    line.append(begin, end_ - pos_);
    pos_ = end_;
  }
  if (!got_any) return false;
  ++line_number_;
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line_number_ == 1 && line.compare(0, kUtf8Bom.size(), kUtf8Bom) == 0) line.erase(0, kUtf8Bom.size());
  return true;
}

}  // namespace dgr::data
