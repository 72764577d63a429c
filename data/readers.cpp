// Readers for corpus, queries and qrels (TREC runs: trec.cpp). Each reads line by line through LineReader, checks
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
#include "data/line_checks.h"

namespace dgr::data {

using line_checks::DataLines;
using namespace line_checks;

namespace {

using nlohmann::json;

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

// Note [Trust the header]: a TSV corpus whose first line is a header (first field "pid") declares its columns:
// 2 (pid, text: no titles), 3 (pid, title, text) or 4 (plus the pseudo-queries). Every data line must then
// have exactly that many fields, so a stray tab inside a passage's text is an error naming the line instead of
// silently turning the rest of the text into a pseudo-query column. Without a header, a first line of 2
// fields declares 2 for the whole file (MS MARCO's collection.tsv: pid<TAB>text), else a line may have 3 or 4
// fields. The same for TSV qrels: a header `qid<TAB>pid` admits no third (grade) field. Queries have exactly 2
// fields.

// A field of DPR's psgs_w100.tsv, written by Python's csv module: "..." with "" for a quote inside, or bare.
std::string unquote_csv_field(std::string_view field) {
  if (field.size() < 2 || field.front() != '"' || field.back() != '"') return std::string(field);
  std::string out;
  out.reserve(field.size() - 2);
  for (size_t i = 1; i + 1 < field.size(); ++i) {
    out += field[i];
    if (field[i] == '"' && i + 2 < field.size() && field[i + 1] == '"') ++i;
  }
  return out;
}

// Parses a TSV corpus line; false for the header line, whose column count goes to `header_columns`. A header
// `id<TAB>text<TAB>title` is DPR's psgs_w100.tsv (`dpr`): columns in that order, fields csv-quoted.
bool parse_tsv_passage(const DataLines& lines, const std::string& line, bool first, size_t& header_columns,
                       bool& implied, bool& dpr, Passage& p) {
  auto fields = text::split(line, '\t');
  if (first && fields.size() == 3 && fields[0] == "id" && fields[1] == "text" && fields[2] == "title") {
    header_columns = 3;
    dpr = true;
    return false;
  }
  if (dpr) {
    if (fields.size() != 3) {
      lines.fail(fmt::format("found {}, but the header (line 1) names 3 columns (id<TAB>text<TAB>title, DPR's "
                             "psgs_w100.tsv) (a tab inside a field splits it: replace tabs inside the text with spaces)",
                             count_fields(fields.size(), "tab-separated")));
    }
    check_id(lines, "passage id", fields[0]);
    p.pid = std::string(fields[0]);
    p.text = unquote_csv_field(fields[1]);
    check_text(lines, fmt::format("text of passage {}", quote(p.pid)), p.text, true);
    p.title = unquote_csv_field(fields[2]);
    return true;
  }
  if (first && fields[0] == "pid") {
    if (fields.size() < 2 || fields.size() > 4) {
      lines.fail(fmt::format("the header names {} columns, expected 2 (pid<TAB>text), 3 (pid<TAB>title<TAB>text) "
                             "or 4 (with pseudo_queries) (fix the header line)",
                             fields.size()));
    }
    header_columns = fields.size();
    return false;
  }
  if (first && fields.size() == 2) {  // no header, no titles: every line pid<TAB>text
    header_columns = 2;
    implied = true;
  }
  if (header_columns != 0 && fields.size() != header_columns) {
    const char* columns = header_columns == 2   ? "pid<TAB>text"
                          : header_columns == 3 ? "pid<TAB>title<TAB>text"
                                                : "pid<TAB>title<TAB>text<TAB>pseudo_queries";
    lines.fail(fmt::format("found {}, but {} {} columns ({}) (a tab inside a field splits it: replace tabs inside "
                           "the text with spaces{})",
                           count_fields(fields.size(), "tab-separated"),
                           implied ? "line 1 (no header) has" : "the header (line 1) names", header_columns, columns,
                           header_columns == 3 ? ", or declare a pseudo_queries column in the header" : ""));
  }
  if (header_columns == 2) {
    check_id(lines, "passage id", fields[0]);
    p.pid = std::string(fields[0]);
    check_text(lines, fmt::format("text of passage {}", quote(p.pid)), fields[1], true);
    p.text = std::string(fields[1]);
    return true;
  }
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
  // "contents" is pyserini's name for the text ({"id": ..., "contents": ...}).
  if (obj.contains("text") && obj.contains("contents")) {
    lines.fail("found both \"text\" and \"contents\", expected one of them (drop one key)");
  }
  if (!obj.contains("text") && !obj.contains("contents")) {
    std::string hint;
    for (const char* other : {"content", "body", "passage"}) {
      if (obj.contains(other)) hint = fmt::format("; found \"{}\": rename it to \"text\"", other);
    }
    lines.fail(fmt::format("found no \"text\" key in passage {}, expected the passage text as \"text\" "
                           "(or \"contents\", as pyserini writes it) (add it{})",
                           quote(p.pid), hint));
  }
  p.text = json_string(lines, obj, obj.contains("text") ? "text" : "contents");
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
  size_t header_columns = 0;  // 0 = no header (Note [Trust the header])
  bool implied = false;       // header_columns comes from a header-less first line
  bool dpr = false;           // DPR's id<TAB>text<TAB>title
  while (lines.next(line)) {
    Passage p;
    if (format == CorpusFormat::kTsv) {
      bool is_data = parse_tsv_passage(lines, line, first, header_columns, implied, dpr, p);
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
  size_t header_columns = 0;  // a TSV header "qid<TAB>pid[<TAB>grade]" declares the columns (Note [Trust the header])
  while (lines.next(line)) {
    auto words = text::split_ws(line);
    bool header = first && !words.empty() && words[0] == "qid";
    first = false;
    if (header) {
      header_columns = text::split(line, '\t').size();
      continue;
    }
    auto tabs = text::split(line, '\t');
    if (header_columns == 2 && tabs.size() > 2) {
      lines.fail(fmt::format("found {}, but the header (line 1) names 2 columns (qid<TAB>pid) (remove the extra "
                             "fields, or declare a grade column in the header: qid<TAB>pid<TAB>grade)",
                             count_fields(tabs.size(), "tab-separated")));
    }
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

}  // namespace dgr::data
