// Builds the embedded Debian data set: choose a passage per source package, filter, split, write.
// Note [Debian data filters]: the steps and their constants are described in docs/data.md; the report
// counts every step so a build can be compared with another one.
#include "data/debian_dataset.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <numeric>
#include <regex>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "common/text.h"
#include "data/debian_lists.h"

namespace fs = std::filesystem;

namespace dgr::data {
namespace {

struct Candidate {
  std::string pid;       // chosen binary package name (= title)
  std::string synopsis;  // query text
  std::string text;      // flattened long description
};

// Debian's extended description: one leading space per line, " ." for an empty line; flatten to one line.
std::string flatten_description(const std::string& raw) {
  std::string joined;
  for (auto line : text::split(raw, '\n')) {
    auto t = text::trim(line);
    if (t == "." || t.empty()) continue;
    joined.append(t).push_back(' ');
  }
  return text::collapse_ws(joined);
}

bool is_transitional(const BinaryPackage& b) {
  static const std::regex kTransitional("transitional|dummy", std::regex::icase);
  return std::regex_search(b.synopsis, kTransitional) || std::regex_search(b.long_description, kTransitional);
}

// Packages that accompany the main one (headers, docs, data, debug symbols) rarely describe the software.
bool is_auxiliary(const std::string& name) {
  static const std::regex kAux("(-dev|-doc|-dbg|-data|-common|-examples|-dbgsym)$");
  return std::regex_search(name, kAux);
}

// Sentences end at '.', '!', '?' or ':' followed by a space (the text is already whitespace-collapsed).
std::vector<std::string_view> sentences(std::string_view s) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (size_t i = 0; i + 1 < s.size(); ++i) {
    if (s[i + 1] == ' ' && (s[i] == '.' || s[i] == '!' || s[i] == '?' || s[i] == ':')) {
      out.push_back(s.substr(start, i + 1 - start));
      start = i + 2;
    }
  }
  if (start < s.size()) out.push_back(s.substr(start));
  return out;
}

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) { h ^= c; h *= 1099511628211ull; }
  return h;
}

// Sorted, unique hashes of the lower-cased word 5-grams of `s` (words: runs of letters, digits, '_' and
// any non-ASCII byte).
std::vector<uint64_t> shingles(const std::string& s) {
  std::vector<std::string> words;
  std::string word;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '_' || c >= 0x80) {
      word.push_back(static_cast<char>(std::tolower(c)));
    } else if (!word.empty()) {
      words.push_back(std::move(word));
      word.clear();
    }
  }
  if (!word.empty()) words.push_back(word);
  constexpr size_t kN = 5;
  std::vector<uint64_t> out;
  size_t count = words.size() >= kN ? words.size() - kN + 1 : 1;
  for (size_t i = 0; i < count; ++i) {
    std::string gram;
    for (size_t k = i; k < std::min(words.size(), i + kN); ++k) gram.append(words[k]).push_back(' ');
    out.push_back(fnv1a(gram));
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// Marks passages whose 5-gram Jaccard similarity to an earlier kept passage is >= threshold. Shingles
// shared by more than kMaxPosting passages (boilerplate) are not used to find candidates.
std::vector<bool> near_duplicates(const std::vector<Candidate>& docs, double threshold) {
  constexpr size_t kMaxPosting = 2000;
  std::vector<std::vector<uint64_t>> sets(docs.size());
  std::unordered_map<uint64_t, std::vector<int>> postings;
  for (size_t i = 0; i < docs.size(); ++i) {
    sets[i] = shingles(docs[i].text);
    for (uint64_t h : sets[i]) postings[h].push_back(static_cast<int>(i));
  }
  std::vector<bool> dropped(docs.size(), false);
  std::unordered_map<int, int> shared;
  for (size_t i = 0; i < docs.size(); ++i) {
    if (dropped[i]) continue;
    shared.clear();
    for (uint64_t h : sets[i]) {
      const auto& list = postings[h];
      if (list.size() > kMaxPosting) continue;
      for (int j : list) if (j > static_cast<int>(i)) ++shared[j];
    }
    for (auto [j, c] : shared) {
      if (dropped[j]) continue;
      double jaccard = static_cast<double>(c) / static_cast<double>(sets[i].size() + sets[j].size() - c);
      if (jaccard >= threshold) dropped[j] = true;
    }
  }
  return dropped;
}

// The 128-bit MD5 of `key`, as an integer, modulo `k`.
uint64_t md5_mod(const std::string& key, uint64_t k) {
  std::string raw = files::md5_raw(key);
  uint64_t r = 0;
  for (unsigned char c : raw) r = (r * 256 + c) % k;
  return r;
}

size_t word_count(std::string_view s) { return text::split_ws(s).size(); }

struct QueryRow {
  std::string qid, text, pid, split;
};

std::string default_cache_dir() {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  std::string base = xdg && *xdg ? xdg : (home && *home ? std::string(home) + "/.cache" : "/tmp");
  return base + "/dgr/apt-lists";
}

}  // namespace

