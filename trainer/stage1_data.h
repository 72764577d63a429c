// Stage-1 (MINDER) training pairs, method.md section 3, without LibTorch. An epoch is a fixed-size list of
// pairs; pair i of epoch e is a deterministic function of (seed, e, i), so the EpochSampler's data position
// alone says which pairs a resumed run sees, on any number of ranks. Layout of an epoch:
//   [query pairs]    for each training query with a positive passage: title_copies title pairs, body_spans
//                    body pairs (10-token spans, the start sampled by softmax over query overlap),
//                    pq_copies pseudo-query pairs when the passage has pseudo-queries;
//   [indexing pairs] for every passage, indexing_pairs per view: a random body window as the source ->
//                    the title (title view), -> another body span (body view), -> a pseudo-query (pq view)
//                    -- so that passages without a training query can be retrieved.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "retrieval/views.h"

namespace dgr::trainer {

struct Stage1DataOptions {
  bool views[retrieval::kNumViews] = {true, true, false};  // title, body, pq
  int title_copies = 3;
  int body_spans = 10;
  int pq_copies = 5;
  int indexing_pairs = 2;          // per passage per enabled view per epoch
  // The source of an indexing pair is a body window of a random length in [min, max] tokens: queries are
  // short (a Debian synopsis is 6-12 tokens), and a fixed long window trains on sources unlike them.
  int indexing_source_min = 6;
  int indexing_source_max = 24;
  // Probability that the window starts at the first body token: a passage's opening sentence usually says
  // what the passage is about (a Debian description restates the synopsis), like a query does.
  double indexing_prefix_probability = 0.0;
  double span_temperature = 1.0;   // softmax temperature of the body-span start sampling
  retrieval::ViewLimits limits;
};

struct TrainingQuery {
  std::vector<int32_t> tokens;
  int32_t positive = 0;  // passage index (the first positive in the qrels)
};

struct Pair {
  std::vector<int32_t> source;
  std::vector<int32_t> target;
  retrieval::View view = retrieval::View::title;
};

// A body span of limits.body_length tokens (the whole body when shorter). With a query, the start is
// sampled by a softmax (temperature) over the span's overlap with the query; without one, uniformly.
// Deterministic in rng_state. Stage 2 builds its span targets with it too.
std::vector<int32_t> query_body_span(const retrieval::PassageTokens& passage, const std::vector<int32_t>* query,
                                     const retrieval::ViewLimits& limits, double temperature, uint64_t rng_state);

class Stage1Data {
 public:
  Stage1Data(std::vector<retrieval::PassageTokens> passages, std::vector<TrainingQuery> queries,
             retrieval::SpecialTokens special, Stage1DataOptions options, uint64_t seed);

  int64_t size() const { return static_cast<int64_t>(entries_.size()); }
  Pair pair(int64_t epoch, int64_t index) const;
  // Counts per kind for the log: query pairs per view, indexing pairs per view.
  std::string describe() const;

 private:
  enum class Kind : uint8_t { query, indexing };
  struct Entry {
    Kind kind;
    retrieval::View view;
    int32_t item;  // query index (Kind::query) or passage index (Kind::indexing)
  };

  std::vector<retrieval::PassageTokens> passages_;
  std::vector<TrainingQuery> queries_;
  retrieval::SpecialTokens special_;
  Stage1DataOptions options_;
  uint64_t seed_;
  std::vector<Entry> entries_;
};

}  // namespace dgr::trainer
