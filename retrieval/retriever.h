// Generative retrieval for one query (method.md section 4): per enabled view, the constrained beam search
// (beam_search.h) under that view's source; when the body view is searched, also the query's word n-grams
// that occur in the index (re-scored by teacher forcing, one batched call) and the top unigrams of the first decoding
// step; then the corpus-corrected passage scores (scoring.h).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "retrieval/beam_search.h"
#include "retrieval/fm_index.h"
#include "retrieval/scoring.h"
#include "retrieval/seq2seq.h"
#include "retrieval/tokenizer.h"
#include "retrieval/views.h"

namespace dgr::retrieval {

struct RetrieverOptions {
  bool title_view = true;
  bool body_view = true;
  bool pq_view = true;  // finds nothing (and costs one encoder pass) on a corpus without pseudo-queries
  BeamOptions beam;
  // Extra body-view keys (method.md section 4), only when body_view is on: they are scored under the body
  // source, so a search without the body view has none.
  bool ngram_keys = true;    // the query's word n-grams
  int max_ngram_words = 3;
  bool unigram_keys = true;  // the top unigrams of the body view's first step
  int num_unigrams = 5000;
  ViewLimits limits;
  ScoringOptions scoring;  // top_k is scoring.top_k (100)
};

class Retriever {
 public:
  // `word_start[t]`: token t begins a word (its SentencePiece piece starts with U+2581). Tokens beyond
  // the table count as word starts. The index must outlive the retriever.
  Retriever(const FMIndex& index, const SpecialTokens& special, std::vector<bool> word_start,
            RetrieverOptions options);
  // Reads the word starts from the tokenizer's pieces.
  Retriever(const FMIndex& index, const Tokenizer& tokenizer, RetrieverOptions options);

  // `also_docs`: passages scored by the query's keys and listed besides the top_k (score_passages).
  std::vector<RetrievedPassage> retrieve(Seq2SeqScorer& model, std::span<const int32_t> query_tokens,
                                         std::span<const int32_t> also_docs = {}) const;
  // Every key of the query, merged by (view, string), before scoring (for inspection and tests).
  std::vector<Key> keys(Seq2SeqScorer& model, std::span<const int32_t> query_tokens) const;

  // The query's word n-grams of 1..max_words words, in order of first appearance, without duplicates.
  std::vector<std::vector<int32_t>> query_ngrams(std::span<const int32_t> query_tokens, int max_words) const;

  const RetrieverOptions& options() const { return options_; }

 private:
  const FMIndex& index_;
  SpecialTokens special_;
  std::vector<bool> word_start_;
  RetrieverOptions options_;
};

// One-shot form of Retriever::retrieve (reads the word starts from the tokenizer on every call: keep a
// Retriever for many queries).
std::vector<RetrievedPassage> retrieve(Seq2SeqScorer& model, const FMIndex& index, const Tokenizer& tokenizer,
                                       std::span<const int32_t> query_tokens, const RetrieverOptions& options);

// A word-start table from the tokenizer's pieces (pieces starting with U+2581 "▁").
std::vector<bool> word_start_table(const Tokenizer& tokenizer);

// The key's index string as text, for key files: Tokenizer::decode of Key::string, so title keys start
// with the boundary symbol and pseudo-query keys with "||" (the typing rule of method.md section 7).
std::string key_text(const Key& key, const Tokenizer& tokenizer);

}  // namespace dgr::retrieval
