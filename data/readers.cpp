// Readers for corpus, queries, qrels and TREC runs. Each reads line by line through LineReader, checks
// every line and throws DataError with "PATH:LINE: found ..., expected ... (what to do)" on the first
// problem, so a bad input stops the job before any work is done on it.
#include "data/readers.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <string_view>
#include <unordered_set>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/text.h"
#include "data/line_reader.h"

namespace dgr::data {

namespace {

using nlohmann::json;

// The data lines of a file: skips empty lines (which still count in line numbers) and rejects NUL
// bytes, invalid UTF-8 and lines of only whitespace.
class DataLines {
 public:
  explicit DataLines(const std::string& path) : reader_(path) {}

  // Next non-empty, checked line; false at end of file.
  bool next(std::string& line) {
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

  size_t line() const { return reader_.line_number(); }
  const std::string& path() const { return reader_.path(); }
  [[noreturn]] void fail(const std::string& message) const {
    throw_data_error(reader_.path(), reader_.line_number(), message);
  }

 private:
  LineReader reader_;
};

bool has_whitespace(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) { return std::isspace(static_cast<unsigned char>(c)); });
}

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

// ------------------------------------------------------------------------------------------- corpus

enum class CorpusFormat { kTsv, kJsonl };

CorpusFormat corpus_format(const std::string& path) {
  std::string name = text::to_lower(path);
  auto ends_with = [](const std::string& s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends_with(name, ".gz")) name.resize(name.size() - 3);
  if (ends_with(name, ".tsv")) return CorpusFormat::kTsv;
  if (ends_with(name, ".jsonl")) return CorpusFormat::kJsonl;
  throw_data_error(path, 0,
                   "found an unknown corpus extension, expected .tsv, .jsonl, .tsv.gz or .jsonl.gz (rename "
                   "the file to say its format)");
}

// Splits the pseudo-query field "pq1 ||| pq2 ..." (an empty field means none).
std::vector<std::string> split_pseudo_queries(const DataLines& lines, std::string_view field,
                                              std::string_view pid) {
  std::vector<std::string> out;
  if (text::trim(field).empty()) return out;
  constexpr std::string_view kSep = "|||";
  size_t start = 0;
  while (true) {
    size_t pos = field.find(kSep, start);
    std::string_view item = text::trim(field.substr(start, pos == std::string_view::npos ? pos : pos - start));
    if (item.empty()) {
      lines.fail(fmt::format("pseudo-query {} of passage {} is empty, expected text between the ' ||| ' "
                             "separators (remove the extra separator)",
                             out.size() + 1, quote(pid)));
    }
    out.emplace_back(item);
    if (pos == std::string_view::npos) break;
    start = pos + kSep.size();
  }
  return out;
}

// Parses a TSV corpus line; false for the header line.
bool parse_tsv_passage(const DataLines& lines, const std::string& line, bool first, Passage& p) {
  auto fields = text::split(line, '\t');
  if (first && fields[0] == "pid") return false;
  if (fields.size() != 3 && fields.size() != 4) {
    lines.fail(fmt::format("found {}, expected 3 or 4 "
                           "(pid<TAB>title<TAB>text[<TAB>pq1 ||| pq2 ...]) (remove tabs inside the fields)",
                           count_fields(fields.size(), "tab-separated")));
  }
  check_id(lines, "passage id", fields[0]);
  p.pid = std::string(fields[0]);
  p.title = std::string(fields[1]);
  check_text(lines, fmt::format("text of passage {}", quote(p.pid)), fields[2], true);
  p.text = std::string(fields[2]);
  if (fields.size() == 4) p.pseudo_queries = split_pseudo_queries(lines, fields[3], p.pid);
  return true;
}

// The string value of `obj[key]`; fails when it is not a string.
std::string json_string(const DataLines& lines, const json& obj, const std::string& key) {
  const json& value = obj.at(key);
  if (!value.is_string()) {
    lines.fail(fmt::format("\"{}\" is a JSON {}, expected a string (write it in quotes)", key,
                           value.type_name()));
  }
  return value.get<std::string>();
}

void parse_json_passage(const DataLines& lines, const std::string& line, Passage& p) {
  json obj;
  try {
    obj = json::parse(line);
  } catch (const json::exception& e) {
    // nlohmann's message is "[json.exception.parse_error.101] parse error at line 1, column 7: ...".
    std::string detail = e.what();
    size_t column = detail.find("column ");
    size_t colon = column == std::string::npos ? std::string::npos : detail.find(": ", column);
    if (colon != std::string::npos) {
      detail = detail.substr(column, colon - column) + ": " + detail.substr(colon + 2);
    } else if (size_t bracket = detail.find("] "); bracket != std::string::npos) {
      detail = detail.substr(bracket + 2);
    }
    lines.fail(fmt::format("found malformed JSON ({}), expected one JSON object per line (fix the line; "
                           "every record must be on a single line)",
                           detail));
  }
  if (!obj.is_object()) {
    lines.fail(fmt::format("found a JSON {}, expected an object {{\"pid\": ..., \"title\": ..., \"text\": "
                           "...}} (write one object per line)",
                           obj.type_name()));
  }
  bool has_pid = obj.contains("pid");
  bool has_id = obj.contains("id");
  if (has_pid && has_id) {
    lines.fail("found both \"pid\" and \"id\", expected one of them (drop one key)");
  }
  if (!has_pid && !has_id) {
    lines.fail("found no \"pid\" key, expected the passage id as \"pid\" (or \"id\") (add the id)");
  }
  p.pid = json_string(lines, obj, has_pid ? "pid" : "id");
  check_id(lines, "passage id", p.pid);
  if (!obj.contains("text")) {
    std::string hint;
    for (const char* other : {"contents", "content", "body", "passage"}) {
      if (obj.contains(other)) hint = fmt::format("; found \"{}\": rename it to \"text\"", other);
    }
    lines.fail(fmt::format("found no \"text\" key in passage {}, expected the passage text as \"text\" "
                           "(add it{})",
                           quote(p.pid), hint));
  }
  p.text = json_string(lines, obj, "text");
  check_text(lines, fmt::format("text of passage {}", quote(p.pid)), p.text, true);
  if (obj.contains("title")) {
    p.title = json_string(lines, obj, "title");
    check_text(lines, fmt::format("title of passage {}", quote(p.pid)), p.title, false);
  }
  if (obj.contains("pseudo_queries")) {
    const json& pqs = obj.at("pseudo_queries");
    if (!pqs.is_array()) {
      lines.fail(fmt::format("\"pseudo_queries\" is a JSON {}, expected an array of strings (write "
                             "[\"q1\", \"q2\"])",
                             pqs.type_name()));
    }
    for (size_t i = 0; i < pqs.size(); ++i) {
      if (!pqs[i].is_string()) {
        lines.fail(fmt::format("pseudo-query {} of passage {} is a JSON {}, expected a string (write it "
                               "in quotes)",
                               i + 1, quote(p.pid), pqs[i].type_name()));
      }
      std::string pq = pqs[i].get<std::string>();
      check_text(lines, fmt::format("pseudo-query {} of passage {}", i + 1, quote(p.pid)), pq, true);
      p.pseudo_queries.push_back(std::move(pq));
    }
  }
}

// ----------------------------------------------------------------------------------- id look-ups

// The ids that qrels and runs must refer to (either set may be absent).
class KnownIds {
 public:
  KnownIds(const Corpus* corpus, const std::vector<Query>* queries, std::string_view what)
      : corpus_(corpus), what_(what) {
    if (queries != nullptr) {
      has_queries_ = true;
      for (const auto& q : *queries) qids_.insert(q.qid);
    }
  }

