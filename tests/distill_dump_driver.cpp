// Prints a prepared distillation data set as JSON lines (one example per line, in index order) through
// DistillDataset, for the pipeline test to compare with the mined candidates and the teacher run.
// Usage: distill_dump_driver PREP_DIR
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "data/distill_data.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: distill_dump_driver PREP_DIR\n";
    return 2;
  }
  try {
    dgr::data::DistillDataset data(argv[1]);
    for (int64_t i = 0; i < data.size(); ++i) {
      auto e = data.load(i);
      nlohmann::json cands = nlohmann::json::array();
      for (const auto& c : e.candidates) {
        nlohmann::json keys = nlohmann::json::array();
        for (const auto& k : c.keys) keys.push_back({{"tokens", k.tokens}, {"view", k.view}, {"count", k.count}, {"score", k.score}});
        cands.push_back({{"doc", c.doc}, {"positive", c.positive}, {"retriever_score", c.retriever_score},
                         {"teacher_score", c.teacher_score}, {"teacher_rank", c.teacher_rank}, {"keys", keys}});
      }
      nlohmann::json line = {{"qid", e.qid}, {"query_tokens", e.query_tokens}, {"candidates", cands}};
      std::cout << line.dump() << "\n";
    }
  } catch (const dgr::Error& e) {
    std::cerr << "distill_dump_driver: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
