// The prepared distillation data set (method.md section 7; format in docs/distillation.md): the queries that
// pass the filter, each a DistillExample, in fixed-size HDF5 shards plus manifest.json, and a reader that
// loads one example at a time from the shard that holds it. Written by `dgr prepare`; read by stage 2, one
// rank loading only the examples its EpochSampler gives it:
//   DistillDataset data(prep_dir);
//   EpochSampler sampler(data.size(), global_batch, seed, world.rank(), world.size());
//   for (int64_t i : sampler.next().examples) DistillExample e = data.load(i);
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/distill_example.h"

namespace dgr::data {

inline constexpr const char* kDistillFormat = "dgr-distill";
inline constexpr const char* kDistillShardFormat = "dgr-distill-shard";
inline constexpr int kDistillFormatVersion = 1;
inline constexpr const char* kDistillManifestFile = "manifest.json";

// What a prepared directory says about itself (manifest.json).
struct DistillManifest {
  struct Shard {
    std::string file;            // relative to the directory: shard-00000.h5, ...
    int64_t first_example = 0;   // global index of its first example
    int64_t num_examples = 0;
    std::string sha256;
    uint64_t num_bytes = 0;
  };
  int64_t num_examples = 0;
  int64_t shard_size = 0;                // examples per shard (the last one may hold fewer)
  int max_keys = 0;                      // keys per candidate at most
  std::string tokenizer_sha256, fm_index_sha256, pids_sha256;  // of the index the data was mined with
  std::vector<Shard> shards;             // [shard] in example order
  std::string json;                      // manifest.json as written (counts, filter, sources)
};

// Identity of the data that goes into the manifest (from the mined manifest) and anything else to record.
struct DistillProvenance {
  int max_keys = 0;
  std::string tokenizer_sha256, fm_index_sha256, pids_sha256;
  std::string extra_json = "{}";  // a JSON object merged into manifest.json (filter, counts, sources)
};

// Writes a prepared directory: examples are added in order, a shard is written every `shard_size`
// examples, and commit() writes the last shard and manifest.json and renames DIR.tmp.<pid> to `out_dir`
// (an existing prepared directory there is replaced; anything else is a ConfigError). Without commit()
// nothing named `out_dir` appears.
class DistillWriter {
 public:
  DistillWriter(std::string out_dir, int64_t shard_size);
  ~DistillWriter();
  DistillWriter(const DistillWriter&) = delete;
  DistillWriter& operator=(const DistillWriter&) = delete;

  // Checks the example (views 0..2, keys with tokens, teacher ranks a permutation of 1..n) and adds it.
  void add(const DistillExample& example);
  DistillManifest commit(const DistillProvenance& provenance);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct PrepareOptions {
  std::string mined_dir;      // from `dgr mine`
  std::string teacher_run;    // a TREC run over exactly the mined candidates (`dgr teacher ...`)
  std::string out_dir;
  int64_t shard_size = 256;   // queries per shard
  int min_positives = 1;      // method.md section 7: >= 1 positive
  int min_negatives = 16;     //                      > 15 negatives
  double max_score_gap = 300; //   retriever score(top positive) < score(top negative) + max_score_gap
};

struct PrepareSummary {
  int64_t mined_queries = 0, kept = 0;
  int64_t dropped_no_positive = 0, dropped_few_negatives = 0, dropped_score_gap = 0;  // first rule that fails
  int64_t candidates = 0, keys = 0, shards = 0;
  // Over the mined queries with a positive and a negative (before the filter): the retriever score gap
  // score(top positive) - score(top negative). Its median absolute value g sets the distillation constants
  // (the rule in trainer/distill_loss.h: M = g / 2, D = M / 3, ...).
  int64_t gap_queries = 0;
  double median_abs_gap = 0;
  double positive_first = 0;  // fraction of them whose gap is > 0
};

// `dgr prepare`: reads the mined candidates and the teacher run (checked against each other like
// `dgr teacher import` with missing candidates an error), filters the queries (the first failing rule
// counts the drop) and writes the prepared directory. Local (rank 0 only). DataError on bad inputs,
// and when no query passes the filter.
PrepareSummary prepare_distill_data(const PrepareOptions& options);

// Reads a prepared directory: manifest.json at construction (format, version, shard table against the
// example count); a shard is opened, checked (sha256 against the manifest, once per shard and process,
// when `verify_checksums`; format, shapes and offsets on every load) and kept open until an example of
// another shard is loaded. Every problem is a DataError naming the file. One instance per thread.
class DistillDataset {
 public:
  explicit DistillDataset(const std::string& prep_dir, bool verify_checksums = true);
  ~DistillDataset();
  DistillDataset(DistillDataset&&) noexcept;
  DistillDataset& operator=(DistillDataset&&) noexcept;

  int64_t size() const;
  const DistillManifest& manifest() const;
  // The example at global index 0 <= index < size().
  DistillExample load(int64_t index);
  // Shards this instance opened so far, each once, in first-open order (for tests and logs).
  const std::vector<int>& shards_opened() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dgr::data
