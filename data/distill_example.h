// One query of the prepared distillation data set (method.md sections 5-7): its tokens and its mined
// candidates in the stage-1 retriever's order, each with its label, the teacher's score and the keys the
// retriever matched in it. sharding/ writes and reads these; trainer/ samples lists from them and re-scores
// the keys with gradient. No LibTorch and no retrieval/ here: views and key origins are plain integers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dgr::data {

// A key (identifier) as mined: what the surrogate re-scores. `view` uses retrieval::View's values
// (0 title, 1 body, 2 pq); `tokens` are the decoder targets (no bos; a title key's index string is the
// boundary + tokens).
struct CachedKey {
  std::vector<int32_t> tokens;
  int8_t view = 0;
  uint64_t count = 0;  // occurrences of the key's index string in the FM-index (F of the corpus correction)
  float score = 0;     // the stage-1 model's log-probability when mined (for reference; training re-scores)
};

struct DistillCandidate {
  int32_t doc = 0;               // passage index in the FM-index (IndexDir::pids[doc] is its pid)
  bool positive = false;         // in the qrels of the query
  double retriever_score = 0;    // stage-1 passage score when mined (the list is in descending order)
  double teacher_score = 0;      // the teacher's score (missing from the teacher run: see the manifest policy)
  int32_t teacher_rank = 0;      // 1-based rank in the teacher's list for this query
  std::vector<CachedKey> keys;   // at most max_keys (40), in the retriever's greedy (matching) order
};

struct DistillExample {
  std::string qid;
  std::vector<int32_t> query_tokens;         // the query, tokenized with the index's tokenizer
  std::vector<DistillCandidate> candidates;  // retriever order (best first)
};

}  // namespace dgr::data
