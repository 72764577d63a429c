// The prepared distillation data set (see distill_data.h): HDF5 shards written and read through the checked
// HDF5 wrapper (data/hdf5_file.h), as plain 1-D datasets whose checksum is the shard's sha256 in the manifest.
//
// Note [Shard layout]: one file per shard, every dataset 1-D, little-endian, contiguous; flat arrays with
// offsets (CSR), so a query with no candidates, a candidate with no keys, an empty last shard part are all
// plain zero-length ranges. Q queries, C candidates, K keys in the shard:
//   queries/qid_offsets [Q+1] i64, queries/qid_bytes [.] u8        qid of query q = bytes[off[q], off[q+1])
//   queries/token_offsets [Q+1] i64, queries/tokens [.] i32
//   queries/candidate_offsets [Q+1] i64                             candidates of q = [off[q], off[q+1])
//   candidates/doc [C] i32, positive [C] i8, retriever_score [C] f64, teacher_score [C] f64,
//   candidates/teacher_rank [C] i32, candidates/key_offsets [C+1] i64
//   keys/view [K] i8, keys/count [K] u64, keys/score [K] f32, keys/token_offsets [K+1] i64, keys/tokens [.] i32
// Root attributes: format = "dgr-distill-shard", version, shard, first_example, num_examples (= Q).
// Integrity: the shard's sha256 is in manifest.json and checked the first time a process opens it; the
// array lengths and the offsets are checked on open (lengths, first and last offsets) and on every load
// (the offsets of the example read).
#include "data/distill_data.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <type_traits>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"
#include "data/hdf5_file.h"
#include "data/mined.h"

namespace fs = std::filesystem;

namespace dgr::data {
namespace {

using nlohmann::json;
constexpr const char* kReprepare = "re-run `dgr prepare`";

// Every failure of a shard's HDF5 calls is a DataError that says what to do.
const h5::ErrorStyle kShardErrors{/*data_set=*/true, "is the file a complete prepared shard? re-run `dgr prepare`"};

template <typename T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, int64_t>) return DType::kInt64;
  if constexpr (std::is_same_v<T, int32_t>) return DType::kInt32;
  if constexpr (std::is_same_v<T, int8_t>) return DType::kInt8;
  if constexpr (std::is_same_v<T, uint8_t>) return DType::kUInt8;
  if constexpr (std::is_same_v<T, uint64_t>) return DType::kUInt64;
  if constexpr (std::is_same_v<T, float>) return DType::kFloat32;
  if constexpr (std::is_same_v<T, double>) return DType::kFloat64;
}

// Every dataset of a shard, in this order (Note [Shard layout]).
enum Column : int {
  kQidOffsets, kQidBytes, kQueryTokenOffsets, kQueryTokens, kCandidateOffsets,
  kDoc, kPositive, kRetrieverScore, kTeacherScore, kTeacherRank, kKeyOffsets,
  kKeyView, kKeyCount, kKeyScore, kKeyTokenOffsets, kKeyTokens, kNumColumns
};
struct ColumnInfo {
  const char* name;
  DType dtype;  // stored little-endian
};
const ColumnInfo kColumns[kNumColumns] = {
    {"queries/qid_offsets", DType::kInt64},       {"queries/qid_bytes", DType::kUInt8},
    {"queries/token_offsets", DType::kInt64},     {"queries/tokens", DType::kInt32},
    {"queries/candidate_offsets", DType::kInt64}, {"candidates/doc", DType::kInt32},
    {"candidates/positive", DType::kInt8},        {"candidates/retriever_score", DType::kFloat64},
    {"candidates/teacher_score", DType::kFloat64}, {"candidates/teacher_rank", DType::kInt32},
    {"candidates/key_offsets", DType::kInt64},    {"keys/view", DType::kInt8},
    {"keys/count", DType::kUInt64},               {"keys/score", DType::kFloat32},
    {"keys/token_offsets", DType::kInt64},        {"keys/tokens", DType::kInt32},
};
const char* const kGroups[] = {"queries", "candidates", "keys"};

template <typename T>
void write_column(h5::File& file, Column column, const std::vector<T>& values) {
  const ColumnInfo& info = kColumns[column];
  DGR_CHECK(dtype_of<T>() == info.dtype, "column {} written with the wrong type", info.name);
  h5::WriteOptions plain;
  plain.plain = true;  // contiguous, no filter: Note [Shard layout]
  file.write_array(NamedArray::copy_of(info.name, {static_cast<int64_t>(values.size())}, info.dtype, values.data()),
                   plain);
}

