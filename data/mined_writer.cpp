// The mined directory's writer and mining's labels (see mined_writer.h).
#include "data/mined_writer.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"
#include "common/text.h"
#include "data/trec.h"

namespace fs = std::filesystem;

namespace dgr::data {
namespace {

using nlohmann::json;

json file_entry(const std::string& path) {
  return {{"sha256", files::sha256_file(path)}, {"bytes", static_cast<uint64_t>(fs::file_size(path))}};
}

void check_out_dir(const std::string& out_dir, bool force) {
  std::error_code ec;
  DGR_CHECK_AS(ConfigError, !fs::exists(out_dir, ec) || is_mined_dir(out_dir) || force,
               "output directory {} exists and is not a mined directory (no {} of format {}): remove it, choose "
               "another --out, or pass --force to replace it",
               out_dir, kMinedManifestFile, kMinedFormat);
}

constexpr const char* kResumeFile = "resume.json";
constexpr const char* kResumeFormat = "dgr-mine-partial";

}  // namespace

PositiveLabels read_positive_labels(const std::string& qrels_path, const std::vector<Query>& queries) {
  PositiveLabels positives;
  for (const auto& r : read_qrels(qrels_path, nullptr, &queries)) {
    if (r.grade >= 1) positives[r.qid].insert(r.pid);
  }
  return positives;
}

void label_candidates(MinedQuery& query, const PositiveLabels& labels) {
  auto pos = labels.find(query.qid);
  for (MinedCandidate& c : query.candidates) c.positive = pos != labels.end() && pos->second.count(c.pid) > 0;
}

bool is_mined_dir(const std::string& dir) {
  const fs::path manifest = fs::path(dir) / kMinedManifestFile;
  std::error_code ec;
  if (!fs::exists(manifest, ec)) return false;
  json j = json::parse(files::read_all(manifest.string()), nullptr, /*allow_exceptions=*/false);
  return j.is_object() && j.value("format", "") == kMinedFormat;
}

double MinedCounts::mean_candidates() const {
  return queries > 0 ? static_cast<double>(candidates) / static_cast<double>(queries) : 0;
}

struct MinedWriter::Impl {
  Impl(const std::string& out, bool force_replace, const MinedPassageSource& source, int keys)
      : out_dir(trimmed(out)),
        partial(out_dir + ".partial"),
        force(force_replace),
        passages(source),
        max_keys(keys),
        corpus(read_corpus(source.corpus_path)) {
    check_out_dir(out_dir, force);
  }
  static std::string trimmed(std::string dir) {
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    return dir;
  }
  std::string file(const char* name) const { return (fs::path(partial) / name).string(); }
  // Counts one mined line (and writes it unless it is being re-read from OUT.partial).
  void record(size_t index, const std::string& line, bool write);