  void check(const DataLines& lines, const std::string& qid, const std::string& pid) const {
    if (has_queries_ && qids_.count(qid) == 0) {
      lines.fail(fmt::format("query id {} is not in the queries (are the {} from another query set?)",
                             quote(qid), what_));
    }
    if (corpus_ != nullptr && !corpus_->contains(pid)) {
      lines.fail(fmt::format("passage id {} is not in the corpus (are the {} from another corpus?)",
                             quote(pid), what_));
    }
  }

 private:
  const Corpus* corpus_;
  bool has_queries_ = false;
  std::unordered_set<std::string> qids_;
  std::string_view what_;
};

std::string pair_key(const std::string& qid, const std::string& pid) { return qid + '\t' + pid; }

}  // namespace

// --------------------------------------------------------------------------------------- public API

bool Corpus::contains(const std::string& pid) const { return index_of.count(pid) != 0; }

Corpus read_corpus(const std::string& path) {
  CorpusFormat format = corpus_format(path);
  DataLines lines(path);
  Corpus corpus;
  std::vector<size_t> line_of;  // [passage] line number, for duplicate reports
  std::string line;
  bool first = true;
  while (lines.next(line)) {
    Passage p;
    if (format == CorpusFormat::kTsv) {
      bool is_data = parse_tsv_passage(lines, line, first, p);
      first = false;
      if (!is_data) continue;
    } else {
      parse_json_passage(lines, line, p);
    }
    auto [it, inserted] = corpus.index_of.emplace(p.pid, corpus.passages.size());
    if (!inserted) {
      lines.fail(fmt::format("passage id {} is a duplicate, {}, expected unique passage ids (remove or "
                             "rename one of them)",
                             quote(p.pid), duplicate_note(line_of[it->second])));
    }
    line_of.push_back(lines.line());
    corpus.passages.push_back(std::move(p));
  }
  if (corpus.passages.empty()) {
    throw_data_error(path, 0,
                     "found no passages, expected at least one (check the file is the corpus and is not "
                     "empty or truncated)");
  }
  return corpus;
}