std::string shard_file_name(size_t shard) { return fmt::format("shard-{:05d}.h5", shard); }

// ------------------------------------------------------------------------------------------ the writer

// The flat arrays of one shard (Note [Shard layout]).
struct ShardArrays {
  std::vector<int64_t> qid_offsets{0}, query_token_offsets{0}, candidate_offsets{0}, key_offsets{0},
      key_token_offsets{0};
  std::vector<uint8_t> qid_bytes;
  std::vector<int32_t> query_tokens, doc, teacher_rank, key_tokens;
  std::vector<int8_t> positive, key_view;
  std::vector<double> retriever_score, teacher_score;
  std::vector<uint64_t> key_count;
  std::vector<float> key_score;

  void add(const DistillExample& e) {
    qid_bytes.insert(qid_bytes.end(), e.qid.begin(), e.qid.end());
    qid_offsets.push_back(static_cast<int64_t>(qid_bytes.size()));
    query_tokens.insert(query_tokens.end(), e.query_tokens.begin(), e.query_tokens.end());
    query_token_offsets.push_back(static_cast<int64_t>(query_tokens.size()));
    for (const DistillCandidate& c : e.candidates) {
      doc.push_back(c.doc);
      positive.push_back(c.positive ? 1 : 0);
      retriever_score.push_back(c.retriever_score);
      teacher_score.push_back(c.teacher_score);
      teacher_rank.push_back(c.teacher_rank);
      for (const CachedKey& k : c.keys) {
        key_view.push_back(k.view);
        key_count.push_back(k.count);
        key_score.push_back(k.score);
        key_tokens.insert(key_tokens.end(), k.tokens.begin(), k.tokens.end());
        key_token_offsets.push_back(static_cast<int64_t>(key_tokens.size()));
      }
      key_offsets.push_back(static_cast<int64_t>(key_view.size()));
    }
    candidate_offsets.push_back(static_cast<int64_t>(doc.size()));
  }

  void write(const std::string& path, size_t shard, int64_t first_example) const {
    h5::File file = h5::File::create(path, kShardErrors);
    for (const char* group : kGroups) file.create_group(group);
    write_column(file, kQidOffsets, qid_offsets);
    write_column(file, kQidBytes, qid_bytes);
    write_column(file, kQueryTokenOffsets, query_token_offsets);
    write_column(file, kQueryTokens, query_tokens);
    write_column(file, kCandidateOffsets, candidate_offsets);
    write_column(file, kDoc, doc);
    write_column(file, kPositive, positive);
    write_column(file, kRetrieverScore, retriever_score);
    write_column(file, kTeacherScore, teacher_score);
    write_column(file, kTeacherRank, teacher_rank);
    write_column(file, kKeyOffsets, key_offsets);
    write_column(file, kKeyView, key_view);
    write_column(file, kKeyCount, key_count);
    write_column(file, kKeyScore, key_score);
    write_column(file, kKeyTokenOffsets, key_token_offsets);
    write_column(file, kKeyTokens, key_tokens);
    file.set_string_attr("format", kDistillShardFormat, "/", /*fixed_length=*/true);
    file.set_int_attr("version", kDistillFormatVersion);
    file.set_int_attr("shard", static_cast<int64_t>(shard));
    file.set_int_attr("first_example", first_example);
    file.set_int_attr("num_examples", static_cast<int64_t>(qid_offsets.size() - 1));
    file.close();  // checked: a full disk can show up only here
  }
};

