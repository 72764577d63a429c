// Mined candidates and teacher runs (see mined.h).
#include "data/mined.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <numeric>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"
#include "common/text.h"
#include "data/line_reader.h"

namespace fs = std::filesystem;

namespace dgr::data {
namespace {

using nlohmann::json;
constexpr const char* kRemine = "re-run `dgr mine`";

// View names as in retrieval::view_name (0 title, 1 body, 2 pq); sharding does not see retrieval/.
const char* view_name(int8_t view) {
  switch (view) {
    case 0: return "title";
    case 1: return "body";
    case 2: return "pq";
    default: return "?";
  }
}

int8_t parse_view(const std::string& name) {
  if (name == "title") return 0;
  if (name == "body") return 1;
  if (name == "pq") return 2;
  return -1;
}

// Reads and checks one mined line; throws DataError naming path:line.
class LineParser {
 public:
  LineParser(const std::string& path, size_t line) : path_(path), line_(line) {}

  [[noreturn]] void fail(const std::string& message) const {
    throw_data_error(path_, line_, message + " (" + kRemine + ": the file was changed or is damaged)");
  }

  const json& field(const json& object, const char* name, const std::string& where) const {
    auto it = object.find(name);
    if (it == object.end()) fail(fmt::format("{} has no \"{}\"", where, name));
    return *it;
  }
  std::string string_field(const json& object, const char* name, const std::string& where) const {
    const json& v = field(object, name, where);
    if (!v.is_string()) fail(fmt::format("{}: \"{}\" is {}, expected a string", where, name, v.type_name()));
    return v.get<std::string>();
  }
  double number_field(const json& object, const char* name, const std::string& where) const {
    const json& v = field(object, name, where);
    if (!v.is_number()) fail(fmt::format("{}: \"{}\" is {}, expected a number", where, name, v.type_name()));
    double x = v.get<double>();
    if (!std::isfinite(x)) fail(fmt::format("{}: \"{}\" is not finite", where, name));
    return x;
  }
  int64_t int_field(const json& object, const char* name, const std::string& where, int64_t lo, int64_t hi) const {
    const json& v = field(object, name, where);
    if (!v.is_number_integer()) fail(fmt::format("{}: \"{}\" is {}, expected an integer", where, name, v.type_name()));
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi)) {
      fail(fmt::format("{}: \"{}\" = {} is out of range [{}, {}]", where, name, v.get<uint64_t>(), lo, hi));
    }
    int64_t x = v.get<int64_t>();
    if (x < lo || x > hi) fail(fmt::format("{}: \"{}\" = {} is out of range [{}, {}]", where, name, x, lo, hi));
    return x;
  }
  std::vector<int32_t> tokens_field(const json& object, const char* name, const std::string& where) const {
    const json& v = field(object, name, where);
    if (!v.is_array()) fail(fmt::format("{}: \"{}\" is {}, expected an array of token ids", where, name, v.type_name()));
    std::vector<int32_t> tokens;
    tokens.reserve(v.size());
    for (const json& t : v) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        fail(fmt::format("{}: \"{}\" holds {}, expected token ids (integers >= 0)", where, name, t.dump()));
      }
      tokens.push_back(static_cast<int32_t>(t.get<int64_t>()));
    }
    return tokens;
  }

  MinedQuery parse(const json& j, bool with_keys) const {
    if (!j.is_object()) fail(fmt::format("found a JSON {}, expected an object per query", j.type_name()));
    MinedQuery q;
    q.qid = string_field(j, "qid", "the query");
    if (q.qid.empty()) fail("the query has an empty \"qid\"");
    q.text = string_field(j, "query", "query " + quote(q.qid));
    q.tokens = tokens_field(j, "query_tokens", "query " + quote(q.qid));
    const json& cands = field(j, "candidates", "query " + quote(q.qid));
    if (!cands.is_array()) fail(fmt::format("query {}: \"candidates\" is not an array", quote(q.qid)));
    std::unordered_map<std::string, size_t> rank_of_pid;
    q.candidates.reserve(cands.size());
    for (size_t i = 0; i < cands.size(); ++i) {
      const json& c = cands[i];
      std::string where = fmt::format("query {} candidate {}", quote(q.qid), i + 1);
      if (!c.is_object()) fail(where + " is not a JSON object");
      MinedCandidate m;
      m.pid = string_field(c, "pid", where);
      if (m.pid.empty()) fail(where + " has an empty \"pid\"");
      m.doc = static_cast<int32_t>(int_field(c, "doc", where, 0, std::numeric_limits<int32_t>::max()));
      int64_t rank = int_field(c, "rank", where, 1, std::numeric_limits<int32_t>::max());
      if (rank != static_cast<int64_t>(i + 1)) fail(fmt::format("{} has rank {}, expected {}", where, rank, i + 1));
      m.score = number_field(c, "score", where);
      if (i > 0 && m.score > q.candidates.back().score) {
        fail(fmt::format("{} scores {} above rank {}'s {}, expected the retriever's order", where, m.score, i,
                         q.candidates.back().score));
      }
      const json& pos = field(c, "positive", where);
      if (!pos.is_boolean()) fail(where + ": \"positive\" is not true or false");
      m.positive = pos.get<bool>();
      auto [it, fresh] = rank_of_pid.emplace(m.pid, i + 1);
      if (!fresh) fail(fmt::format("{}: passage {} is also candidate {}", where, quote(m.pid), it->second));
      if (with_keys) parse_keys(field(c, "keys", where), where, m);
      q.candidates.push_back(std::move(m));
    }
    return q;
  }

 private:
  void parse_keys(const json& keys, const std::string& where, MinedCandidate& m) const {
    if (!keys.is_array()) fail(where + ": \"keys\" is not an array");
    m.keys.reserve(keys.size());
    m.key_texts.reserve(keys.size());
    for (size_t k = 0; k < keys.size(); ++k) {
      const json& key = keys[k];
      std::string kw = fmt::format("{} key {}", where, k + 1);
      if (!key.is_object()) fail(kw + " is not a JSON object");
      CachedKey c;
      c.tokens = tokens_field(key, "tokens", kw);
      if (c.tokens.empty()) fail(kw + " has no tokens");
      std::string view = string_field(key, "view", kw);
      c.view = parse_view(view);
      if (c.view < 0) fail(fmt::format("{}: view {} is not title, body or pq", kw, quote(view)));
      c.count = static_cast<uint64_t>(int_field(key, "count", kw, 0, std::numeric_limits<int64_t>::max()));
      c.score = static_cast<float>(number_field(key, "score", kw));
      auto text = key.find("text");
      m.key_texts.push_back(text != key.end() && text->is_string() ? text->get<std::string>() : std::string());
      m.keys.push_back(std::move(c));
    }
  }

  const std::string& path_;
  size_t line_;
};

}  // namespace

