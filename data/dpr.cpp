// DPR's question files -> queries, qrels and answers (see dpr.h).
#include "data/dpr.h"

#include <filesystem>
#include <fstream>
#include <optional>
#include <string_view>
#include <vector>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"
#include "common/text.h"
#include "data/readers.h"

namespace fs = std::filesystem;

namespace dgr::data {
namespace {

using nlohmann::json;

std::string passage_id(const json& ctx) {
  for (const char* key : {"passage_id", "psg_id", "id"}) {
    if (!ctx.contains(key)) continue;
    const json& v = ctx.at(key);
    if (v.is_string()) return v.get<std::string>();
    if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  }
  return "";
}

// The answers column of DPR's *.qa.csv: a Python list literal, ['a', "b's", ...] (backslash escapes kept as the
// escaped character). Empty on anything else.
std::optional<std::vector<std::string>> python_string_list(std::string_view s) {
  while (!s.empty() && (s.back() == '\r' || s.back() == ' ')) s.remove_suffix(1);
  if (s.size() < 2 || s.front() != '[' || s.back() != ']') return std::nullopt;
  std::vector<std::string> out;
  size_t i = 1;
  while (true) {
    while (i < s.size() - 1 && (s[i] == ' ' || s[i] == ',')) ++i;
    if (i >= s.size() - 1) break;
    const char quote = s[i];
    if (quote != '\'' && quote != '"') return std::nullopt;
    std::string item;
    for (++i; i < s.size() - 1 && s[i] != quote; ++i) {
      if (s[i] == '\\' && i + 1 < s.size() - 1) ++i;
      item += s[i];
    }
    if (i >= s.size() - 1) return std::nullopt;  // unterminated
    ++i;
    out.push_back(std::move(item));
  }
  return out;
}

}  // namespace

DprQueryReport convert_dpr_queries(const DprQueryOptions& o) {
  DGR_CHECK_AS(ConfigError, fs::is_directory(o.data_dir), "--data {}: not a directory", o.data_dir);
  DGR_CHECK_AS(ConfigError, !o.split.empty() && o.split.find_first_of("/ \t") == std::string::npos && o.split.front() != '.',
               "--split '{}': use a plain name (letters, digits, ., - or _)", o.split);
  const fs::path dir(o.data_dir);
  const std::string queries_path = (dir / ("queries." + o.split + ".tsv")).string();
  const std::string qrels_path = (dir / ("qrels." + o.split + ".tsv")).string();
  const std::string answers_path = (dir / ("answers." + o.split + ".jsonl")).string();
  for (const auto& p : {queries_path, qrels_path, answers_path}) {
    DGR_CHECK_AS(ConfigError, o.force || !fs::exists(p), "{} exists: pass --force to replace it, or choose another "
                 "--split", p);
  }
  json questions;
  const bool csv = o.in.size() > 4 && o.in.compare(o.in.size() - 4, 4, ".csv") == 0;
  if (csv) {  // DPR's *.qa.csv: question<TAB>['answer', ...] per line, no passage labels
    std::ifstream in(o.in, std::ios::binary);
    DGR_CHECK_AS(DataError, in.good(), "{}: cannot open (check the path)", o.in);
    questions = json::array();
    std::string line;
    for (int64_t number = 1; std::getline(in, line); ++number) {
      if (line.empty()) continue;
      const size_t tab = line.rfind('\t');
      const auto answers = tab == std::string::npos ? std::nullopt : python_string_list(std::string_view(line).substr(tab + 1));
      DGR_CHECK_AS(DataError, answers.has_value(), "{}:{}: expected question<TAB>['answer', ...] (DPR's .qa.csv)", o.in,
                   number);
      questions.push_back({{"question", line.substr(0, tab)}, {"answers", *answers}});
    }
  } else {
    std::ifstream in(o.in, std::ios::binary);
    DGR_CHECK_AS(DataError, in.good(), "{}: cannot open (check the path)", o.in);
    questions = json::parse(in, nullptr, /*allow_exceptions=*/false);
  }
  DGR_CHECK_AS(DataError, !questions.is_discarded(), "{}: not valid JSON (DPR's retriever files are one JSON array)",
               o.in);
  DGR_CHECK_AS(DataError, questions.is_array(), "{}: a JSON {}, expected an array of questions (DPR's nq-train.json "
               "layout; the .csv question files carry no passage labels)", o.in, questions.type_name());

  DprQueryReport report;
  std::optional<Corpus> corpus;
  const std::string corpus_path = (dir / "corpus.tsv").string();
  if (fs::exists(corpus_path)) {
    corpus = read_corpus(corpus_path);
    report.corpus_checked = true;
  }
  std::string queries = "qid\ttext\n", qrels = "qid\tpid\tgrade\n", answers;
  for (size_t i = 0; i < questions.size(); ++i) {
    const json& q = questions[i];
    const std::string where = fmt::format("{}: question {} (0-based)", o.in, i);
    DGR_CHECK_AS(DataError, q.is_object() && q.contains("question") && q["question"].is_string(),
                 "{}: no \"question\" string", where);
    const std::string question = text::tsv_field(q["question"].get<std::string>());
    DGR_CHECK_AS(DataError, question.find_first_not_of(' ') != std::string::npos, "{}: empty question", where);
    const std::string qid = o.split + "-" + std::to_string(i);
    queries += qid + "\t" + question + "\n";
    ++report.questions;
    std::set<std::string> seen;
    if (q.contains("positive_ctxs")) {
      DGR_CHECK_AS(DataError, q["positive_ctxs"].is_array(), "{}: \"positive_ctxs\" is not an array", where);
      for (const json& ctx : q["positive_ctxs"]) {
        const std::string pid = passage_id(ctx);
        DGR_CHECK_AS(DataError, !pid.empty(), "{}: a positive context without \"passage_id\" (or \"psg_id\")", where);
        if (corpus && corpus->index_of.count(pid) == 0) {
          ++report.positives_not_in_corpus;
          continue;
        }
        if (!seen.insert(pid).second) continue;
        qrels += qid + "\t" + pid + "\t1\n";
        ++report.qrels;
      }
    }
    report.with_positive += seen.empty() ? 0 : 1;
    json a = {{"qid", qid}, {"answers", q.value("answers", json::array())}};
    answers += a.dump() + "\n";
  }
  DGR_CHECK_AS(DataError, report.questions > 0, "{}: no questions", o.in);
  DGR_CHECK_AS(DataError, report.positives_not_in_corpus == 0 || report.qrels > 0,
               "{}: none of the {} positive passages is in {} (is it DPR's psgs_w100.tsv, with its id column?)", o.in,
               report.positives_not_in_corpus, corpus_path);
  for (const auto& [path, bytes] : {std::pair{queries_path, &queries}, std::pair{qrels_path, &qrels},
                                    std::pair{answers_path, &answers}}) {
    if (csv && path == qrels_path) continue;  // no passage labels: evaluate with --answers
    files::AtomicFile file(path);
    file.write(*bytes);
    file.commit();
  }
  return report;
}

}  // namespace dgr::data