void check_example(const DistillExample& e) {
  DGR_CHECK_AS(DataError, !e.qid.empty(), "a prepared example needs a query id");
  std::vector<bool> seen(e.candidates.size() + 1, false);
  for (size_t c = 0; c < e.candidates.size(); ++c) {
    const DistillCandidate& cand = e.candidates[c];
    DGR_CHECK_AS(DataError, cand.doc >= 0, "query '{}' candidate {}: document {} is negative", e.qid, c + 1, cand.doc);
    DGR_CHECK_AS(DataError, std::isfinite(cand.retriever_score) && std::isfinite(cand.teacher_score),
                 "query '{}' candidate {}: scores must be finite", e.qid, c + 1);
    int32_t r = cand.teacher_rank;
    DGR_CHECK_AS(DataError, r >= 1 && static_cast<size_t>(r) <= e.candidates.size() && !seen[static_cast<size_t>(r)],
                 "query '{}' candidate {}: teacher rank {} is not a unique rank in 1..{}", e.qid, c + 1, r,
                 e.candidates.size());
    seen[static_cast<size_t>(r)] = true;
    for (size_t k = 0; k < cand.keys.size(); ++k) {
      const CachedKey& key = cand.keys[k];
      DGR_CHECK_AS(DataError, key.view >= 0 && key.view <= 2 && !key.tokens.empty(),
                   "query '{}' candidate {} key {}: view {} with {} tokens, expected view 0..2 and >= 1 token", e.qid,
                   c + 1, k + 1, key.view, key.tokens.size());
    }
  }
}

bool is_prepared_dir(const std::string& dir) {
  const fs::path manifest = fs::path(dir) / kDistillManifestFile;
  std::error_code ec;
  if (!fs::exists(manifest, ec)) return false;
  json j = json::parse(files::read_all(manifest.string()), nullptr, /*allow_exceptions=*/false);
  return j.is_object() && j.value("format", "") == kDistillFormat;
}

}  // namespace

struct DistillWriter::Impl {
  Impl(std::string out, int64_t size) : out_dir(std::move(out)), shard_size(size), dir(make_dir(out_dir)) {}
  static files::AtomicDir make_dir(const std::string& out) {
    std::error_code ec;
    bool exists = fs::exists(out, ec);
    DGR_CHECK_AS(ConfigError, !exists || is_prepared_dir(out),
                 "output directory {} exists and is not a prepared data set (no {} of format {}): remove it or "
                 "choose another --out",
                 out, kDistillManifestFile, kDistillFormat);
    return files::AtomicDir(out, /*replace=*/true);
  }

  void flush_shard() {
    if (num_pending == 0) return;
    const size_t shard = manifest.shards.size();
    const std::string name = shard_file_name(shard);
    const std::string path = (fs::path(dir.tmp_dir()) / name).string();
    const int64_t first = manifest.num_examples;
    pending.write(path, shard, first);
    h5::fsync_path(path, kShardErrors);
    DistillManifest::Shard s;
    s.file = name;
    s.first_example = first;
    s.num_examples = num_pending;
    s.sha256 = files::sha256_file(path);
    s.num_bytes = static_cast<uint64_t>(fs::file_size(path));
    manifest.shards.push_back(s);
    manifest.num_examples += num_pending;
    pending = ShardArrays();
    num_pending = 0;
  }

  std::string out_dir;
  int64_t shard_size;
  files::AtomicDir dir;
  ShardArrays pending;
  int64_t num_pending = 0;
  DistillManifest manifest;
  bool committed = false;
};

DistillWriter::DistillWriter(std::string out_dir, int64_t shard_size) {
  DGR_CHECK_AS(ConfigError, shard_size > 0, "--shard-size must be positive, got {}", shard_size);
  impl_ = std::make_unique<Impl>(std::move(out_dir), shard_size);
}

DistillWriter::~DistillWriter() = default;

void DistillWriter::add(const DistillExample& example) {
  DGR_CHECK(!impl_->committed, "DistillWriter::add after commit");
  check_example(example);
  impl_->pending.add(example);
  if (++impl_->num_pending == impl_->shard_size) impl_->flush_shard();
}

