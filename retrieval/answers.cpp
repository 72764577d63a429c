// Answer-string relevance (see answers.h).
//
// Note [Answer matching]
// ~~~~~~~~~~~~~~~~~~~~~~~
// As DPR's evaluation (dpr/data/qa_validation.py: has_answer with match_type "string", and
// dpr/utils/tokenizers.py: SimpleTokenizer), which the MINDER and LTRGR papers' NQ/TriviaQA numbers use:
//  1. the text and each answer are put in Unicode normal form D (unicodedata.normalize("NFD", ...); ICU here);
//  2. tokens are the leftmost matches of ([\p{L}\p{N}\p{M}]+)|([^\p{Z}\p{C}]) (a run of letters, digits and
//     marks, or any single other character that is not a separator or control), lowercased (uncased);
//  3. an answer matches when its token sequence occurs contiguously in the text's tokens; empty answers never.
// DPR matches the passage text only (not its title); so does this. tests/answers_test.sh holds it against a
// Python transcription of those two files (the `regex` module and unicodedata).
#include "retrieval/answers.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include <fstream>
#include <memory>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "retrieval/metrics.h"

namespace dgr::retrieval {
namespace {

const pcre2_code* token_regex() {
  static const pcre2_code* code = [] {
    int error = 0;
    PCRE2_SIZE offset = 0;
    const char* pattern = R"(([\p{L}\p{N}\p{M}]+)|([^\p{Z}\p{C}]))";
    pcre2_code* c = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                                  PCRE2_UTF | PCRE2_UCP | PCRE2_CASELESS | PCRE2_MULTILINE, &error, &offset, nullptr);
    DGR_CHECK(c != nullptr, "answer tokenizer: PCRE2 cannot compile its pattern (error {})", error);
    return c;
  }();
  return code;
}

std::string nfd(std::string_view text) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = icu::Normalizer2::getNFDInstance(status);
  DGR_CHECK(U_SUCCESS(status), "ICU: no NFD normalizer ({})", u_errorName(status));
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
  icu::UnicodeString out = n->normalize(u, status);
  DGR_CHECK(U_SUCCESS(status), "ICU: NFD normalization failed ({})", u_errorName(status));
  std::string utf8;
  out.toUTF8String(utf8);
  return utf8;
}

std::string lower(const std::string& token) {
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(token);
  u.toLower(icu::Locale::getRoot());
  std::string utf8;
  u.toUTF8String(utf8);
  return utf8;
}

}  // namespace

std::vector<std::string> answer_tokens(std::string_view raw) {
  const std::string text = nfd(raw);
  std::vector<std::string> tokens;
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
      pcre2_match_data_create_from_pattern(token_regex(), nullptr), &pcre2_match_data_free);
  for (size_t at = 0; at < text.size();) {
    const int rc = pcre2_match(token_regex(), reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), at, 0,
                               match.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    DGR_CHECK_AS(DataError, rc > 0, "answer tokenizer: PCRE2 error {} at byte {} (invalid UTF-8?)", rc, at);
    const PCRE2_SIZE* span = pcre2_get_ovector_pointer(match.get());
    tokens.push_back(lower(text.substr(span[0], span[1] - span[0])));
    at = span[1] > span[0] ? span[1] : span[0] + 1;
  }
  return tokens;
}

bool has_answer(const std::vector<std::string>& text, const std::vector<std::vector<std::string>>& answers) {
  for (const auto& answer : answers) {
    if (answer.empty() || answer.size() > text.size()) continue;
    for (size_t i = 0; i + answer.size() <= text.size(); ++i) {
      if (std::equal(answer.begin(), answer.end(), text.begin() + static_cast<std::ptrdiff_t>(i))) return true;
    }
  }
  return false;
}

AnswerAccuracy answer_accuracy(const std::vector<data::RunEntry>& run, const std::string& answers_path,
                               const data::Corpus& corpus, const std::vector<int>& at) {
  std::unordered_map<std::string, std::vector<const data::RunEntry*>> by_query;
  for (const auto& e : run) by_query[e.qid].push_back(&e);
  std::ifstream in(answers_path);
  DGR_CHECK_AS(DataError, in.good(), "{}: cannot open (check the path)", answers_path);
  AnswerAccuracy out;
  std::map<int, int> hits;
  std::unordered_map<std::string, std::vector<std::string>> text_tokens;  // pid -> tokens (cached)
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    DGR_CHECK_AS(DataError, j.is_object() && j.contains("qid") && j["qid"].is_string() && j.contains("answers") &&
                 j["answers"].is_array(), "{}:{}: expected {{\"qid\": ..., \"answers\": [...]}}", answers_path, number);
    std::vector<std::vector<std::string>> answers;
    for (const auto& a : j["answers"]) {
      DGR_CHECK_AS(DataError, a.is_string(), "{}:{}: an answer that is not a string", answers_path, number);
      answers.push_back(answer_tokens(a.get<std::string>()));
    }
    ++out.questions;
    auto it = by_query.find(j["qid"].get<std::string>());
    if (it == by_query.end()) {
      ++out.questions_missing_from_run;
      continue;
    }
    order_as_trec_eval(it->second);
    int first = 0;  // 1-based rank of the first answer-bearing passage (0 = none)
    for (size_t r = 0; r < it->second.size() && first == 0; ++r) {
      const std::string& pid = it->second[r]->pid;
      auto cached = text_tokens.find(pid);
      if (cached == text_tokens.end()) {
        auto p = corpus.index_of.find(pid);
        DGR_CHECK_AS(DataError, p != corpus.index_of.end(), "run passage '{}' is not in the corpus", pid);
        cached = text_tokens.emplace(pid, answer_tokens(corpus.passages[p->second].text)).first;
      }
      if (has_answer(cached->second, answers)) first = static_cast<int>(r) + 1;
    }
    for (int k : at) hits[k] += first > 0 && first <= k ? 1 : 0;
  }
  DGR_CHECK_AS(DataError, out.questions > 0, "{}: no questions", answers_path);
  for (int k : at) out.at[k] = static_cast<double>(hits[k]) / out.questions;
  return out;
}

}  // namespace dgr::retrieval
