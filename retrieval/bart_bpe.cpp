#include "retrieval/bart_bpe.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <fmt/format.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <memory>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"

// Note [Byte-level BPE]
// ~~~~~~~~~~~~~~~~~~~~~
// GPT-2's tokenizer (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners", section
// 2.2), reused unchanged by RoBERTa and BART (fairseq's `gpt2_bpe_utils.py`, Hugging Face's
// `tokenization_gpt2.py` and the ByteLevel pre-tokenizer/decoder of `tokenizers`). Three steps:
//  1. Pre-tokenization: the text is cut into pieces by the regular expression
//       's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//     (leftmost match, alternatives tried in order), so a word keeps the one space before it. \s here is
//     Unicode's White_Space property (what the reference engines use): \t \n \v \f \r, U+0085 and the Z
//     categories. PCRE2's own \s with UCP leaves out U+0085, so the class is written out (kWhite below).
//  2. Byte mapping: each piece's UTF-8 bytes become printable characters, byte b -> the b-th entry of
//     GPT-2's bytes_to_unicode() table: the printable Latin-1 bytes ! .. ~, ¡ .. ¬, ® .. ÿ stand for
//     themselves, the 68 others map to U+0100 onwards in byte order (so a space is "Ġ", a newline "Ċ").
//  3. BPE: the piece starts as one symbol per mapped character; repeatedly the adjacent pair whose merge
//     has the lowest rank in merges.txt is merged, every occurrence of it left to right, until no pair has
//     a rank. Each final symbol is looked up in vocab.json (a symbol it lacks gives <unk>).
// Decoding concatenates the tokens and maps each character back to its byte; special tokens are text.
// No normalisation and no prefix space (BartTokenizer's add_prefix_space defaults to False).

namespace dgr::retrieval {
namespace {

constexpr const char* kWhite = R"(\t\n\x{0B}\f\r\x{85}\p{Z})";

std::string pre_token_pattern() {
  const std::string w = kWhite;
  return R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^)" + w + R"(\p{L}\p{N}]+|[)" + w + R"(]+(?![^)" + w +
         R"(])|[)" + w + "]+";
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Length in bytes of the UTF-8 character that starts with byte `lead` (1 for a stray continuation byte).
size_t utf8_length(unsigned char lead) {
  if (lead >= 0xF0) return 4;
  if (lead >= 0xE0) return 3;
  if (lead >= 0xC0) return 2;
  return 1;
}

uint32_t decode_utf8(std::string_view s, size_t pos, size_t len) {
  const auto b = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(s[pos + k])); };
  if (len == 1) return b(0);
  if (len == 2) return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
  if (len == 3) return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
  return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
}

// GPT-2's bytes_to_unicode(): byte -> code point (Note [Byte-level BPE], step 2).
const std::array<uint32_t, 256>& byte_to_char() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      t[b] = printable ? b : next++;
    }
    return t;
  }();
  return table;
}

// The byte each mapped character stands for; -1 for a character outside the table.
int char_to_byte(uint32_t cp) {
  static const std::unordered_map<uint32_t, int> inverse = [] {
    std::unordered_map<uint32_t, int> m;
    for (int b = 0; b < 256; ++b) m[byte_to_char()[static_cast<size_t>(b)]] = b;
    return m;
  }();
  const auto it = inverse.find(cp);
  return it == inverse.end() ? -1 : it->second;
}

struct Regex {
  pcre2_code* code = nullptr;
  ~Regex() { pcre2_code_free(code); }
};

const pcre2_code* pre_token_regex() {
  static const Regex regex = [] {
    Regex r;
    int error = 0;
    PCRE2_SIZE offset = 0;
    const std::string pattern = pre_token_pattern();
    r.code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &error,
                           &offset, nullptr);
    DGR_CHECK(r.code != nullptr, "BART's pre-tokenization pattern does not compile (PCRE2 error {} at {})", error, offset);
    return r;
  }();
  return regex.code;
}

}  // namespace