DistillManifest DistillWriter::commit(const DistillProvenance& provenance) {
  Impl& w = *impl_;
  DGR_CHECK(!w.committed, "DistillWriter::commit twice");
  w.flush_shard();
  DGR_CHECK_AS(DataError, w.manifest.num_examples > 0, "{}: no example to write", w.out_dir);
  DistillManifest& m = w.manifest;
  m.shard_size = w.shard_size;
  m.max_keys = provenance.max_keys;
  m.tokenizer_sha256 = provenance.tokenizer_sha256;
  m.fm_index_sha256 = provenance.fm_index_sha256;
  m.pids_sha256 = provenance.pids_sha256;
  json j = json::parse(provenance.extra_json, nullptr, /*allow_exceptions=*/false);
  DGR_CHECK(j.is_object(), "DistillProvenance::extra_json is not a JSON object: {}", provenance.extra_json);
  j["format"] = kDistillFormat;
  j["version"] = kDistillFormatVersion;
  j["num_examples"] = m.num_examples;
  j["shard_size"] = m.shard_size;
  j["max_keys"] = m.max_keys;
  j["index"] = {{"tokenizer_sha256", m.tokenizer_sha256}, {"fm_index_sha256", m.fm_index_sha256},
                {"pids_sha256", m.pids_sha256}};
  json shards = json::array();
  for (const auto& s : m.shards) {
    shards.push_back({{"file", s.file}, {"first_example", s.first_example}, {"num_examples", s.num_examples},
                      {"sha256", s.sha256}, {"bytes", s.num_bytes}});
  }
  j["shards"] = std::move(shards);
  m.json = j.dump(2);
  {
    files::AtomicFile file((fs::path(w.dir.tmp_dir()) / kDistillManifestFile).string());
    file.write(m.json + "\n");
    file.commit();
  }
  w.dir.commit();
  w.committed = true;
  return m;
}

// ------------------------------------------------------------------------------------------ prepare