std::vector<Query> read_queries(const std::string& path) {
  DataLines lines(path);
  std::vector<Query> queries;
  std::unordered_map<std::string, size_t> line_of;  // qid -> line
  std::string line;
  bool first = true;
  while (lines.next(line)) {
    auto fields = text::split(line, '\t');
    bool header = first && fields[0] == "qid";
    first = false;
    if (header) continue;
    if (fields.size() != 2) {
      lines.fail(fmt::format("found {}, expected 2 (qid<TAB>text) (remove tabs inside "
                             "the query text)",
                             count_fields(fields.size(), "tab-separated")));
    }
    check_id(lines, "query id", fields[0]);
    Query q{std::string(fields[0]), std::string(fields[1])};
    check_text(lines, fmt::format("text of query {}", quote(q.qid)), q.text, true);
    auto [it, inserted] = line_of.emplace(q.qid, lines.line());
    if (!inserted) {
      lines.fail(fmt::format("query id {} is a duplicate, {}, expected unique query ids (remove or rename "
                             "one of them)",
                             quote(q.qid), duplicate_note(it->second)));
    }
    queries.push_back(std::move(q));
  }
  if (queries.empty()) {
    throw_data_error(path, 0,
                     "found no queries, expected at least one qid<TAB>text line (check the file is not empty "
                     "or truncated)");
  }
  return queries;
}

std::vector<Qrel> read_qrels(const std::string& path, const Corpus* corpus,
                             const std::vector<Query>* queries) {
  enum class Format { kUnknown, kTrec, kTsv };
  DataLines lines(path);
  KnownIds known(corpus, queries, "qrels");
  std::vector<Qrel> qrels;
  std::unordered_map<std::string, size_t> line_of;  // "qid\tpid" -> line
  Format format = Format::kUnknown;
  size_t format_line = 0;
  std::string line;
  bool first = true;
  while (lines.next(line)) {
    auto words = text::split_ws(line);
    bool header = first && !words.empty() && words[0] == "qid";
    first = false;
    if (header) continue;
    auto tabs = text::split(line, '\t');
    int number = 0;
    if (format == Format::kUnknown) {
      if (words.size() == 4 && parse_int(words[1], &number)) {
        format = Format::kTrec;
      } else if (tabs.size() == 2 || tabs.size() == 3) {
        format = Format::kTsv;
      } else {
        lines.fail(fmt::format("found {} ({} tab-separated), expected TREC "
                               "qrels 'qid 0 pid grade' or TSV 'qid<TAB>pid[<TAB>grade]' (convert the file "
                               "to one of them)",
                               count_fields(words.size(), "whitespace-separated"), tabs.size()));
      }
      format_line = lines.line();
    }
    Qrel qrel;
    std::string_view grade;
    bool has_grade = true;
    if (format == Format::kTrec) {
      if (words.size() != 4) {
        lines.fail(fmt::format("found {}, expected 4 as in TREC qrels 'qid 0 "
                               "pid grade' (the format of line {}) (fix the line)",
                               count_fields(words.size(), "whitespace-separated"), format_line));
      }
      if (!parse_int(words[1], &number)) {
        lines.fail(fmt::format("second field {} is not an integer, expected the iteration number (usually "
                               "0) of TREC qrels 'qid 0 pid grade' (write 0)",
                               quote(words[1])));
      }
      qrel.qid = std::string(words[0]);
      qrel.pid = std::string(words[2]);
      grade = words[3];
    } else {
      if (tabs.size() != 2 && tabs.size() != 3) {
        lines.fail(fmt::format("found {}, expected 2 or 3 as in TSV qrels "
                               "'qid<TAB>pid[<TAB>grade]' (the format of line {}) (fix the line)",
                               count_fields(tabs.size(), "tab-separated"), format_line));
      }
      check_id(lines, "query id", tabs[0]);
      check_id(lines, "passage id", tabs[1]);
      qrel.qid = std::string(tabs[0]);
      qrel.pid = std::string(tabs[1]);
      has_grade = tabs.size() == 3;
      if (has_grade) grade = tabs[2];
    }
    if (has_grade && !parse_int(grade, &qrel.grade)) {
      lines.fail(fmt::format("grade {} is not an integer, expected an integer relevance grade such as 0, 1 "
                             "or 2 (fix the grade)",
                             quote(grade)));
    }
    known.check(lines, qrel.qid, qrel.pid);
    auto [it, inserted] = line_of.emplace(pair_key(qrel.qid, qrel.pid), lines.line());
    if (!inserted) {
      lines.fail(fmt::format("judgement of passage {} for query {} is a duplicate, {}, expected one grade "
                             "per (qid, pid) pair (remove one of them)",
                             quote(qrel.pid), quote(qrel.qid), duplicate_note(it->second)));
    }
    qrels.push_back(std::move(qrel));
  }
  if (qrels.empty()) {
    throw_data_error(path, 0,
                     "found no qrels, expected lines 'qid 0 pid grade' or 'qid<TAB>pid[<TAB>grade]' (check "
                     "the file is not empty or truncated)");
  }
  return qrels;
}