BartBpe BartBpe::load(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string vocab_path = (fs::path(dir) / "vocab.json").string();
  const std::string merges_path = (fs::path(dir) / "merges.txt").string();
  for (const auto& path : {vocab_path, merges_path})
    DGR_CHECK_AS(DataError, fs::exists(path), "{}: missing (a BART tokenizer directory holds vocab.json and merges.txt, "
                 "as Hugging Face's save_pretrained writes them)", path);
  BartBpe bpe;
  const auto vocab = nlohmann::json::parse(files::read_all(vocab_path), nullptr, false);
  DGR_CHECK_AS(DataError, !vocab.is_discarded() && vocab.is_object() && !vocab.empty(),
               "{}: not a JSON object of token -> id (restore it from the model's tokenizer files)", vocab_path);
  bpe.tokens_.assign(vocab.size(), std::string());
  std::vector<bool> seen(vocab.size(), false);
  for (const auto& [token, id] : vocab.items()) {
    DGR_CHECK_AS(DataError, id.is_number_integer() && id.get<int64_t>() >= 0 &&
                 id.get<int64_t>() < static_cast<int64_t>(vocab.size()),
                 "{}: token '{}' has id {}, but ids must be 0 .. {} (one per token)", vocab_path, token, id.dump(),
                 vocab.size() - 1);
    const auto i = static_cast<size_t>(id.get<int64_t>());
    DGR_CHECK_AS(DataError, !seen[i], "{}: id {} is given to '{}' and '{}'", vocab_path, i, bpe.tokens_[i], token);
    seen[i] = true;
    bpe.tokens_[i] = token;
    bpe.ids_[token] = static_cast<int32_t>(i);
  }
  bpe.special_.assign(bpe.tokens_.size(), false);
  const std::pair<const char*, int32_t*> specials[] = {
      {"<s>", &bpe.bos_}, {"<pad>", &bpe.pad_}, {"</s>", &bpe.eos_}, {"<unk>", &bpe.unk_}, {"<mask>", &bpe.mask_}};
  for (const auto& [name, id] : specials) {
    const auto it = bpe.ids_.find(name);
    DGR_CHECK_AS(DataError, it != bpe.ids_.end(), "{}: no special token '{}' (BART's vocabulary has <s>, <pad>, </s>, "
                 "<unk> and <mask>)", vocab_path, name);
    *id = it->second;
    bpe.special_[static_cast<size_t>(it->second)] = true;
  }
  for (int b = 0; b < 256; ++b) {
    std::string symbol;
    append_utf8(symbol, byte_to_char()[static_cast<size_t>(b)]);
    const auto it = bpe.ids_.find(symbol);
    DGR_CHECK_AS(DataError, it != bpe.ids_.end(), "{}: no token for byte {} ('{}'): not a byte-level BPE "
                 "vocabulary", vocab_path, b, symbol);
    bpe.byte_ids_.push_back(it->second);
  }

  std::ifstream merges(merges_path);
  DGR_CHECK_AS(DataError, merges.good(), "{}: cannot be read", merges_path);
  std::string line;
  int64_t line_no = 0;
  while (std::getline(merges, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t space = line.find(' ');
    DGR_CHECK_AS(DataError, space != std::string::npos && space > 0 && space + 1 < line.size() &&
                 line.find(' ', space + 1) == std::string::npos,
                 "{}:{}: expected two tokens separated by one space, got '{}'", merges_path, line_no, line);
    const std::string left = line.substr(0, space), right = line.substr(space + 1);
    DGR_CHECK_AS(DataError, bpe.ids_.count(left + right) != 0, "{}:{}: the merge '{}' makes '{}', which vocab.json "
                 "lacks (the two files are not a pair)", merges_path, line_no, line, left + right);
    bpe.ranks_.emplace(line, static_cast<int32_t>(bpe.ranks_.size()));
  }
  return bpe;
}

void BartBpe::merge_word(const std::string& mapped, std::vector<int32_t>& out) const {
  std::vector<std::string> symbols;
  for (size_t i = 0; i < mapped.size();) {
    const size_t len = utf8_length(static_cast<unsigned char>(mapped[i]));
    symbols.push_back(mapped.substr(i, len));
    i += len;
  }
  while (symbols.size() > 1) {
    int32_t best = -1;
    size_t best_at = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const auto it = ranks_.find(symbols[i] + " " + symbols[i + 1]);
      if (it != ranks_.end() && (best < 0 || it->second < best)) {
        best = it->second;
        best_at = i;
      }
    }
    if (best < 0) break;
    const std::string left = symbols[best_at], right = symbols[best_at + 1];
    std::vector<std::string> merged;
    merged.reserve(symbols.size());
    for (size_t i = 0; i < symbols.size();) {
      if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
        merged.push_back(left + right);
        i += 2;
      } else {
        merged.push_back(symbols[i]);
        i += 1;
      }
    }
    symbols = std::move(merged);
  }
  for (const auto& s : symbols) {
    const auto it = ids_.find(s);
    out.push_back(it == ids_.end() ? unk_ : it->second);
  }
}