PrepareSummary prepare_distill_data(const PrepareOptions& options) {
  DGR_CHECK_AS(ConfigError, !options.mined_dir.empty() && !options.teacher_run.empty() && !options.out_dir.empty(),
               "dgr prepare needs --mined, --teacher and --out");
  DGR_CHECK_AS(ConfigError, options.min_positives >= 0 && options.min_negatives >= 0,
               "--min-positives and --min-negatives must be >= 0");
  DGR_CHECK_AS(ConfigError, !std::isnan(options.max_score_gap), "--max-score-gap must be a number (inf = off)");
  const MinedManifest mined = read_mined_manifest(options.mined_dir);
  const auto lists = read_mined_queries(options.mined_dir, /*with_keys=*/false);
  auto corpus_pids = read_index_pids(mined.index_dir, mined.pids_sha256);
  TeacherRun teacher(options.teacher_run, lists, MissingCandidates::error, options.mined_dir,
                     corpus_pids ? &*corpus_pids : nullptr);

  PrepareSummary summary;
  DistillWriter writer(options.out_dir, options.shard_size);
  MinedReader reader(options.mined_dir, /*with_keys=*/true);
  MinedQuery q;
  size_t index = 0;
  std::vector<double> abs_gaps;
  while (reader.next(q)) {
    DGR_CHECK_AS(DataError, index < lists.size() && lists[index].qid == q.qid,
                 "{}: changed while it was read (line {}): run dgr prepare again", reader.path(), reader.line());
    const TeacherList& list = teacher.lists()[index++];
    ++summary.mined_queries;
    int positives = 0, negatives = 0;
    const MinedCandidate *top_positive = nullptr, *top_negative = nullptr;
    for (const auto& c : q.candidates) {
      if (c.positive) {
        ++positives;
        if (top_positive == nullptr) top_positive = &c;
      } else {
        ++negatives;
        if (top_negative == nullptr) top_negative = &c;
      }
    }
    if (top_positive != nullptr && top_negative != nullptr) {
      const double gap = top_positive->score - top_negative->score;
      abs_gaps.push_back(std::abs(gap));
      summary.positive_first += gap > 0 ? 1 : 0;
    }
    if (positives < options.min_positives) {
      ++summary.dropped_no_positive;
      continue;
    }
    if (negatives < options.min_negatives) {
      ++summary.dropped_few_negatives;
      continue;
    }
    if (top_positive != nullptr && top_negative != nullptr &&
        !(top_positive->score < top_negative->score + options.max_score_gap)) {
      ++summary.dropped_score_gap;
      continue;
    }
    DistillExample e;
    e.qid = q.qid;
    e.query_tokens = std::move(q.tokens);
    e.candidates.reserve(q.candidates.size());
    for (size_t c = 0; c < q.candidates.size(); ++c) {
      MinedCandidate& m = q.candidates[c];
      DistillCandidate d;
      d.doc = m.doc;
      d.positive = m.positive;
      d.retriever_score = m.score;
      d.teacher_score = list.score[c];
      d.teacher_rank = list.rank[c];
      d.keys = std::move(m.keys);
      summary.keys += static_cast<int64_t>(d.keys.size());
      e.candidates.push_back(std::move(d));
    }
    summary.candidates += static_cast<int64_t>(e.candidates.size());
    writer.add(e);
    ++summary.kept;
  }
  DGR_CHECK_AS(DataError, summary.kept > 0,
               "{}: no query passed the filter ({} mined: {} with fewer than {} positives, {} with fewer than {} "
               "negatives, {} whose top positive outscores the top negative by >= {}): mine deeper (--depth) or loosen "
               "--min-negatives / --max-score-gap",
               options.mined_dir, summary.mined_queries, summary.dropped_no_positive, options.min_positives,
               summary.dropped_few_negatives, options.min_negatives, summary.dropped_score_gap, options.max_score_gap);

  summary.gap_queries = static_cast<int64_t>(abs_gaps.size());
  if (!abs_gaps.empty()) {
    std::sort(abs_gaps.begin(), abs_gaps.end());
    const size_t n = abs_gaps.size();
    summary.median_abs_gap = n % 2 == 1 ? abs_gaps[n / 2] : (abs_gaps[n / 2 - 1] + abs_gaps[n / 2]) / 2;
    summary.positive_first /= static_cast<double>(n);
  }
  DistillProvenance provenance;
  provenance.max_keys = mined.max_keys;
  provenance.tokenizer_sha256 = mined.tokenizer_sha256;
  provenance.fm_index_sha256 = mined.fm_index_sha256;
  provenance.pids_sha256 = mined.pids_sha256;
  json gap = std::isinf(options.max_score_gap) ? json("inf") : json(options.max_score_gap);
  json extra = {
      {"filter", {{"min_positives", options.min_positives}, {"min_negatives", options.min_negatives},
                  {"max_score_gap", gap},
                  {"rule", "keep a query with >= min_positives positives, >= min_negatives negatives and retriever "
                           "score(top positive) < score(top negative) + max_score_gap; a dropped query counts under "
                           "the first rule it fails"}}},
      {"score_gaps", {{"queries", summary.gap_queries}, {"median_abs_gap", summary.median_abs_gap},
                      {"positive_first", summary.positive_first},
                      {"rule", "over the mined queries with a positive and a negative: gap = retriever score(top "
                               "positive) - score(top negative); constants by trainer/distill_loss.h: M = median "
                               "|gap| / 2, D = M / 3, LTRGR margins M and 4M/3, gen weight 500 M / 300"}}},
      {"counts", {{"mined_queries", summary.mined_queries}, {"kept", summary.kept},
                  {"dropped_no_positive", summary.dropped_no_positive},
                  {"dropped_few_negatives", summary.dropped_few_negatives},
                  {"dropped_score_gap", summary.dropped_score_gap}, {"candidates", summary.candidates},
                  {"keys", summary.keys}}},
      {"sources", {{"mined_dir", fs::absolute(options.mined_dir).lexically_normal().string()},
                   {"mined_manifest_sha256", files::sha256_file((fs::path(options.mined_dir) / kMinedManifestFile).string())},
                   {"teacher_run", fs::absolute(options.teacher_run).lexically_normal().string()},
                   {"teacher_run_sha256", files::sha256_file(options.teacher_run)},
                   {"teacher_tag", teacher.tag()},
                   {"model", mined.model_path}, {"model_sha256", mined.model_sha256}}},
  };
  provenance.extra_json = extra.dump();
  DistillManifest written = writer.commit(provenance);
  summary.shards = static_cast<int64_t>(written.shards.size());
  return summary;
}

// ------------------------------------------------------------------------------------------ the reader

struct DistillDataset::Impl {
  std::string dir;
  bool verify = true;
  DistillManifest manifest;
  std::vector<bool> verified;       // [shard] sha256 checked in this process
  std::vector<int> opened;          // shards opened, first-open order
  std::vector<bool> ever_opened;    // [shard]
  // The open shard.
  int shard = -1;
  std::string path;
  std::optional<h5::File> file;
  int64_t lengths[kNumColumns] = {};
  std::vector<int64_t> qid_offsets, query_token_offsets, candidate_offsets;  // [Q+1]

  [[noreturn]] void fail(const std::string& message) const {
    throw DataError(fmt::format("{}: {} (damaged, or not written by `dgr prepare`: {})", path, message, kReprepare));
  }

