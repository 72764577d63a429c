// BART's tokenizer: the byte-level BPE of GPT-2, RoBERTa and BART, loaded from a `vocab.json` (token -> id)
// and `merges.txt` (one merge "a b" per line, best first) pair as Hugging Face and fairseq ship them. Issue 20,
// Build 1; Note [Byte-level BPE] in bart_bpe.cpp says what each step follows and why.
//
// encode() gives the ids that `transformers`' BartTokenizer gives with add_special_tokens=False and
// add_prefix_space=False (tests/bart_bpe_test.sh holds it against them); decode(encode(x)) == x for any
// valid UTF-8 x. retrieval::Tokenizer (tokenizer.h) wraps it for the index, the views and the beam search.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace dgr::retrieval {

class BartBpe {
 public:
  // Reads DIR/vocab.json and DIR/merges.txt. Throws DataError naming the file (and line) when one is missing
  // or malformed, when an id repeats or leaves a gap, when a merge names a token the vocabulary lacks, or when
  // a special token (<s>, <pad>, </s>, <unk>, <mask>) or one of the 256 byte tokens is missing.
  static BartBpe load(const std::string& dir);

  // Plain text (valid UTF-8) -> ids; never produces a special token. Throws DataError on invalid UTF-8.
  std::vector<int32_t> encode(std::string_view text) const;
  // Ids -> text: the bytes of every token; special tokens are written as themselves ("<s>", "</s>", ...).
  // Throws DataError on an id outside the vocabulary.
  std::string decode(const std::vector<int32_t>& ids) const;
  // One token as stored in vocab.json (bytes mapped to printable characters, e.g. "Ġthe").
  const std::string& token(int32_t id) const;
  // The id of a token as stored in vocab.json, or -1.
  int32_t find(const std::string& token) const;
  // The byte tokens that spell token `id` (one per byte: "Ġ@@" -> "Ġ", "@", "@"); every byte-level vocabulary
  // has them.
  std::vector<int32_t> byte_tokens(int32_t id) const;

  int32_t vocab_size() const { return static_cast<int32_t>(tokens_.size()); }
  int32_t bos() const { return bos_; }    // <s>
  int32_t pad() const { return pad_; }    // <pad>
  int32_t eos() const { return eos_; }    // </s>
  int32_t unk() const { return unk_; }    // <unk>
  int32_t mask() const { return mask_; }  // <mask>

 private:
  BartBpe() = default;
  // The BPE of one pre-token, given as its bytes mapped to characters (UTF-8).
  void merge_word(const std::string& mapped, std::vector<int32_t>& out) const;

  std::vector<std::string> tokens_;                  // id -> token
  std::unordered_map<std::string, int32_t> ids_;     // token -> id
  std::unordered_map<std::string, int32_t> ranks_;   // "a b" -> rank of the merge (0 = applied first)
  std::vector<bool> special_;                        // id -> is a special token
  std::vector<int32_t> byte_ids_;                    // byte -> the id of its token
  int32_t bos_ = -1, pad_ = -1, eos_ = -1, unk_ = -1, mask_ = -1;
};

}  // namespace dgr::retrieval
