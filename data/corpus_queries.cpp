#include "data/corpus_queries.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/files.h"
#include "data/readers.h"

namespace fs = std::filesystem;

namespace dgr::data {
namespace {

// English function words: a keyword query of them says nothing about its passage.
const std::unordered_set<std::string_view>& function_words() {
  static const std::unordered_set<std::string_view> words = {
      "the", "and", "for", "are", "but", "not", "you", "all", "any", "can", "has", "her", "was", "one", "our",
      "out", "his", "how", "its", "may", "new", "now", "see", "two", "way", "who", "did", "get", "use", "via",
      "also", "been", "both", "does", "each", "from", "have", "into", "just", "like", "more", "most", "must",
      "only", "other", "over", "same", "some", "such", "than", "that", "them", "then", "there", "these", "they",
      "this", "those", "very", "what", "when", "where", "which", "while", "will", "with", "would", "your",
      "about", "after", "before", "being", "between", "could", "their", "through", "under", "using", "used",
      "should", "without", "within", "package", "provides", "contains", "includes", "allows", "based", "etc"};
  return words;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Runs of ASCII letters and digits, as views into `text`.
std::vector<std::string_view> words_of(std::string_view text) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && !std::isalnum(static_cast<unsigned char>(text[i]))) ++i;
    const size_t start = i;
    while (i < text.size() && std::isalnum(static_cast<unsigned char>(text[i]))) ++i;
    if (i > start) out.push_back(text.substr(start, i - start));
  }
  return out;
}

std::string keyword_query(const Passage& p, const CorpusQueryOptions& o) {
  std::unordered_set<std::string> title_words;
  for (auto w : words_of(p.title)) title_words.insert(lower(w));
  std::vector<std::pair<std::string, size_t>> eligible;  // (MD5 of "seed:pid:word", first position in the body)
  std::unordered_set<std::string> seen;
  const auto body = words_of(p.text);
  for (size_t i = 0; i < body.size(); ++i) {
    const std::string w = lower(body[i]);
    const bool all_digits = std::all_of(w.begin(), w.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
    if (w.size() < 3 || all_digits || function_words().count(w) || title_words.count(w) || !seen.insert(w).second) continue;
    eligible.emplace_back(files::md5_hex(fmt::format("{}:{}:{}", o.seed, p.pid, w)), i);
  }
  if (eligible.size() < o.words) return "";
  std::sort(eligible.begin(), eligible.end());
  std::vector<size_t> positions;
  for (size_t k = 0; k < o.words; ++k) positions.push_back(eligible[k].second);
  std::sort(positions.begin(), positions.end());
  std::string query;
  for (size_t pos : positions) query += (query.empty() ? "" : " ") + std::string(body[pos]);
  return query;
}

std::string sentence_query(const Passage& p, const CorpusQueryOptions& o) {
  std::vector<std::pair<std::string, std::string>> eligible;  // (MD5 of "seed:pid:index", sentence)
  const std::string_view text = p.text;
  size_t start = 0, index = 0;
  for (size_t i = 0; i <= text.size(); ++i) {
    const bool end = i == text.size() ||
                     (std::string_view(".;:!?").find(text[i]) != std::string_view::npos &&
                      (i + 1 == text.size() || text[i + 1] == ' '));
    if (!end) continue;
    std::string_view s = text.substr(start, i - start);
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
    const size_t n = words_of(s).size();
    if (n >= o.min_sentence_words && n <= o.max_sentence_words)
      eligible.emplace_back(files::md5_hex(fmt::format("{}:{}:{}", o.seed, p.pid, index)), std::string(s));
    ++index;
    start = i + 1;
  }
  if (eligible.empty()) return "";
  return std::min_element(eligible.begin(), eligible.end())->second;
}

}  // namespace

CorpusQueryReport make_corpus_queries(const CorpusQueryOptions& o) {
  DGR_CHECK_AS(ConfigError, o.kind == "keywords" || o.kind == "sentence",
               "dgr data corpus-queries: --kind {} (choose keywords or sentence)", o.kind);
  DGR_CHECK_AS(ConfigError, o.count > 0, "dgr data corpus-queries: --count must be at least 1");
  DGR_CHECK_AS(ConfigError, o.words > 0, "dgr data corpus-queries: --words must be at least 1");
  DGR_CHECK_AS(ConfigError, o.min_sentence_words > 0 && o.min_sentence_words <= o.max_sentence_words,
               "dgr data corpus-queries: sentence lengths {}..{} words: give 1 <= min <= max", o.min_sentence_words,
               o.max_sentence_words);
  const fs::path dir(o.data_dir);
  const std::string queries_path = (dir / fmt::format("queries.{}.tsv", o.split)).string();
  const std::string qrels_path = (dir / fmt::format("qrels.{}.tsv", o.split)).string();
  if (!o.force)
    for (const auto& path : {queries_path, qrels_path})
      DGR_CHECK_AS(ConfigError, !fs::exists(path), "{}: exists (give --force to replace it, or another --split)", path);
  const Corpus corpus = read_corpus((dir / "corpus.tsv").string());

  std::vector<std::pair<std::string, size_t>> order;  // (MD5 of "seed:pid", passage)
  for (size_t i = 0; i < corpus.passages.size(); ++i)
    order.emplace_back(files::md5_hex(fmt::format("{}:{}", o.seed, corpus.passages[i].pid)), i);
  std::sort(order.begin(), order.end());

  CorpusQueryReport report;
  report.passages = corpus.passages.size();
  std::string q = "qid\ttext\n", r = "qid\tpid\n";
  for (const auto& [hash, i] : order) {
    if (report.queries == o.count) break;
    ++report.passages_tried;
    const Passage& p = corpus.passages[i];
    const std::string text = o.kind == "keywords" ? keyword_query(p, o) : sentence_query(p, o);
    if (text.empty()) continue;
    q += fmt::format("c:{}\t{}\n", p.pid, text);
    r += fmt::format("c:{}\t{}\n", p.pid, p.pid);
    ++report.queries;
  }
  DGR_CHECK_AS(ConfigError, report.queries > 0,
               "dgr data corpus-queries: no passage of {} yields a {} query (lower --words, or widen the sentence "
               "lengths)", (dir / "corpus.tsv").string(), o.kind);
  files::AtomicFile queries_file(queries_path), qrels_file(qrels_path);
  queries_file.write(q);
  qrels_file.write(r);
  queries_file.commit();
  qrels_file.commit();
  return report;
}

}  // namespace dgr::data