  template <typename T>
  std::vector<T> read(Column column, int64_t begin, int64_t count) const {
    const char* name = kColumns[column].name;
    if (begin < 0 || count < 0 || begin + count > lengths[column]) {
      fail(fmt::format("{}: elements [{}, {}) are outside its {} elements", name, begin, begin + count, lengths[column]));
    }
    return file->read_range(name, begin, count, kColumns[column].dtype).values<T>();
  }

  // Offsets [begin, begin + count] of `column` must start at `lo`, never decrease and end at most at `hi`.
  void check_offsets(Column column, const std::vector<int64_t>& offsets, int64_t lo, int64_t hi) const {
    if (offsets.empty() || offsets.front() < lo) fail(fmt::format("{} does not start at {}", kColumns[column].name, lo));
    for (size_t i = 1; i < offsets.size(); ++i) {
      if (offsets[i] < offsets[i - 1] || offsets[i] > hi) {
        fail(fmt::format("{} [{}] = {} is not within [{}, {}]", kColumns[column].name, i, offsets[i], offsets[i - 1], hi));
      }
    }
  }

  void open_shard(int s) {
    file.reset();
    shard = -1;
    const DistillManifest::Shard& entry = manifest.shards[static_cast<size_t>(s)];
    path = (fs::path(dir) / entry.file).string();
    std::error_code ec;
    if (!fs::exists(path, ec)) {
      throw DataError(fmt::format("{}: missing, listed in {}/{} ({})", path, dir, kDistillManifestFile, kReprepare));
    }
    if (verify && !verified[static_cast<size_t>(s)]) {
      const std::string actual = files::sha256_file(path);
      if (actual != entry.sha256) {
        throw DataError(fmt::format("{}: sha256 {} does not match {} in {}/{} (damaged or changed after `dgr prepare`: "
                                    "{})",
                                    path, actual, entry.sha256, dir, kDistillManifestFile, kReprepare));
      }
      verified[static_cast<size_t>(s)] = true;
    }
    file.emplace(h5::File::open_read(path, kShardErrors));
    auto required_int = [&](const char* name) {
      std::optional<int64_t> value = file->int_attr(name);
      if (!value) fail(fmt::format("no attribute '{}' (not a prepared shard?)", name));
      return *value;
    };
    if (file->string_attr("format") != std::optional<std::string>(kDistillShardFormat)) {
      fail("attribute 'format' is not " + std::string(kDistillShardFormat));
    }
    int64_t version = required_int("version");
    if (version != kDistillFormatVersion) fail(fmt::format("shard version {}, this dgr reads {}", version, kDistillFormatVersion));
    int64_t num = required_int("num_examples"), first = required_int("first_example");
    if (num != entry.num_examples || first != entry.first_example) {
      fail(fmt::format("holds examples [{}, {}), the manifest says [{}, {})", first, first + num, entry.first_example,
                       entry.first_example + entry.num_examples));
    }
    for (int c = 0; c < kNumColumns; ++c) {
      const char* name = kColumns[c].name;
      if (!file->has_array(name)) fail(fmt::format("no dataset '{}'", name));
      h5::DatasetInfo info = file->describe(name);
      if (info.dtype != kColumns[c].dtype) fail(fmt::format("'{}' has the wrong element type", name));
      if (info.shape.size() != 1) fail(fmt::format("'{}' is not 1-D", name));
      lengths[c] = info.shape[0];
    }
    // Lengths against each other and the ends of the offsets (Note [Shard layout]).
    auto expect_length = [&](Column c, int64_t n) {
      if (lengths[c] != n) fail(fmt::format("'{}' has {} elements, expected {}", kColumns[c].name, lengths[c], n));
    };
    expect_length(kQidOffsets, num + 1);
    expect_length(kQueryTokenOffsets, num + 1);
    expect_length(kCandidateOffsets, num + 1);
    qid_offsets = read<int64_t>(kQidOffsets, 0, num + 1);
    query_token_offsets = read<int64_t>(kQueryTokenOffsets, 0, num + 1);
    candidate_offsets = read<int64_t>(kCandidateOffsets, 0, num + 1);
    check_offsets(kQidOffsets, qid_offsets, 0, lengths[kQidBytes]);
    check_offsets(kQueryTokenOffsets, query_token_offsets, 0, lengths[kQueryTokens]);
    check_offsets(kCandidateOffsets, candidate_offsets, 0, lengths[kDoc]);
    const int64_t candidates = candidate_offsets.back();
    if (qid_offsets.back() != lengths[kQidBytes] || query_token_offsets.back() != lengths[kQueryTokens]) {
      fail("the query offsets do not end at the end of their arrays");
    }
    for (Column c : {kDoc, kPositive, kRetrieverScore, kTeacherScore, kTeacherRank}) expect_length(c, candidates);
    expect_length(kKeyOffsets, candidates + 1);
    const int64_t keys = lengths[kKeyView];
    for (Column c : {kKeyCount, kKeyScore}) expect_length(c, keys);
    expect_length(kKeyTokenOffsets, keys + 1);
    auto key_ends = read<int64_t>(kKeyOffsets, candidates, 1);
    auto token_ends = read<int64_t>(kKeyTokenOffsets, keys, 1);
    if (key_ends[0] != keys || token_ends[0] != lengths[kKeyTokens]) fail("the key offsets do not end at the end of their arrays");
    shard = s;
    if (!ever_opened[static_cast<size_t>(s)]) {
      ever_opened[static_cast<size_t>(s)] = true;
      opened.push_back(s);
    }
  }