std::string mined_query_json(const MinedQuery& query) {
  json cands = json::array();
  for (size_t i = 0; i < query.candidates.size(); ++i) {
    const MinedCandidate& c = query.candidates[i];
    json keys = json::array();
    for (size_t k = 0; k < c.keys.size(); ++k) {
      const CachedKey& key = c.keys[k];
      keys.push_back({{"text", k < c.key_texts.size() ? c.key_texts[k] : std::string()}, {"tokens", key.tokens},
                      {"view", view_name(key.view)}, {"count", key.count}, {"score", key.score}});
    }
    cands.push_back({{"pid", c.pid}, {"doc", c.doc}, {"rank", i + 1}, {"score", c.score}, {"positive", c.positive},
                     {"keys", std::move(keys)}});
  }
  json line = {{"qid", query.qid}, {"query", query.text}, {"query_tokens", query.tokens},
               {"candidates", std::move(cands)}};
  return line.dump(-1, ' ', false, json::error_handler_t::replace);
}

MinedQuery parse_mined_query(const std::string& line, bool with_keys, const std::string& path, size_t line_number) {
  LineParser parser(path, line_number);
  // Without keys, the parser drops every "keys" member (and its value) as it reads: a line of 100
  // candidates x 40 keys is mostly keys.
  json::parser_callback_t drop_keys = [](int, json::parse_event_t event, json& parsed) {
    return !(event == json::parse_event_t::key && parsed == "keys");
  };
  json j;
  try {
    j = with_keys ? json::parse(line) : json::parse(line, drop_keys);
  } catch (const json::exception& e) {
    parser.fail(fmt::format("not valid JSON: {}", e.what()));
  }
  return parser.parse(j, with_keys);
}

