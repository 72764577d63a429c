// The index directory that `dgr index` writes and training and retrieval load: the tokenizer, the FM-index
// over every passage's identifier sequence (method.md section 2) and the passage ids in FM-index order.
//   DIR/tokenizer.model  SentencePiece model with dgr's reserved tokens, or
//   DIR/tokenizer/       vocab.json + merges.txt of a BART tokenizer (`dgr index --tokenizer-model BART_DIR`)
//   DIR/fm_index.bin     FMIndex::save of index_sequence(tokenize_passage(p)) for every passage, file order
//   DIR/pids.txt         one passage id per line, line i = FM-index document i
//   DIR/index.json       format + version, corpus path and sha256, counts, options, sha256 of the files above
// The directory is built under DIR.tmp.<pid> and renamed into place, so a directory named DIR is complete.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "retrieval/fm_index.h"
#include "retrieval/tokenizer.h"
#include "retrieval/views.h"
#include "data/readers.h"

namespace dgr::retrieval {

struct IndexDirOptions {
  int vocab_size = 8000;
  std::string model_type = "unigram";  // unigram | bpe
  std::string tokenizer_model;         // an existing .model or BART tokenizer directory instead of training ("" = train)
  int num_threads = 1;
  std::string corpus_path;             // recorded in index.json with its sha256 ("" = not recorded)
};

inline constexpr const char* kIndexFormat = "dgr-index";
inline constexpr int kIndexFormatVersion = 1;

// Tokenizes one passage: title (empty when the passage has none), body = text, pseudo-queries.
PassageTokens tokenize_passage(const Tokenizer& tokenizer, const data::Passage& passage);

// What build_index_dir did (for the summary line of `dgr index`).
struct IndexDirSummary {
  size_t passages = 0;
  int32_t vocab_size = 0;
  uint64_t total_tokens = 0;  // FM-index text, boundaries included
  bool trained_tokenizer = false;
};

// Trains the tokenizer on titles + texts + pseudo-queries + `extra_training_texts` (or copies
// options.tokenizer_model), tokenizes every passage, builds the FM-index and writes `dir` atomically. An
// existing `dir` is replaced only when it is an index directory (has index.json); anything else there is
// a ConfigError.
IndexDirSummary build_index_dir(const data::Corpus& corpus, const std::vector<std::string>& extra_training_texts,
                                const std::string& dir, const IndexDirOptions& options);

struct IndexDir {
  std::string dir;
  Tokenizer tokenizer;
  FMIndex fm;
  std::vector<std::string> pids;                   // [FM-index document] -> passage id
  std::unordered_map<std::string, int32_t> doc_of;  // passage id -> FM-index document
  std::string manifest_json;                       // index.json as written
};

// Loads an index directory, checking index.json's format and the sha256 of every file against it (a
// mismatch is a DataError naming the file: rebuild with `dgr index`).
IndexDir load_index_dir(const std::string& dir);

}  // namespace dgr::retrieval
