// LineReader: reads a text file (plain or gzip-compressed, detected from its bytes) line by line and
// tracks the 1-based line number, so every reader can report PATH:LINE in its errors.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

struct gzFile_s;  // zlib's file handle (gzFile), kept out of this header

namespace dgr::data {

class LineReader {
 public:
  // Opens `path` (a .gz file is gunzipped transparently); throws DataError
  // "PATH: cannot open: <reason> (check the path)" when it cannot.
  explicit LineReader(std::string path);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // Reads the next line into `line` without its "\n" or "\r\n" (and without a UTF-8 BOM at the start of
  // the file); returns false at end of file. Throws DataError when the file cannot be read or gunzipped.
  bool next(std::string& line);

  // 1-based number of the line last returned by next() (0 before the first one).
  size_t line_number() const { return line_number_; }
  const std::string& path() const { return path_; }

 private:
  bool fill();  // refills buffer_; false at end of file

  std::string path_;
  gzFile_s* file_ = nullptr;
  std::vector<char> buffer_;
  size_t pos_ = 0;
  size_t end_ = 0;
  bool eof_ = false;
  size_t line_number_ = 0;
};

// Throws DataError "PATH:LINE: MESSAGE" (or "PATH: MESSAGE" when `line` is 0); control characters in the
// message are escaped so what() is always one line. The rank/host suffix is added in multi-rank jobs.
[[noreturn]] void throw_data_error(const std::string& path, size_t line, const std::string& message);

// `s` quoted for an error message: '...' with control bytes escaped as \xNN, cut to about 60 bytes.
std::string quote(std::string_view s);

}  // namespace dgr::data
