// The tokenizer: a SentencePiece model (unigram by default) trained on the corpus or loaded from a given
// `.model` file, with reserved tokens that plain text can never produce (SentencePiece control symbols):
// the three view markers, `@@` (ends a title or pseudo-query), `||` (starts a pseudo-query) and the
// document boundary. Ids 0..3 are pad, unk, bos, eos. See ../shared/docs/method.md section 2.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace dgr::retrieval {

// Ids of the reserved tokens (fixed by training; checked on load).
struct SpecialTokens {
  int32_t pad = 0, unk = 1, bos = 2, eos = 3;
  int32_t title_view = -1;  // "<title>": query || title || + ; the view marker appended to the source
  int32_t body_view = -1;   // "<body>"
  int32_t pq_view = -1;     // "<pq>"
  int32_t end_id = -1;      // "@@": ends a title or a pseudo-query
  int32_t pq_start = -1;    // "||": starts a pseudo-query
  int32_t boundary = -1;    // "<doc>": document boundary in the FM-index text
};

struct TokenizerTrainOptions {
  int vocab_size = 8000;        // an upper bound: a small corpus gets fewer pieces (hard_vocab_limit off)
  std::string model_type = "unigram";  // unigram | bpe
  uint64_t seed = 1;            // SentencePiece is deterministic given its input; kept for the record
  int num_threads = 1;
};

class Tokenizer {
 public:
  // Trains on `texts` (one sentence each) and writes `model_path` (a SentencePiece .model file, atomically).
  // Throws DataError naming the path on failure.
  static Tokenizer train(const std::vector<std::string>& texts, const std::string& model_path,
                         const TokenizerTrainOptions& options = {});
  // Loads a .model file; throws DataError naming the file when it is missing, unreadable, or lacks the
  // reserved tokens (a model not made by `dgr index`: retrain with `dgr index`).
  static Tokenizer load(const std::string& model_path);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Plain text -> ids (never produces a reserved token, pad, bos or eos).
  std::vector<int32_t> encode(std::string_view text) const;
  // Ids -> text; reserved tokens are written as their symbols ("@@", "||", "<doc>", ...).
  std::string decode(const std::vector<int32_t>& ids) const;
  // One piece as text (reserved tokens as their symbols).
  std::string piece(int32_t id) const;

  int32_t vocab_size() const;
  const SpecialTokens& special() const { return special_; }
  const std::string& path() const { return path_; }
  const std::string& sha256() const { return sha256_; }  // of the .model file

 private:
  Tokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  SpecialTokens special_;
  std::string path_, sha256_;
};

}  // namespace dgr::retrieval