// ------------------------------------------------------------------------------------------ MinedReader

struct MinedReader::Impl {
  explicit Impl(const std::string& path) : reader(path) {}
  LineReader reader;
  std::unordered_map<std::string, size_t> line_of_qid;
};

MinedReader::MinedReader(const std::string& mined_dir, bool with_keys)
    : path_((fs::path(mined_dir) / kMinedCandidatesFile).string()), with_keys_(with_keys), impl_(nullptr) {
  if (!fs::exists(path_)) {
    throw DataError(fmt::format("{}: missing (is {} a directory written by `dgr mine`?)", path_, mined_dir));
  }
  impl_ = new Impl(path_);
}

MinedReader::~MinedReader() { delete impl_; }

size_t MinedReader::line() const { return impl_->reader.line_number(); }

bool MinedReader::next(MinedQuery& query) {
  std::string line;
  while (impl_->reader.next(line)) {
    if (line.empty()) continue;
    const size_t line_number = impl_->reader.line_number();
    query = parse_mined_query(line, with_keys_, path_, line_number);
    auto [it, fresh] = impl_->line_of_qid.emplace(query.qid, line_number);
    if (!fresh) LineParser(path_, line_number).fail(fmt::format("query {} is a duplicate of line {}", quote(query.qid), it->second));
    return true;
  }
  return false;
}

std::vector<MinedQuery> read_mined_queries(const std::string& mined_dir, bool with_keys) {
  MinedReader reader(mined_dir, with_keys);
  std::vector<MinedQuery> queries;
  MinedQuery q;
  while (reader.next(q)) queries.push_back(std::move(q));
  if (queries.empty()) throw_data_error(reader.path(), 0, "holds no query (re-run `dgr mine`)");
  return queries;
}

MinedManifest read_mined_manifest(const std::string& mined_dir) {
  MinedManifest m;
  m.dir = mined_dir;
  const std::string path = (fs::path(mined_dir) / kMinedManifestFile).string();
  if (!fs::exists(path)) {
    throw DataError(fmt::format("{}: missing (not a directory written by `dgr mine`, or an interrupted run: {})",
                                path, kRemine));
  }
  m.json = files::read_all(path);
  json j = json::parse(m.json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || j.value("format", "") != kMinedFormat) {
    throw DataError(fmt::format("{}: not a mined manifest (no \"format\": \"{}\"): {}", path, kMinedFormat, kRemine));
  }
  if (j.value("version", -1) != kMinedFormatVersion) {
    throw DataError(fmt::format("{}: mined format version {}, this dgr reads version {}: {}", path,
                                j.value("version", -1), kMinedFormatVersion, kRemine));
  }
  try {
    m.queries = j.at("counts").at("queries").get<int64_t>();
    m.max_keys = j.at("retrieval").at("max_keys").get<int>();
    const json& index = j.at("index");
    m.index_dir = index.at("dir").get<std::string>();
    m.tokenizer_sha256 = index.at("tokenizer_sha256").get<std::string>();
    m.fm_index_sha256 = index.at("fm_index_sha256").get<std::string>();
    m.pids_sha256 = index.at("pids_sha256").get<std::string>();
    m.model_path = j.at("model").at("path").get<std::string>();
    m.model_sha256 = j.at("model").at("sha256").get<std::string>();
    const std::string candidates = (fs::path(mined_dir) / kMinedCandidatesFile).string();
    const std::string expected = j.at("files").at(kMinedCandidatesFile).at("sha256").get<std::string>();
    if (!fs::exists(candidates)) throw DataError(fmt::format("{}: missing ({})", candidates, kRemine));
    const std::string actual = files::sha256_file(candidates);
    if (actual != expected) {
      throw DataError(fmt::format("{}: sha256 {} does not match {} in {} (changed or damaged after mining: {})",
                                  candidates, actual, expected, path, kRemine));
    }
  } catch (const json::exception& e) {
    throw DataError(fmt::format("{}: malformed mined manifest ({}): {}", path, e.what(), kRemine));
  }
  return m;
}