int subset_keep_one_in(const std::string& subset) {
  if (subset == "tiny") return 100;
  if (subset == "small") return 10;
  if (subset == "full") return 1;
  throw ConfigError(fmt::format("unknown subset '{}' (use tiny, small or full)", subset));
}

DebianDataReport build_debian_dataset(const DebianDataConfig& cfg) {
  auto log = log::get("data");
  const int keep_one_in = subset_keep_one_in(cfg.subset);
  DebianDataReport report;
  report.out_dir = cfg.out.empty() ? "data/debian-" + cfg.subset : cfg.out;
  // Refuse an existing output before any work (AtomicDir checks again at the end).
  DGR_CHECK_AS(ConfigError, cfg.force || !fs::exists(report.out_dir),
               "output directory {} already exists (pass --force to rebuild it, or choose --out)", report.out_dir);

  std::string lists_dir = cfg.lists_dir;
  if (lists_dir.empty()) {
    lists_dir = default_cache_dir();
    fetch_debian_lists(lists_dir);
  }
  DebianLists lists = read_debian_lists(lists_dir);
  report.release_date = lists.release_date;
  log->info("read {} binary packages from {} (suite {}, {})", lists.binaries.size(), lists.packages.path,
            lists.suite, lists.release_date);
  auto& counts = report.counts;
  counts.emplace_back("binary_packages", lists.binaries.size());

  // One passage per source package, in order of first appearance.
  std::vector<std::string> source_order;
  std::unordered_map<std::string, std::vector<const BinaryPackage*>> by_source;
  for (const auto& b : lists.binaries) {
    auto [it, inserted] = by_source.try_emplace(b.source);
    if (inserted) source_order.push_back(b.source);
    it->second.push_back(&b);
  }
  counts.emplace_back("source_packages", source_order.size());

  std::vector<Candidate> candidates;
  for (const auto& source : source_order) {
    const BinaryPackage* chosen = nullptr;
    const BinaryPackage* first_main = nullptr;
    const BinaryPackage* first_any = nullptr;
    for (const BinaryPackage* b : by_source[source]) {
      if (is_transitional(*b)) continue;
      if (b->package == source && chosen == nullptr) chosen = b;
      if (!is_auxiliary(b->package) && first_main == nullptr) first_main = b;
      if (first_any == nullptr) first_any = b;
    }
    if (chosen == nullptr) chosen = first_main ? first_main : first_any;
    if (chosen == nullptr) continue;
    candidates.push_back({chosen->package, text::collapse_ws(chosen->synopsis),
                          flatten_description(chosen->long_description)});
  }
  counts.emplace_back("after_transitional_filter", candidates.size());

  // Boilerplate: sentences found in the texts of many source packages ("This package contains the shared
  // library."); a passage needs min_content_words words outside them.
  std::unordered_map<std::string_view, int> sentence_sources;
  for (const auto& c : candidates) {
    std::unordered_set<std::string_view> seen;
    for (auto s : sentences(c.text)) if (seen.insert(s).second) ++sentence_sources[s];
  }
  std::vector<Candidate> kept;
  int64_t invalid_utf8 = 0;
  for (auto& c : candidates) {
    size_t content_words = 0;
    for (auto s : sentences(c.text)) {
      if (sentence_sources[s] < cfg.boilerplate_min_sources) content_words += word_count(s);
    }
    if (static_cast<int>(content_words) < cfg.min_content_words) continue;
    if (!text::is_valid_utf8(c.text) || !text::is_valid_utf8(c.synopsis)) { ++invalid_utf8; continue; }
    kept.push_back(c);
  }
  sentence_sources.clear();
  candidates = std::move(kept);
  counts.emplace_back("after_boilerplate_and_length_filter", candidates.size());

  // Exact duplicates (case-insensitive), then near duplicates; the first passage in pid order stays.
  std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) { return a.pid < b.pid; });
  std::unordered_set<std::string> texts;
  kept.clear();
  for (auto& c : candidates) if (texts.insert(text::to_lower(c.text)).second) kept.push_back(std::move(c));
  candidates = std::move(kept);
  counts.emplace_back("after_duplicate_text_filter", candidates.size());
  auto dropped = near_duplicates(candidates, cfg.near_duplicate_jaccard);
  kept.clear();
  for (size_t i = 0; i < candidates.size(); ++i) if (!dropped[i]) kept.push_back(std::move(candidates[i]));
  candidates = std::move(kept);
  counts.emplace_back("after_near_duplicate_filter", candidates.size());

  if (keep_one_in > 1) {
    kept.clear();
    for (auto& c : candidates) if (md5_mod(c.pid, keep_one_in) == 0) kept.push_back(std::move(c));
    candidates = std::move(kept);
    counts.emplace_back("after_subset", candidates.size());
  }
  DGR_CHECK_AS(DataError, !candidates.empty(), "{}: no passage survived the filters (are these the main "
               "Packages and Translation-en lists?)", lists.packages.path);

  // Queries: the synopsis, unless it gives the answer away (verbatim in the passage) or names several
  // passages of this corpus.
  std::unordered_map<std::string, int> synopsis_passages;
  for (const auto& c : candidates) ++synopsis_passages[text::to_lower(c.synopsis)];
  int64_t dropped_short = 0, dropped_verbatim = 0, dropped_ambiguous = 0;
  std::vector<QueryRow> queries;
  for (const auto& c : candidates) {
    std::string lower = text::to_lower(c.synopsis);
    if (word_count(c.synopsis) < 2) { ++dropped_short; continue; }
    if (text::to_lower(c.text).find(lower) != std::string::npos) { ++dropped_verbatim; continue; }
    if (synopsis_passages[lower] > 1) { ++dropped_ambiguous; continue; }
    std::string raw = files::md5_raw("split:" + c.pid);
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(raw[i]);
    uint64_t bucket = v % 10;
    queries.push_back({"q" + files::md5_hex("query:" + c.pid).substr(0, 12), c.synopsis, c.pid,
                       bucket < 8 ? "train" : (bucket == 8 ? "dev" : "test")});
  }
  counts.emplace_back("queries_dropped_short", dropped_short);
  counts.emplace_back("queries_dropped_verbatim_in_passage", dropped_verbatim);
  counts.emplace_back("queries_dropped_ambiguous", dropped_ambiguous);
  counts.emplace_back("queries", queries.size());
  if (invalid_utf8 > 0) counts.emplace_back("passages_dropped_invalid_utf8", invalid_utf8);

  // Statistics and examples.
  std::vector<int64_t> lengths;
  for (const auto& c : candidates) lengths.push_back(static_cast<int64_t>(word_count(c.text)));
  std::sort(lengths.begin(), lengths.end());
  report.passage_words_mean = std::accumulate(lengths.begin(), lengths.end(), 0.0) / lengths.size();
  report.passage_words_median = lengths[lengths.size() / 2];
  report.passage_words_max = lengths.back();
  double query_words = 0;
  for (const auto& q : queries) query_words += word_count(q.text);
  report.query_words_mean = queries.empty() ? 0 : query_words / queries.size();
  for (const char* split : {"train", "dev", "test"}) report.split_sizes[split] = 0;
  for (const auto& q : queries) ++report.split_sizes[q.split];
  std::vector<const QueryRow*> by_qid;
  for (const auto& q : queries) by_qid.push_back(&q);
  std::sort(by_qid.begin(), by_qid.end(), [](auto* a, auto* b) { return a->qid < b->qid; });
  std::unordered_map<std::string, const Candidate*> passage_of;
  for (const auto& c : candidates) passage_of[c.pid] = &c;
  for (size_t i = 0; i < by_qid.size() && report.examples.size() < 5; ++i) {
    const Candidate* p = passage_of[by_qid[i]->pid];
    std::string excerpt = p->text.size() > 160 ? p->text.substr(0, 160) + "..." : p->text;
    report.examples.emplace_back(by_qid[i]->text, p->pid + ": " + excerpt);
  }

  // Write everything into a temporary directory; rename it into place only when complete.
  fs::path parent = fs::path(report.out_dir).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
  files::AtomicDir out(report.out_dir, cfg.force);
  auto write_file = [&](const std::string& name, const std::string& content) {
    files::AtomicFile f((fs::path(out.tmp_dir()) / name).string());
    f.write(content);
    f.commit();
  };
  std::string corpus = "pid\ttitle\ttext\n";
  for (const auto& c : candidates) corpus += c.pid + "\t" + c.pid + "\t" + c.text + "\n";
  write_file("corpus.tsv", corpus);
  for (const char* split : {"train", "dev", "test"}) {
    std::string q = "qid\ttext\n", r = "qid\tpid\n";
    for (const auto* row : by_qid) {
      if (row->split != split) continue;
      q += row->qid + "\t" + row->text + "\n";
      r += row->qid + "\t" + row->pid + "\n";
    }
    write_file(fmt::format("queries.{}.tsv", split), q);
    write_file(fmt::format("qrels.{}.tsv", split), r);
  }
  nlohmann::ordered_json manifest;
  manifest["format"] = "dgr-debian-data/1";
  manifest["subset"] = cfg.subset;
  manifest["keep_one_in"] = keep_one_in;
  manifest["source"] = {{"suite", lists.suite},
                        {"release_date", lists.release_date},
                        {"packages", {{"file", fs::path(lists.packages.path).filename().string()},
                                      {"sha256", lists.packages.sha256}}},
                        {"translation", {{"file", fs::path(lists.translation.path).filename().string()},
                                         {"sha256", lists.translation.sha256}}}};
  manifest["parameters"] = {{"min_content_words", cfg.min_content_words},
                            {"boilerplate_min_sources", cfg.boilerplate_min_sources},
                            {"near_duplicate_jaccard", cfg.near_duplicate_jaccard}};
  for (const auto& [name, value] : counts) manifest["counts"][name] = value;
  for (const auto& [name, value] : report.split_sizes) manifest["splits"][name] = value;
  manifest["stats"] = {{"passage_words_mean", report.passage_words_mean},
                       {"passage_words_median", report.passage_words_median},
                       {"passage_words_max", report.passage_words_max},
                       {"query_words_mean", report.query_words_mean}};
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(out.tmp_dir())) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    manifest["files"][name] = files::sha256_file((fs::path(out.tmp_dir()) / name).string());
  }
  write_file("manifest.json", manifest.dump(1) + "\n");
  out.commit();
  log->info("wrote {} passages and {} queries to {}", candidates.size(), queries.size(), report.out_dir);
  return report;
}

std::string format_report(const DebianDataReport& r) {
  std::string s = fmt::format("Debian package retrieval data set in {} (lists of {})\n", r.out_dir, r.release_date);
  s += "filter counts:\n";
  for (const auto& [name, value] : r.counts) s += fmt::format("  {:<40} {:>8}\n", name, value);
  s += fmt::format("splits: train {}  dev {}  test {}\n", r.split_sizes.at("train"), r.split_sizes.at("dev"),
                   r.split_sizes.at("test"));
  s += fmt::format("passage words: mean {:.1f}  median {}  max {};  query words: mean {:.2f}\n",
                   r.passage_words_mean, r.passage_words_median, r.passage_words_max, r.query_words_mean);
  s += "examples (query -> passage):\n";
  for (const auto& [query, passage] : r.examples) s += fmt::format("  {}\n    -> {}\n", query, passage);
  return s;
}

}  // namespace dgr::data