std::vector<int32_t> BartBpe::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  if (text.empty()) return ids;
  // Valid UTF-8 is required (the references take Unicode strings): check once, then match without checks.
  {
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> probe(
        pcre2_match_data_create_from_pattern(pre_token_regex(), nullptr), &pcre2_match_data_free);
    const int rc = pcre2_match(pre_token_regex(), reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0, 0,
                               probe.get(), nullptr);
    if (rc <= PCRE2_ERROR_UTF8_ERR1 && rc >= PCRE2_ERROR_UTF8_ERR21) {
      DGR_CHECK_AS(DataError, false, "text is not valid UTF-8 (at byte {} of {}): BART's tokenizer takes Unicode text "
                   "(re-encode the input as UTF-8)", pcre2_get_startchar(probe.get()), text.size());
    }
  }
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
      pcre2_match_data_create_from_pattern(pre_token_regex(), nullptr), &pcre2_match_data_free);
  const auto& table = byte_to_char();
  auto add_piece = [&](size_t begin, size_t end) {
    std::string mapped;
    for (size_t i = begin; i < end; ++i) append_utf8(mapped, table[static_cast<unsigned char>(text[i])]);
    merge_word(mapped, ids);
  };
  size_t at = 0;
  while (at < text.size()) {
    const int rc = pcre2_match(pre_token_regex(), reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), at,
                               PCRE2_NO_UTF_CHECK, match.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) {
      add_piece(at, text.size());
      break;
    }
    DGR_CHECK(rc > 0, "BART pre-tokenization failed (PCRE2 error {}) at byte {} of {}", rc, at, text.size());
    const PCRE2_SIZE* span = pcre2_get_ovector_pointer(match.get());
    if (span[0] > at) add_piece(at, span[0]);  // text no alternative matched (none is expected): its own piece
    add_piece(span[0], span[1]);
    at = span[1];
  }
  return ids;
}

std::string BartBpe::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (const int32_t id : ids) {
    const std::string& t = token(id);
    if (special_[static_cast<size_t>(id)]) {
      out += t;
      continue;
    }
    for (size_t i = 0; i < t.size();) {
      const size_t len = utf8_length(static_cast<unsigned char>(t[i]));
      const int byte = char_to_byte(decode_utf8(t, i, len));
      if (byte >= 0) {
        out += static_cast<char>(byte);
      } else {
        out.append(t, i, len);  // a character outside the byte table (an added token's text): itself
      }
      i += len;
    }
  }
  return out;
}

const std::string& BartBpe::token(int32_t id) const {
  DGR_CHECK_AS(DataError, id >= 0 && id < vocab_size(), "token id {} is outside the vocabulary (0 .. {})", id,
               vocab_size() - 1);
  return tokens_[static_cast<size_t>(id)];
}

int32_t BartBpe::find(const std::string& t) const {
  const auto it = ids_.find(t);
  return it == ids_.end() ? -1 : it->second;
}

std::vector<int32_t> BartBpe::byte_tokens(int32_t id) const {
  std::vector<int32_t> out;
  const std::string& t = token(id);
  for (size_t i = 0; i < t.size();) {
    const size_t len = utf8_length(static_cast<unsigned char>(t[i]));
    const int byte = char_to_byte(decode_utf8(t, i, len));
    DGR_CHECK_AS(DataError, byte >= 0, "token '{}' (id {}) is not made of byte characters", t, id);
    out.push_back(byte_ids_[static_cast<size_t>(byte)]);
    i += len;
  }
  return out;
}

}  // namespace dgr::retrieval