  DistillExample load(int64_t index) {
    DGR_CHECK(index >= 0 && index < manifest.num_examples, "{}: example {} is outside [0, {})", dir, index,
              manifest.num_examples);
    auto it = std::upper_bound(manifest.shards.begin(), manifest.shards.end(), index,
                               [](int64_t i, const DistillManifest::Shard& s) { return i < s.first_example; });
    const int s = static_cast<int>(it - manifest.shards.begin()) - 1;
    if (s != shard) open_shard(s);
    const int64_t local = index - manifest.shards[static_cast<size_t>(s)].first_example;
    const size_t l = static_cast<size_t>(local);
    DistillExample e;
    auto qid = read<uint8_t>(kQidBytes, qid_offsets[l], qid_offsets[l + 1] - qid_offsets[l]);
    e.qid.assign(qid.begin(), qid.end());
    e.query_tokens = read<int32_t>(kQueryTokens, query_token_offsets[l], query_token_offsets[l + 1] - query_token_offsets[l]);
    const int64_t c0 = candidate_offsets[l], n = candidate_offsets[l + 1] - c0;
    auto doc = read<int32_t>(kDoc, c0, n);
    auto positive = read<int8_t>(kPositive, c0, n);
    auto retriever = read<double>(kRetrieverScore, c0, n);
    auto teacher = read<double>(kTeacherScore, c0, n);
    auto rank = read<int32_t>(kTeacherRank, c0, n);
    auto key_offsets = read<int64_t>(kKeyOffsets, c0, n + 1);
    check_offsets(kKeyOffsets, key_offsets, 0, lengths[kKeyView]);
    const int64_t k0 = key_offsets.front(), nk = key_offsets.back() - k0;
    auto view = read<int8_t>(kKeyView, k0, nk);
    auto count = read<uint64_t>(kKeyCount, k0, nk);
    auto score = read<float>(kKeyScore, k0, nk);
    auto token_offsets = read<int64_t>(kKeyTokenOffsets, k0, nk + 1);
    check_offsets(kKeyTokenOffsets, token_offsets, 0, lengths[kKeyTokens]);
    const int64_t t0 = token_offsets.front();
    auto tokens = read<int32_t>(kKeyTokens, t0, token_offsets.back() - t0);
    e.candidates.resize(static_cast<size_t>(n));
    std::vector<bool> rank_seen(static_cast<size_t>(n) + 1, false);
    for (size_t c = 0; c < static_cast<size_t>(n); ++c) {
      DistillCandidate& d = e.candidates[c];
      d.doc = doc[c];
      d.positive = positive[c] != 0;
      d.retriever_score = retriever[c];
      d.teacher_score = teacher[c];
      d.teacher_rank = rank[c];
      if (d.doc < 0 || positive[c] < 0 || positive[c] > 1 || d.teacher_rank < 1 || d.teacher_rank > n ||
          rank_seen[static_cast<size_t>(d.teacher_rank)]) {
        fail(fmt::format("example {} (query '{}') candidate {}: document {}, positive {}, teacher rank {} are not valid",
                         index, e.qid, c + 1, d.doc, positive[c], d.teacher_rank));
      }
      rank_seen[static_cast<size_t>(d.teacher_rank)] = true;
      for (int64_t k = key_offsets[c]; k < key_offsets[c + 1]; ++k) {
        const size_t kl = static_cast<size_t>(k - k0);
        CachedKey key;
        key.view = view[kl];
        key.count = count[kl];
        key.score = score[kl];
        key.tokens.assign(tokens.begin() + (token_offsets[kl] - t0), tokens.begin() + (token_offsets[kl + 1] - t0));
        if (key.view < 0 || key.view > 2 || key.tokens.empty()) {
          fail(fmt::format("example {} (query '{}') candidate {}: key with view {} and {} tokens", index, e.qid, c + 1,
                           key.view, key.tokens.size()));
        }
        d.keys.push_back(std::move(key));
      }
    }
    return e;
  }
};