// -------------------------------------------------------------------------------------------- teachers

TeacherList teacher_list(const std::vector<std::optional<double>>& scores, const std::vector<int64_t>& tie_order) {
  DGR_CHECK(scores.size() == tie_order.size(), "teacher_list: {} scores but {} tie orders", scores.size(),
            tie_order.size());
  const size_t n = scores.size();
  TeacherList list;
  list.score.assign(n, 0);
  list.rank.assign(n, 0);
  std::vector<size_t> scored;
  double lowest = 0;
  for (size_t c = 0; c < n; ++c) {
    if (!scores[c]) continue;
    lowest = scored.empty() ? *scores[c] : std::min(lowest, *scores[c]);
    scored.push_back(c);
  }
  std::sort(scored.begin(), scored.end(), [&](size_t a, size_t b) {
    if (*scores[a] != *scores[b]) return *scores[a] > *scores[b];
    return tie_order[a] != tie_order[b] ? tie_order[a] < tie_order[b] : a < b;
  });
  int32_t rank = 0;
  for (size_t c : scored) {
    list.score[c] = *scores[c];
    list.rank[c] = ++rank;
  }
  for (size_t c = 0; c < n; ++c) {
    if (scores[c]) continue;
    list.score[c] = lowest - 1.0 - static_cast<double>(list.unscored);
    list.rank[c] = ++rank;
    ++list.unscored;
  }
  return list;
}

