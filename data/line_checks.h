// What the strict readers (readers.cpp, trec.cpp) share: the data lines of a file with PATH:LINE errors,
// id and text checks, number parsing and the id look-ups of qrels and runs. Internal to data/.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "data/line_reader.h"
#include "data/readers.h"

namespace dgr::data::line_checks {

// The data lines of a file: skips empty lines (which still count in line numbers) and rejects NUL
// bytes, invalid UTF-8 and lines of only whitespace.
class DataLines {
 public:
  explicit DataLines(const std::string& path) : reader_(path) {}
  // Next non-empty, checked line; false at end of file.
  bool next(std::string& line);
  size_t line() const { return reader_.line_number(); }
  const std::string& path() const { return reader_.path(); }
  // Throws DataError "PATH:LINE: message".
  [[noreturn]] void fail(const std::string& message) const {
    throw_data_error(reader_.path(), reader_.line_number(), message);
  }

 private:
  LineReader reader_;
};

// Checks an id: non-empty, no whitespace, no NUL. `kind` is e.g. "passage id".
void check_id(const DataLines& lines, std::string_view kind, std::string_view id);
// Checks a text field: no NUL and, when `required`, not empty or only whitespace.
void check_text(const DataLines& lines, std::string_view what, std::string_view value, bool required);
bool parse_int(std::string_view s, int* out);
// Parses a double (a leading "+" allowed); false when it is not a number. Overflow gives +-inf.
bool parse_double(std::string_view s, double* out);
std::string duplicate_note(size_t first_line);  // "also on line N"
std::string count_fields(size_t n, std::string_view kind);  // "1 field" / "3 fields"
// A score as in an error message: shortest round-trip form, with ".0" on whole numbers ("1.0", "2.5").
std::string format_score(double score);
std::string pair_key(const std::string& qid, const std::string& pid);  // "qid<TAB>pid"

// The ids that qrels and runs must refer to (either set may be absent).
class KnownIds {
 public:
  KnownIds(const Corpus* corpus, const std::vector<Query>* queries, std::string_view what);
  // Fails on `lines` when qid / pid is not among the known ones.
  void check(const DataLines& lines, const std::string& qid, const std::string& pid) const;

 private:
  const Corpus* corpus_;
  bool has_queries_ = false;
  std::unordered_set<std::string> qids_;
  std::string_view what_;
};

}  // namespace dgr::data::line_checks