std::vector<RunEntry> read_trec_run(const std::string& path, const Corpus* corpus,
                                    const std::vector<Query>* queries) {
  // The entries of one query, for the per-query checks.
  struct QueryEntries {
    std::vector<size_t> entries;                         // indices into `run`
    std::unordered_map<int, size_t> line_of_rank;        // rank -> line
    std::unordered_map<std::string, size_t> line_of_pid;  // pid -> line
  };
  DataLines lines(path);
  KnownIds known(corpus, queries, "run");
  std::vector<RunEntry> run;
  std::vector<size_t> line_of;  // [entry] line
  std::vector<QueryEntries> groups;
  std::unordered_map<std::string, size_t> group_of;  // qid -> index in groups
  std::string line;
  while (lines.next(line)) {
    auto words = text::split_ws(line);
    if (words.size() != 6) {
      lines.fail(fmt::format("found {}, expected 6 as in a TREC run 'qid Q0 "
                             "pid rank score tag' (fix the line)",
                             count_fields(words.size(), "whitespace-separated")));
    }
    RunEntry e;
    e.qid = std::string(words[0]);
    e.pid = std::string(words[2]);
    e.tag = std::string(words[5]);
    if (!parse_int(words[3], &e.rank) || e.rank <= 0) {
      lines.fail(fmt::format("rank {} is not a positive integer, expected 1, 2, ... in the 4th field (fix "
                             "the rank)",
                             quote(words[3])));
    }
    if (!parse_double(words[4], &e.score)) {
      lines.fail(fmt::format("score {} is not a number, expected a finite number in the 5th field (fix the "
                             "score)",
                             quote(words[4])));
    }
    if (!std::isfinite(e.score)) {
      lines.fail(fmt::format("score {} is not finite, expected a finite number (fix the scorer that wrote "
                             "the run)",
                             quote(words[4])));
    }
    known.check(lines, e.qid, e.pid);
    auto [g, new_group] = group_of.emplace(e.qid, groups.size());
    if (new_group) groups.emplace_back();
    QueryEntries& group = groups[g->second];
    auto [r, new_rank] = group.line_of_rank.emplace(e.rank, lines.line());
    if (!new_rank) {
      lines.fail(fmt::format("rank {} of query {} is a duplicate, {}, expected unique ranks per query "
                             "(re-rank the run)",
                             e.rank, quote(e.qid), duplicate_note(r->second)));
    }
    auto [p, new_pid] = group.line_of_pid.emplace(e.pid, lines.line());
    if (!new_pid) {
      lines.fail(fmt::format("passage {} is ranked twice for query {}, {}, expected each passage once per "
                             "query (deduplicate the run)",
                             quote(e.pid), quote(e.qid), duplicate_note(p->second)));
    }
    group.entries.push_back(run.size());
    line_of.push_back(lines.line());
    run.push_back(std::move(e));
  }
  if (run.empty()) {
    throw_data_error(path, 0,
                     "found no run lines, expected lines 'qid Q0 pid rank score tag' (check the file is not "
                     "empty or truncated)");
  }
  for (QueryEntries& group : groups) {
    auto& entries = group.entries;
    std::sort(entries.begin(), entries.end(), [&](size_t a, size_t b) { return run[a].rank < run[b].rank; });
    for (size_t i = 1; i < entries.size(); ++i) {
      const RunEntry& above = run[entries[i - 1]];
      const RunEntry& below = run[entries[i]];
      if (below.score > above.score) {
        throw_data_error(path, line_of[entries[i]],
                         fmt::format("query {}: rank {} has score {} above rank {}'s {} on line {}, expected "
                                     "scores that do not increase with rank (ranks must follow scores: "
                                     "re-sort the run)",
                                     quote(below.qid), below.rank, format_score(below.score), above.rank,
                                     format_score(above.score),
                                     line_of[entries[i - 1]]));
      }
    }
  }
  return run;
}

}  // namespace dgr::data