  std::string out_dir, partial;
  bool force;
  MinedPassageSource passages;
  int max_keys;
  Corpus corpus;
  std::string fingerprint;
  files::AppendFile jsonl, tsv;
  std::vector<RunEntry> run;  // the stage-1 run, written at commit
  MinedCounts counts;
};

MinedWriter::MinedWriter(const std::string& out_dir, bool force, const MinedPassageSource& passages, int max_keys)
    : impl_(std::make_unique<Impl>(out_dir, force, passages, max_keys)) {}

MinedWriter::~MinedWriter() = default;

const MinedCounts& MinedWriter::counts() const { return impl_->counts; }
const std::string& MinedWriter::partial_dir() const { return impl_->partial; }

size_t MinedWriter::open(const std::string& fingerprint_json) {
  Impl& w = *impl_;
  const json fingerprint = json::parse(fingerprint_json);
  w.fingerprint = fingerprint.dump();
  std::error_code ec;
  const std::string resume_path = w.file(kResumeFile);
  if (fs::exists(w.partial, ec) && !w.force) {
    DGR_CHECK_AS(ConfigError, fs::exists(resume_path, ec), "{} exists but has no {}: not a mining in progress; remove "
                 "it, or pass --force to start over", w.partial, kResumeFile);
    const json resume = json::parse(files::read_all(resume_path), nullptr, /*allow_exceptions=*/false);
    DGR_CHECK_AS(ConfigError, resume.is_object() && resume.value("format", "") == kResumeFormat &&
                 resume.contains("fingerprint") && resume.contains("queries"),
                 "{}: not a resume record of `dgr mine`; remove {}, or pass --force to start over", resume_path, w.partial);
    if (resume["fingerprint"] != fingerprint) {
      std::string differ;
      for (const auto& [key, value] : fingerprint.items()) {
        if (!resume["fingerprint"].contains(key) || resume["fingerprint"][key] != value) differ += (differ.empty() ? "" : ", ") + key;
      }
      for (const auto& [key, value] : resume["fingerprint"].items()) {
        if (!fingerprint.contains(key)) differ += (differ.empty() ? "" : ", ") + key;
      }
      throw ConfigError(fmt::format("{} holds a mining of another run (these differ: {}): run the same command as before to "
                                    "continue it, or pass --force to start over (it is removed)", w.partial, differ));
    }
    const auto queries = resume["queries"].get<size_t>();
    const auto jsonl_bytes = resume.at("candidates_jsonl_bytes").get<uint64_t>();
    const auto tsv_bytes = resume.at("candidates_tsv_bytes").get<uint64_t>();
    DGR_CHECK_AS(DataError, fs::exists(w.file(kMinedCandidatesFile), ec) && fs::exists(w.file(kMinedCandidatesTsv), ec) &&
                 fs::file_size(w.file(kMinedCandidatesFile)) >= jsonl_bytes &&
                 fs::file_size(w.file(kMinedCandidatesTsv)) >= tsv_bytes,
                 "{}: the files are shorter than {} records (damaged?): remove {}, or pass --force to start over",
                 w.partial, resume_path, w.partial);
    // Re-read the durable lines: the counts and the run come back exactly.
    {
      std::ifstream in(w.file(kMinedCandidatesFile), std::ios::binary);
      std::string line;
      uint64_t at = 0;
      for (size_t q = 0; q < queries; ++q) {
        DGR_CHECK_AS(DataError, std::getline(in, line) && at + line.size() + 1 <= jsonl_bytes,
                     "{}: fewer than the {} lines {} records: remove {}, or pass --force", w.file(kMinedCandidatesFile),
                     queries, resume_path, w.partial);
        at += line.size() + 1;
        w.record(q, line, /*write=*/false);
      }
      DGR_CHECK_AS(DataError, at == jsonl_bytes, "{}: {} lines are {} bytes, {} records {}: remove {}, or pass --force",
                   w.file(kMinedCandidatesFile), queries, at, resume_path, jsonl_bytes, w.partial);
    }
    w.jsonl.open(w.file(kMinedCandidatesFile), jsonl_bytes);
    w.tsv.open(w.file(kMinedCandidatesTsv), tsv_bytes);
    return queries;
  }
  fs::remove_all(w.partial, ec);
  fs::create_directories(w.partial, ec);
  DGR_CHECK_AS(SystemError, !ec, "cannot create {}: {}", w.partial, ec.message());
  w.jsonl.open(w.file(kMinedCandidatesFile), 0);
  w.tsv.open(w.file(kMinedCandidatesTsv), 0);
  w.tsv.write("qid\tpid\trank\tquery\ttitle\ttext\n");
  checkpoint();
  return 0;
}

void MinedWriter::checkpoint() {
  Impl& w = *impl_;
  DGR_CHECK(!w.fingerprint.empty(), "MinedWriter: open() before checkpoint()");
  w.jsonl.sync();
  w.tsv.sync();
  json resume = {{"format", kResumeFormat}, {"version", 1}, {"fingerprint", json::parse(w.fingerprint)},
                 {"queries", w.counts.queries}, {"candidates_jsonl_bytes", w.jsonl.bytes()},
                 {"candidates_tsv_bytes", w.tsv.bytes()}};
  files::AtomicFile file(w.file(kResumeFile));
  file.write(resume.dump(2) + "\n");
  file.commit();
}

void MinedWriter::add(size_t index, const std::string& line) { impl_->record(index, line, /*write=*/true); }

void MinedWriter::Impl::record(size_t index, const std::string& line, bool write) {
  Impl& w = *this;
  DGR_CHECK(!w.fingerprint.empty(), "MinedWriter: open() before adding lines");
  DGR_CHECK(index == static_cast<size_t>(w.counts.queries), "mined line of query {} arrives after {} queries", index,
            w.counts.queries);
  MinedQuery mined = parse_mined_query(line, /*with_keys=*/true, kMinedCandidatesFile, index + 1);
  if (write) w.jsonl.write(line + "\n");
  ++w.counts.queries;
  bool any_positive = false;
  for (size_t r = 0; r < mined.candidates.size(); ++r) {
    const auto& c = mined.candidates[r];
    auto it = w.corpus.index_of.find(c.pid);
    DGR_CHECK_AS(DataError, it != w.corpus.index_of.end(),
                 "passage {} of the index {} is not in {}: the index was built from another corpus (rebuild it with "
                 "`dgr index --data {}`)", c.pid, w.passages.index_dir, w.passages.corpus_path, w.passages.data_dir);
    const auto& passage = w.corpus.passages[it->second];
    if (write)
      w.tsv.write(fmt::format("{}\t{}\t{}\t{}\t{}\t{}\n", mined.qid, c.pid, r + 1, text::tsv_field(mined.text),
                            text::tsv_field(passage.title), text::tsv_field(passage.text)));
    w.run.push_back({mined.qid, c.pid, static_cast<int>(r + 1), c.score, "dgr"});
    any_positive = any_positive || c.positive;
    w.counts.positives += c.positive ? 1 : 0;
    w.counts.keys += static_cast<int64_t>(c.keys.size());
    w.counts.truncated_key_lists += c.keys.size() == static_cast<size_t>(w.max_keys) ? 1 : 0;
  }
  w.counts.candidates += static_cast<int64_t>(mined.candidates.size());
  w.counts.with_positive += any_positive ? 1 : 0;
  w.counts.without_candidates += mined.candidates.empty() ? 1 : 0;
}

void MinedWriter::commit(const std::string& provenance_json, int ranks, double seconds, double queries_per_second) {
  Impl& w = *impl_;
  w.jsonl.sync();
  w.tsv.sync();
  w.jsonl.close();
  w.tsv.close();
  const fs::path tmp(w.partial);
  write_trec_run((tmp / kMinedRunFile).string(), w.run);
  json manifest = json::parse(provenance_json);
  DGR_CHECK(manifest.is_object(), "MinedWriter::commit: the provenance is not a JSON object: {}", provenance_json);
  const MinedCounts& c = w.counts;
  manifest["format"] = kMinedFormat;
  manifest["version"] = kMinedFormatVersion;
  manifest["counts"] = {{"queries", c.queries}, {"queries_with_positive", c.with_positive},
                        {"queries_without_candidates", c.without_candidates},
                        {"candidates", c.candidates}, {"mean_candidates", c.mean_candidates()},
                        {"positives", c.positives}, {"keys", c.keys},
                        {"candidates_at_max_keys", c.truncated_key_lists}, {"ranks", ranks}, {"seconds", seconds},
                        {"queries_per_second", queries_per_second}};
  manifest["files"] = {{kMinedCandidatesFile, file_entry((tmp / kMinedCandidatesFile).string())},
                       {kMinedCandidatesTsv, file_entry((tmp / kMinedCandidatesTsv).string())},
                       {kMinedRunFile, file_entry((tmp / kMinedRunFile).string())}};
  {
    files::AtomicFile file((tmp / kMinedManifestFile).string());
    file.write(manifest.dump(2) + "\n");
    file.commit();
  }
  std::error_code ec;
  fs::remove(tmp / kResumeFile, ec);
  // OUT.partial -> OUT (an existing OUT moved aside first, removed after).
  check_out_dir(w.out_dir, w.force);
  const std::string old = w.out_dir + ".old." + std::to_string(::getpid());
  const bool moved_old = fs::exists(w.out_dir, ec);
  if (moved_old) {
    fs::rename(w.out_dir, old, ec);
    DGR_CHECK_AS(SystemError, !ec, "cannot move the old {} aside: {}", w.out_dir, ec.message());
  }
  fs::rename(w.partial, w.out_dir, ec);
  if (ec) {
    std::error_code ignored;
    if (moved_old) fs::rename(old, w.out_dir, ignored);
    throw SystemError(fmt::format("cannot rename {} to {}: {}", w.partial, w.out_dir, ec.message()));
  }
  if (moved_old) fs::remove_all(old, ec);
}

}  // namespace dgr::data
