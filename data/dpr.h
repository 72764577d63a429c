// DPR's question files -> dgr's queries and qrels (issue 21, Build 1: the paper's NQ and TriviaQA come in DPR's
// layout). DPR's retriever training and dev files (nq-train.json, nq-dev.json, trivia-*.json) are one JSON
// array of {"question", "answers": [...], "positive_ctxs": [{"passage_id" (or "psg_id"), "title", "text"}],
// "negative_ctxs", "hard_negative_ctxs"}; the passages are those of psgs_w100.tsv (read_corpus takes its
// `id<TAB>text<TAB>title` header). `dgr data dpr-queries` writes DATA/queries.SPLIT.tsv (qid = SPLIT-N, N the
// question's position in the file), DATA/qrels.SPLIT.tsv (every positive context, grade 1) and
// DATA/answers.SPLIT.jsonl ({"qid", "answers"}, for `dgr evaluate --answers`). DPR's question-answer files
// (nq-test.qa.csv: question<TAB>['answer', ...]) give queries and answers only (no qrels file is written).
#pragma once

#include <cstddef>
#include <string>

namespace dgr::data {

struct DprQueryOptions {
  std::string in;        // DPR's JSON file
  std::string data_dir;  // where queries/qrels/answers.SPLIT go (its corpus.tsv, when present, is checked)
  std::string split = "train";
  bool force = false;    // replace the split's files
};

struct DprQueryReport {
  size_t questions = 0, with_positive = 0, qrels = 0, positives_not_in_corpus = 0;
  bool corpus_checked = false;
};

// Converts; DataError naming the file (and the question) for anything that is not DPR's layout: not an
// array, a question without text, a positive without a passage id, a passage id that the data set's corpus
// lacks (when DATA/corpus.tsv exists). Writes atomically; ConfigError when the split exists and not `force`.
DprQueryReport convert_dpr_queries(const DprQueryOptions& options);

}  // namespace dgr::data
