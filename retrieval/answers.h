// Answer-string relevance, as DPR evaluates Natural Questions and TriviaQA (issue 21: NQ's test questions come
// with answers only, no passage labels): a passage is relevant to a question when its text contains one of
// the answers as a contiguous run of tokens (Note [Answer matching] in answers.cpp). `dgr evaluate --answers`
// reports top-k accuracy: the share of questions with such a passage among the run's first k.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "data/readers.h"
#include "data/trec.h"

namespace dgr::retrieval {

// DPR's SimpleTokenizer, uncased, after NFD normalisation.
std::vector<std::string> answer_tokens(std::string_view text);
// DPR's has_answer (match_type "string"): some answer's tokens occur contiguously in the text's tokens.
bool has_answer(const std::vector<std::string>& text_tokens, const std::vector<std::vector<std::string>>& answers);

struct AnswerAccuracy {
  std::map<int, double> at;  // k -> share of questions with an answer-bearing passage in the top k
  int questions = 0;
  int questions_missing_from_run = 0;  // scored 0
};
// `answers_path`: JSONL {"qid", "answers": [...]} (`dgr data dpr-queries` writes it). Run entries are ordered
// as metrics.h orders them. DataError naming the file for a malformed line or a run passage not in `corpus`.
AnswerAccuracy answer_accuracy(const std::vector<data::RunEntry>& run, const std::string& answers_path,
                               const data::Corpus& corpus, const std::vector<int>& at = {1, 5, 20, 100});

}  // namespace dgr::retrieval