DistillDataset::DistillDataset(const std::string& prep_dir, bool verify_checksums) : impl_(std::make_unique<Impl>()) {
  Impl& d = *impl_;
  d.dir = prep_dir;
  d.verify = verify_checksums;
  const std::string path = (fs::path(prep_dir) / kDistillManifestFile).string();
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    throw DataError(fmt::format("{}: missing (not a directory written by `dgr prepare`, or an interrupted one: {})",
                                path, kReprepare));
  }
  DistillManifest& m = d.manifest;
  m.json = files::read_all(path);
  json j = json::parse(m.json, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const std::string& what) {
    throw DataError(fmt::format("{}: {} ({})", path, what, kReprepare));
  };
  if (!j.is_object() || j.value("format", "") != kDistillFormat) bad(fmt::format("not a prepared manifest (no \"format\": \"{}\")", kDistillFormat));
  if (j.value("version", -1) != kDistillFormatVersion) {
    bad(fmt::format("format version {}, this dgr reads version {}", j.value("version", -1), kDistillFormatVersion));
  }
  try {
    m.num_examples = j.at("num_examples").get<int64_t>();
    m.shard_size = j.at("shard_size").get<int64_t>();
    m.max_keys = j.at("max_keys").get<int>();
    m.tokenizer_sha256 = j.at("index").at("tokenizer_sha256").get<std::string>();
    m.fm_index_sha256 = j.at("index").at("fm_index_sha256").get<std::string>();
    m.pids_sha256 = j.at("index").at("pids_sha256").get<std::string>();
    for (const json& s : j.at("shards")) {
      DistillManifest::Shard shard;
      shard.file = s.at("file").get<std::string>();
      shard.first_example = s.at("first_example").get<int64_t>();
      shard.num_examples = s.at("num_examples").get<int64_t>();
      shard.sha256 = s.at("sha256").get<std::string>();
      shard.num_bytes = s.at("bytes").get<uint64_t>();
      m.shards.push_back(shard);
    }
  } catch (const json::exception& e) {
    bad(fmt::format("malformed manifest: {}", e.what()));
  }
  int64_t next = 0;
  for (size_t s = 0; s < m.shards.size(); ++s) {
    const auto& shard = m.shards[s];
    if (shard.first_example != next || shard.num_examples <= 0 || shard.num_examples > m.shard_size ||
        shard.file.find('/') != std::string::npos) {
      bad(fmt::format("shard {} ({}) holds examples [{}, {}), expected a non-empty run from {} of at most {}", s,
                      shard.file, shard.first_example, shard.first_example + shard.num_examples, next, m.shard_size));
    }
    next += shard.num_examples;
  }
  if (next != m.num_examples || m.num_examples <= 0) {
    bad(fmt::format("the shards hold {} examples, the manifest says {}", next, m.num_examples));
  }
  d.verified.assign(m.shards.size(), false);
  d.ever_opened.assign(m.shards.size(), false);
}

DistillDataset::~DistillDataset() = default;
DistillDataset::DistillDataset(DistillDataset&&) noexcept = default;
DistillDataset& DistillDataset::operator=(DistillDataset&&) noexcept = default;

int64_t DistillDataset::size() const { return impl_->manifest.num_examples; }
const DistillManifest& DistillDataset::manifest() const { return impl_->manifest; }
DistillExample DistillDataset::load(int64_t index) { return impl_->load(index); }
const std::vector<int>& DistillDataset::shards_opened() const { return impl_->opened; }

}  // namespace dgr::data