TeacherRun::TeacherRun(const std::string& run_path, const std::vector<MinedQuery>& mined, MissingCandidates missing,
                       const std::string& mined_dir, const std::unordered_set<std::string>* corpus_pids,
                       ExtraEntries extra) {
  // Format first: columns, numbers, duplicate (qid, pid) and ranks, ranks against scores (PATH:LINE errors).
  std::vector<RunEntry> run = read_trec_run(run_path, nullptr, nullptr);
  // read_trec_run keeps every non-empty line as one entry, in file order: entry i is the i-th non-empty line.
  std::vector<size_t> line_of;  // [entry] line number
  line_of.reserve(run.size());
  {
    LineReader reader(run_path);
    std::string line;
    while (reader.next(line)) {
      if (!line.empty()) line_of.push_back(reader.line_number());
    }
  }
  DGR_CHECK(line_of.size() == run.size(), "{}: {} entries but {} non-empty lines", run_path, run.size(), line_of.size());
  tag_ = run.front().tag;

  const std::string candidates_file = (fs::path(mined_dir) / kMinedCandidatesFile).string();
  std::unordered_map<std::string, size_t> query_of;  // qid -> mined query
  for (size_t q = 0; q < mined.size(); ++q) query_of.emplace(mined[q].qid, q);
  std::vector<std::unordered_map<std::string, size_t>> candidate_of(mined.size());  // [query] pid -> candidate
  std::vector<std::vector<std::optional<double>>> scores(mined.size());              // [query][candidate]
  std::vector<std::vector<int64_t>> tie_order(mined.size());                         // [query][candidate]
  for (size_t e = 0; e < run.size(); ++e) {
    const RunEntry& entry = run[e];
    auto q = query_of.find(entry.qid);
    if (q == query_of.end() && extra == ExtraEntries::ignore) {
      ++ignored_entries_;
      ++ignored_query_entries_;
      continue;
    }
    if (q == query_of.end()) {
      throw_data_error(run_path, line_of[e],
                       fmt::format("query {} was not mined: {} has no such query, expected the queries of the mined "
                                   "split (is the run for another split or query set? rank {}/{}, or pass --extra "
                                   "ignore to skip the queries that were not mined)",
                                   quote(entry.qid), candidates_file, mined_dir, kMinedCandidatesTsv));
    }
    const MinedQuery& query = mined[q->second];
    auto& index = candidate_of[q->second];
    if (index.empty()) {
      for (size_t c = 0; c < query.candidates.size(); ++c) index.emplace(query.candidates[c].pid, c);
      scores[q->second].assign(query.candidates.size(), std::nullopt);
      tie_order[q->second].assign(query.candidates.size(), 0);
    }
    auto c = index.find(entry.pid);
    if (c == index.end()) {
      if (corpus_pids != nullptr && corpus_pids->count(entry.pid) == 0) {
        throw_data_error(run_path, line_of[e],
                         fmt::format("passage {} is not in the corpus the candidates were mined from (is the run "
                                     "from another corpus?)",
                                     quote(entry.pid)));
      }
      if (extra == ExtraEntries::ignore) {
        ++ignored_entries_;
        continue;
      }
      throw_data_error(run_path, line_of[e],
                       fmt::format("passage {} is not among the {} mined candidates of query {}, expected the teacher "
                                   "to score exactly the mined candidates (rank the pairs of {}/{}, or pass --extra "
                                   "ignore to skip the passages that are not candidates)",
                                   quote(entry.pid), query.candidates.size(), quote(entry.qid), mined_dir,
                                   kMinedCandidatesTsv));
    }
    scores[q->second][c->second] = entry.score;
    tie_order[q->second][c->second] = entry.rank;
  }

  // Candidates the run does not score.
  int64_t first_query = -1, first_candidate = -1;
  for (size_t q = 0; q < mined.size(); ++q) {
    const size_t n = mined[q].candidates.size();
    if (scores[q].empty()) {
      scores[q].assign(n, std::nullopt);
      tie_order[q].assign(n, 0);
    }
    int64_t unscored = 0;
    for (size_t c = 0; c < n; ++c) {
      if (scores[q][c]) continue;
      if (first_query < 0) {
        first_query = static_cast<int64_t>(q);
        first_candidate = static_cast<int64_t>(c);
      }
      ++unscored;
    }
    unscored_candidates_ += unscored;
    queries_with_unscored_ += unscored > 0 ? 1 : 0;
  }
  if (unscored_candidates_ > 0 && missing == MissingCandidates::error) {
    const MinedQuery& q = mined[static_cast<size_t>(first_query)];
    throw_data_error(run_path, 0,
                     fmt::format("{} mined candidates of {} queries are not in the run (first: query {} passage {}, "
                                 "candidate {} in {}), expected a score for every candidate (score all of {}/{}, or "
                                 "pass --missing last to rank them after the scored ones)",
                                 unscored_candidates_, queries_with_unscored_, quote(q.qid),
                                 quote(q.candidates[static_cast<size_t>(first_candidate)].pid), first_candidate + 1,
                                 candidates_file, mined_dir, kMinedCandidatesTsv));
  }
  lists_.reserve(mined.size());
  for (size_t q = 0; q < mined.size(); ++q) lists_.push_back(teacher_list(scores[q], tie_order[q]));
}

std::vector<RunEntry> teacher_run_entries(const std::vector<MinedQuery>& mined, const std::vector<TeacherList>& lists,
                                          const std::string& tag) {
  DGR_CHECK(mined.size() == lists.size(), "{} mined queries but {} teacher lists", mined.size(), lists.size());
  std::vector<RunEntry> run;
  for (size_t q = 0; q < mined.size(); ++q) {
    const size_t n = mined[q].candidates.size();
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return lists[q].rank[a] < lists[q].rank[b]; });
    for (size_t c : order) {
      run.push_back({mined[q].qid, mined[q].candidates[c].pid, lists[q].rank[c], lists[q].score[c], tag});
    }
  }
  return run;
}

std::optional<std::unordered_set<std::string>> read_index_pids(const std::string& index_dir,
                                                               const std::string& pids_sha256) {
  const std::string path = (fs::path(index_dir) / "pids.txt").string();
  std::error_code ec;
  if (index_dir.empty() || !fs::exists(path, ec)) return std::nullopt;
  if (files::sha256_file(path) != pids_sha256) return std::nullopt;
  std::unordered_set<std::string> pids;
  LineReader reader(path);
  std::string line;
  while (reader.next(line)) {
    if (!line.empty()) pids.insert(line);
  }
  return pids;
}

}  // namespace dgr::data
