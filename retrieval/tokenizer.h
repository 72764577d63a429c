// The tokenizer, one interface over two kinds (method.md section 2; issue 20, Build 1):
//  - SentencePiece (unigram by default) trained on the corpus by `dgr index`, or loaded from a `.model`
//    file, with reserved tokens that plain text can never produce (SentencePiece control symbols): the three
//    view markers, `@@` (ends a title or pseudo-query), `||` (starts a pseudo-query) and the document
//    boundary. Ids 0..3 are pad, unk, bos, eos.
//  - BART's byte-level BPE (retrieval/bart_bpe.h) loaded from a directory with vocab.json and merges.txt,
//    used as SEAL and MINDER use it with BART: Note [Markers with BART] in tokenizer.cpp.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace dgr::retrieval {

// Ids of the reserved tokens (fixed by training; checked on load).
struct SpecialTokens {
  int32_t pad = 0, unk = 1, bos = 2, eos = 3;
  int32_t decoder_start = 2;  // the decoder's first input: bos (SentencePiece), </s> (BART's decoder_start_token_id)
  int32_t source_start = -1;  // the first token of every source: none (SentencePiece), <s> (BART)
  int32_t title_view = -1;  // "<title>": query || title || + ; the view marker appended to the source
  int32_t body_view = -1;   // "<body>"
  int32_t pq_view = -1;     // "<pq>"
  // A view marked by text instead of one reserved token, [title, body, pq] (BART: the tokens of MINDER's
  // " || title || +", " || body || +", " || query || +"); empty = the one-token marker above.
  std::array<std::vector<int32_t>, 3> view_text;
  int32_t end_id = -1;      // "@@": ends a title or a pseudo-query
  int32_t pq_start = -1;    // "||": starts a pseudo-query
  int32_t boundary = -1;    // "<doc>": document boundary in the FM-index text (BART: </s>)
};

enum class TokenizerKind { sentencepiece, bart_bpe };
const char* tokenizer_kind_name(TokenizerKind kind);  // "sentencepiece", "bart-bpe"

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
  // Loads a SentencePiece .model file, or a BART tokenizer directory (vocab.json + merges.txt); throws
  // DataError naming the file when it is missing, unreadable, or lacks the reserved tokens (a .model not
  // made by `dgr index`: retrain with `dgr index`; a BART vocabulary without single tokens for " @@" and
  // " ||").
  static Tokenizer load(const std::string& path);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Plain text -> ids (never produces a reserved token, pad, bos or eos). BART: the ids of " " + text, a
  // marker token that the text itself produces spelt out in byte tokens (Note [Markers with BART]).
  std::vector<int32_t> encode(std::string_view text) const;
  // Ids -> text; reserved tokens are written as their symbols ("@@", "||", "<doc>", ...).
  std::string decode(const std::vector<int32_t>& ids) const;
  // One piece as text (reserved tokens as their symbols).
  std::string piece(int32_t id) const;

  int32_t vocab_size() const;
  TokenizerKind kind() const { return kind_; }
  const SpecialTokens& special() const { return special_; }
  const std::string& path() const { return path_; }
  // Of the .model file; BART: sha256(vocab.json) + "+" + sha256(merges.txt), as `dgr import` records it.
  const std::string& sha256() const { return sha256_; }

 private:
  Tokenizer();
  static Tokenizer load_bart(const std::string& dir);
  struct Impl;
  std::unique_ptr<Impl> impl_;
  TokenizerKind kind_ = TokenizerKind::sentencepiece;
  SpecialTokens special_;
  std::string path_, sha256_;
};

}  // namespace dgr::retrieval
