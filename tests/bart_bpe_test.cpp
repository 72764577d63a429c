// BART's byte-level BPE on a hand-made vocabulary: merges apply by rank (not by position), the pre-tokenizer
// keeps a word's leading space, special tokens decode as text, and every malformed tokenizer file or input is a
// DataError naming the file (and line); retrieval::Tokenizer over it (Note [Markers with BART]): the marker and
// boundary ids, " " + text, marker tokens spelt in bytes, the sources of the views. transformers' own ids are
// checked in bart_bpe_test.sh, the whole pipeline in bart_end_to_end_test.sh.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "retrieval/bart_bpe.h"
#include "retrieval/tokenizer.h"
#include "retrieval/views.h"
#include "tests/temp_dir.h"

namespace dgr::retrieval {
namespace {

// GPT-2's printable form of byte b (bytes_to_unicode): kept here independently of bart_bpe.cpp.
std::string byte_symbol(int b) {
  int cp = b;
  if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))) {
    int n = 0;
    for (int k = 0; k < b; ++k)
      if (!((k >= '!' && k <= '~') || (k >= 0xA1 && k <= 0xAC) || (k >= 0xAE && k <= 0xFF))) ++n;
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

struct Files {
  testing::TempDir dir{"dgr_bart_bpe"};
  nlohmann::json vocab = nlohmann::json::object();
  std::vector<std::string> merges = {"#version: 0.2"};
  Files() {
    for (const char* s : {"<s>", "<pad>", "</s>", "<unk>"}) vocab[s] = vocab.size();
    for (int b = 0; b < 256; ++b) vocab[byte_symbol(b)] = vocab.size();
    // "abc": "b c" outranks "a b", so "abc" -> "a" + "bc" -> "abc" needs "a bc"; "Ġab" only via "Ġ a".
    for (const char* m : {"b c", "a b", "a bc", "Ġ a", "Ġa b"}) {
      merges.push_back(m);
      std::string joined = m;
      joined.erase(joined.find(' '), 1);
      vocab[joined] = vocab.size();
    }
    vocab["<mask>"] = vocab.size();
  }
  std::string write() {
    std::ofstream(dir.file("vocab.json")) << vocab.dump();
    std::ofstream out(dir.file("merges.txt"));
    for (const auto& m : merges) out << m << "\n";
    return dir.path().string();
  }
  int32_t id(const std::string& token) const { return vocab.at(token).get<int32_t>(); }
};

TEST(BartBpe, MergesApplyByRankAndDecodeBack) {
  Files f;
  const BartBpe bpe = BartBpe::load(f.write());
  EXPECT_EQ(bpe.vocab_size(), 4 + 256 + 5 + 1);
  EXPECT_EQ(bpe.bos(), 0);
  EXPECT_EQ(bpe.pad(), 1);
  EXPECT_EQ(bpe.eos(), 2);
  EXPECT_EQ(bpe.unk(), 3);
  EXPECT_EQ(bpe.mask(), bpe.vocab_size() - 1);
  // "abc": "b c" (rank 0) first, then "a bc" (rank 2): one token. "ab c" would need a merge that does not exist.
  EXPECT_EQ(bpe.encode("abc"), (std::vector<int32_t>{f.id("abc")}));
  // " ab": the space stays with the word, but "a b" (rank 1) outranks "Ġ a" (rank 3): "Ġ" + "ab", and "Ġa b"
  // never applies; " a" alone does merge.
  EXPECT_EQ(bpe.encode("x ab"), (std::vector<int32_t>{f.id("x"), f.id(byte_symbol(0x20)), f.id("ab")}));
  EXPECT_EQ(bpe.encode("x a"), (std::vector<int32_t>{f.id("x"), f.id("Ġa")}));
  // "'s" is a piece of its own; digits and letters are different pieces.
  EXPECT_EQ(bpe.encode("a's"), (std::vector<int32_t>{f.id("a"), f.id("'"), f.id("s")}));
  EXPECT_EQ(bpe.encode("a1"), (std::vector<int32_t>{f.id("a"), f.id("1")}));
  // Non-ASCII: the UTF-8 bytes, each its byte token.
  EXPECT_EQ(bpe.encode("é"), (std::vector<int32_t>{f.id(byte_symbol(0xC3)), f.id(byte_symbol(0xA9))}));
  EXPECT_TRUE(bpe.encode("").empty());
  for (const std::string text : {"abc ab  x\n\t é ' 's 12", "   ", "ab\r\n"}) EXPECT_EQ(bpe.decode(bpe.encode(text)), text);
  EXPECT_EQ(bpe.decode({bpe.bos(), f.id("abc"), bpe.eos()}), "<s>abc</s>");
  EXPECT_THROW(bpe.decode({bpe.vocab_size()}), DataError);
  EXPECT_THROW(bpe.encode(std::string("a\xC3(", 3)), DataError);  // invalid UTF-8
}

::testing::AssertionResult load_fails(Files& f, const std::string& needle) {
  const std::string dir = f.write();
  try {
    BartBpe::load(dir);
  } catch (const DataError& e) {
    if (std::string(e.what()).find(needle) != std::string::npos) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "message lacks '" << needle << "': " << e.what();
  }
  return ::testing::AssertionFailure() << "no DataError";
}

TEST(BartBpe, MalformedFilesAreErrorsNamingTheFile) {
  {
    Files f;
    f.merges.push_back("a b c");
    EXPECT_TRUE(load_fails(f, "merges.txt:7: expected two tokens"));
  }
  {
    Files f;
    f.merges.push_back("c a");  // "ca" is not a token
    EXPECT_TRUE(load_fails(f, "merges.txt:7: the merge 'c a' makes 'ca'"));
  }
  {
    Files f;
    f.vocab.erase("<mask>");
    EXPECT_TRUE(load_fails(f, "vocab.json: no special token '<mask>'"));
  }
  {
    Files f;
    f.vocab["<pad>"] = 0;  // two tokens with id 0 (and no token with id 1)
    EXPECT_TRUE(load_fails(f, "vocab.json: id 0 is given to"));
  }
  {
    Files f;
    f.vocab.erase(byte_symbol(' '));
    f.vocab["Ġa"] = f.vocab.size() + 5;
    EXPECT_TRUE(load_fails(f, "vocab.json: token"));
  }
  {
    Files f;
    const std::string dir = f.write();
    std::ofstream(f.dir.file("vocab.json")) << "{\"a\": ";
    EXPECT_THROW(BartBpe::load(dir), DataError);
    std::filesystem::remove(f.dir.file("merges.txt"));
    EXPECT_THROW(BartBpe::load(dir), DataError);
  }
}

// The markers SEAL uses with BART as ordinary tokens: " @@", " ||", and the words of the view texts.
void add_markers(Files& f) {
  f.vocab.erase("<mask>");  // stays last
  for (const char* m : {"Ġ @", "Ġ@ @", "Ġ |", "Ġ| |", "Ġ +"}) {
    f.merges.push_back(m);
    std::string joined = m;
    joined.erase(joined.find(' '), 1);
    f.vocab[joined] = f.vocab.size();
  }
  f.vocab["<mask>"] = f.vocab.size();
}

TEST(BartTokenizer, MarkersBoundaryAndSources) {
  Files f;
  add_markers(f);
  const Tokenizer tok = Tokenizer::load(f.write());
  EXPECT_EQ(tok.kind(), TokenizerKind::bart_bpe);
  EXPECT_EQ(tok.vocab_size(), static_cast<int32_t>(f.vocab.size()));
  const SpecialTokens& s = tok.special();
  EXPECT_EQ(s.pad, 1);
  EXPECT_EQ(s.bos, 0);
  EXPECT_EQ(s.eos, 2);
  EXPECT_EQ(s.boundary, 2);       // </s> ends every document, as in SEAL's index
  EXPECT_EQ(s.decoder_start, 2);  // BART's decoder_start_token_id
  EXPECT_EQ(s.source_start, 0);
  EXPECT_EQ(s.end_id, f.id("Ġ@@"));
  EXPECT_EQ(s.pq_start, f.id("Ġ||"));
  EXPECT_EQ(s.title_view, -1);
  // Every text as it reads after a space; decode drops that space again.
  EXPECT_EQ(tok.encode("abc ab"), (std::vector<int32_t>{f.id(byte_symbol(0x20)), f.id("abc"), f.id(byte_symbol(0x20)),
                                                         f.id("ab")}));
  EXPECT_EQ(tok.decode(tok.encode("abc ab")), "abc ab");
  EXPECT_TRUE(tok.encode("").empty());
  // Text that would produce a marker gets its byte tokens instead: plain text never ends an identifier.
  const std::vector<int32_t> escaped = tok.encode("ab @@ c ||");
  EXPECT_EQ(std::count(escaped.begin(), escaped.end(), s.end_id), 0);
  EXPECT_EQ(std::count(escaped.begin(), escaped.end(), s.pq_start), 0);
  EXPECT_EQ(tok.decode(escaped), "ab @@ c ||");
  // The index sequence and the decoded identifiers.
  PassageTokens p{tok.encode("abc"), tok.encode("ab"), {tok.encode("c")}};
  const std::vector<int32_t> seq = index_sequence(p, s);
  EXPECT_EQ(tok.decode(seq), "abc @@ ab || c @@");
  // A source: <s> query " || title || +" </s>, cut to max_source.
  ViewLimits limits;
  const std::vector<int32_t> query = tok.encode("abc");
  const std::vector<int32_t> source = make_source(query, View::title, s, limits);
  ASSERT_GE(source.size(), 3u);
  EXPECT_EQ(source.front(), s.bos);
  EXPECT_EQ(source.back(), s.eos);
  EXPECT_EQ(std::vector<int32_t>(source.begin() + 1, source.end() - 1 - static_cast<std::ptrdiff_t>(s.view_text[0].size())),
            query);
  EXPECT_EQ(BartBpe::load(f.dir.path().string()).decode(s.view_text[0]), " || title || +");
  EXPECT_EQ(BartBpe::load(f.dir.path().string()).decode(s.view_text[2]), " || query || +");
  limits.max_source = static_cast<int>(s.view_text[1].size()) + 3;  // room for one query token
  EXPECT_EQ(make_source(query, View::body, s, limits).size(), static_cast<size_t>(limits.max_source));
  limits.max_source = static_cast<int>(s.view_text[1].size()) + 2;
  EXPECT_THROW(make_source(query, View::body, s, limits), ConfigError);
  EXPECT_EQ(tok.sha256().size(), 64u + 1u + 64u);
}

TEST(BartTokenizer, VocabularyWithoutMarkersIsRefused) {
  Files f;  // no " @@" token
  const std::string dir = f.write();
  try {
    Tokenizer::load(dir);
    FAIL() << "no DataError";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("\" @@\""), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("vocab.json"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dgr::retrieval
