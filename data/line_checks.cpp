// The line-level checks shared by the strict readers (see line_checks.h).
#include "data/line_checks.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>

#include <fmt/format.h>

#include "common/error.h"
#include "common/text.h"

namespace dgr::data::line_checks {

bool DataLines::next(std::string& line) {
  while (reader_.next(line)) {
    if (line.empty()) continue;
    size_t nul = line.find('\0');
    if (nul != std::string::npos) {
      fail(fmt::format("found a NUL byte at byte {}, expected text (the file looks binary or corrupt: "
                       "check it is the right file)",
                       nul + 1));
    }
    size_t bad = 0;
    if (!text::is_valid_utf8(line, &bad)) {
      fail(fmt::format("not valid UTF-8 at byte {} (byte 0x{:02X}), expected UTF-8 text (re-encode the "
                       "file as UTF-8, e.g. iconv -f latin1 -t utf-8)",
                       bad + 1, static_cast<unsigned char>(line[bad])));
    }
    if (text::trim(line).empty()) {
      fail("found a line of only whitespace, expected a record or an empty line (delete the spaces or "
           "tabs on it)");
    }
    return true;
  }
  return false;
}

namespace {
bool has_whitespace(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) { return std::isspace(static_cast<unsigned char>(c)); });
}

}  // namespace

// Checks an id: non-empty, no whitespace, no NUL. `kind` is e.g. "passage id".
void check_id(const DataLines& lines, std::string_view kind, std::string_view id) {
  if (id.empty()) {
    lines.fail(fmt::format("found an empty {}, expected a non-empty id (fill in the id or remove the line)",
                           kind));
  }
  if (id.find('\0') != std::string_view::npos) {
    lines.fail(fmt::format("{} {} holds a NUL byte, expected text (fix the id)", kind, quote(id)));
  }
  if (has_whitespace(id)) {
    lines.fail(fmt::format("{} {} contains whitespace, expected a single token (ids must have no spaces "
                           "or tabs so TREC qrels and runs can name them: rename it)",
                           kind, quote(id)));
  }
}

// Checks a text field: no NUL and, when `required`, not empty or only whitespace.
void check_text(const DataLines& lines, std::string_view what, std::string_view value, bool required) {
  if (value.find('\0') != std::string_view::npos) {
    lines.fail(fmt::format("{} holds a NUL byte, expected text (remove it)", what));
  }
  if (required && text::trim(value).empty()) {
    lines.fail(fmt::format("{} is empty, expected some text (fill it in or remove the line)", what));
  }
}

bool parse_int(std::string_view s, int* out) {
  const char* end = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(s.data(), end, *out);
  return ec == std::errc() && ptr == end && !s.empty();
}

// Parses a double (a leading "+" allowed); false when it is not a number. Overflow gives +-inf.
bool parse_double(std::string_view s, double* out) {
  if (!s.empty() && s.front() == '+') {
    s.remove_prefix(1);
    if (!s.empty() && s.front() == '-') return false;
  }
  const char* end = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(s.data(), end, *out);
  if (s.empty() || ptr != end) return false;
  if (ec == std::errc::result_out_of_range) {
    *out = std::strtod(std::string(s).c_str(), nullptr);  // +-HUGE_VAL on overflow, ~0 on underflow
    return true;
  }
  return ec == std::errc();
}

std::string duplicate_note(size_t first_line) { return fmt::format("also on line {}", first_line); }

// "1 field" / "3 fields".
std::string count_fields(size_t n, std::string_view kind) {
  return fmt::format("{} {} field{}", n, kind, n == 1 ? "" : "s");
}

// A score as in an error message: shortest round-trip form, with ".0" on whole numbers ("1.0", "2.5").
std::string format_score(double score) {
  std::string s = fmt::format("{}", score);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

std::string pair_key(const std::string& qid, const std::string& pid) { return qid + '\t' + pid; }

KnownIds::KnownIds(const Corpus* corpus, const std::vector<Query>* queries, std::string_view what)
    : corpus_(corpus), what_(what) {
  if (queries != nullptr) {
    has_queries_ = true;
    for (const auto& q : *queries) qids_.insert(q.qid);
  }
}

void KnownIds::check(const DataLines& lines, const std::string& qid, const std::string& pid) const {
  if (has_queries_ && qids_.count(qid) == 0) {
    lines.fail(fmt::format("query id {} is not in the queries (are the {} from another query set?)",
                           quote(qid), what_));
  }
  if (corpus_ != nullptr && !corpus_->contains(pid)) {
    lines.fail(fmt::format("passage id {} is not in the corpus (are the {} from another corpus?)",
                           quote(pid), what_));
  }
}

}  // namespace dgr::data::line_checks
