// The mined directory's writer and mining's labels (see mined_writer.h).
#include "data/mined_writer.h"

#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"
#include "data/trec.h"

namespace fs = std::filesystem;

namespace dgr::data {
namespace {

using nlohmann::json;

// A TSV field: tabs and line breaks become spaces (candidates.tsv has one pair per line).
std::string tsv_field(std::string s) {
  for (char& c : s) {
    if (c == '\t' || c == '\n' || c == '\r') c = ' ';
  }
  return s;
}

json file_entry(const std::string& path) {
  return {{"sha256", files::sha256_file(path)}, {"bytes", static_cast<uint64_t>(fs::file_size(path))}};
}

files::AtomicDir open_out_dir(const std::string& out_dir, bool force) {
  std::error_code ec;
  DGR_CHECK_AS(ConfigError, !fs::exists(out_dir, ec) || is_mined_dir(out_dir) || force,
               "output directory {} exists and is not a mined directory (no {} of format {}): remove it, choose "
               "another --out, or pass --force to replace it",
               out_dir, kMinedManifestFile, kMinedFormat);
  return files::AtomicDir(out_dir, /*replace=*/true);
}

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
  Impl(const std::string& out, bool force, const MinedPassageSource& source, int keys)
      : dir(open_out_dir(out, force)),
        passages(source),
        max_keys(keys),
        corpus(read_corpus(source.corpus_path)),
        jsonl((fs::path(dir.tmp_dir()) / kMinedCandidatesFile).string()),
        tsv((fs::path(dir.tmp_dir()) / kMinedCandidatesTsv).string()) {
    tsv.write("qid\tpid\trank\tquery\ttitle\ttext\n");
  }

  files::AtomicDir dir;
  MinedPassageSource passages;
  int max_keys;
  Corpus corpus;
  files::AtomicFile jsonl, tsv;
  std::vector<RunEntry> run;  // the stage-1 run, written at commit
  MinedCounts counts;
};

MinedWriter::MinedWriter(const std::string& out_dir, bool force, const MinedPassageSource& passages, int max_keys)
    : impl_(std::make_unique<Impl>(out_dir, force, passages, max_keys)) {}

MinedWriter::~MinedWriter() = default;

const MinedCounts& MinedWriter::counts() const { return impl_->counts; }

void MinedWriter::add(size_t index, const std::string& line) {
  Impl& w = *impl_;
  MinedQuery mined = parse_mined_query(line, /*with_keys=*/true, kMinedCandidatesFile, index + 1);
  w.jsonl.write(line + "\n");
  ++w.counts.queries;
  bool any_positive = false;
  for (size_t r = 0; r < mined.candidates.size(); ++r) {
    const auto& c = mined.candidates[r];
    auto it = w.corpus.index_of.find(c.pid);
    DGR_CHECK_AS(DataError, it != w.corpus.index_of.end(),
                 "passage {} of the index {} is not in {}: the index was built from another corpus (rebuild it with "
                 "`dgr index --data {}`)", c.pid, w.passages.index_dir, w.passages.corpus_path, w.passages.data_dir);
    const auto& passage = w.corpus.passages[it->second];
    w.tsv.write(fmt::format("{}\t{}\t{}\t{}\t{}\t{}\n", mined.qid, c.pid, r + 1, tsv_field(mined.text),
                            tsv_field(passage.title), tsv_field(passage.text)));
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
  w.jsonl.commit();
  w.tsv.commit();
  const fs::path tmp(w.dir.tmp_dir());
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
  w.dir.commit();
}

}  // namespace dgr::data
