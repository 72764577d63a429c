// Tests of the tokenizer (retrieval/tokenizer.h) and the index directory (retrieval/index_dir.h): reserved
// tokens, text that looks like a marker, round trips, damaged files.
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/temp_dir.h"
#include "common/error.h"
#include "retrieval/index_dir.h"
#include "retrieval/tokenizer.h"
#include "retrieval/views.h"

namespace dgr::retrieval {
namespace {

namespace fs = std::filesystem;

class TempDir : public dgr::testing::TempDir {
 public:
  TempDir() : dgr::testing::TempDir("dgr_tokenizer_test") {}
};

std::vector<std::string> synthetic_sentences(size_t n) {
  const std::vector<std::string> words = {"package", "library", "tool", "network", "server", "client", "python",
                                          "module", "data", "file", "system", "kernel", "driver", "font", "game",
                                          "editor", "utility", "shared", "development", "documentation", "the",
                                          "for", "and", "with", "a", "of", "to", "support", "manager", "audio"};
  std::mt19937 rng(5);
  std::uniform_int_distribution<size_t> pick(0, words.size() - 1), length(3, 14);
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) {
    std::string s;
    for (size_t k = length(rng); k > 0; --k) s += (s.empty() ? "" : " ") + words[pick(rng)];
    if (i % 7 == 0) s += " version " + std::to_string(i) + ".0";
    if (i % 11 == 0) s += " (C++ bindings, x86_64)";
    out.push_back(s);
  }
  return out;
}

template <typename Fn>
std::string data_error_message(Fn&& fn) {
  try {
    fn();
  } catch (const DataError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("wrong exception type: ") + e.what();
  }
  return "no exception";
}

std::set<int32_t> reserved_ids(const SpecialTokens& s) {
  return {s.pad, s.unk, s.bos, s.eos, s.title_view, s.body_view, s.pq_view, s.end_id, s.pq_start, s.boundary};
}

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    TokenizerTrainOptions options;
    options.vocab_size = 300;
    tokenizer_ = new Tokenizer(Tokenizer::train(synthetic_sentences(400), dir_->file("tok.model"), options));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete dir_;
  }
  static TempDir* dir_;
  static Tokenizer* tokenizer_;
};
TempDir* TokenizerTest::dir_ = nullptr;
Tokenizer* TokenizerTest::tokenizer_ = nullptr;

TEST_F(TokenizerTest, ReservedTokensAreDistinctAndAboveTheMetaIds) {
  const SpecialTokens& s = tokenizer_->special();
  EXPECT_EQ(s.pad, 0);
  EXPECT_EQ(s.unk, 1);
  EXPECT_EQ(s.bos, 2);
  EXPECT_EQ(s.eos, 3);
  std::set<int32_t> markers = {s.title_view, s.body_view, s.pq_view, s.end_id, s.pq_start, s.boundary};
  EXPECT_EQ(markers.size(), 6u);
  for (int32_t id : markers) {
    EXPECT_GT(id, 3);
    EXPECT_LT(id, tokenizer_->vocab_size());
  }
  EXPECT_EQ(tokenizer_->piece(s.end_id), "@@");
  EXPECT_EQ(tokenizer_->piece(s.pq_start), "||");
  EXPECT_EQ(tokenizer_->piece(s.boundary), "<doc>");
  EXPECT_EQ(tokenizer_->piece(s.title_view), "<title>");
  EXPECT_LE(tokenizer_->vocab_size(), 300);
  EXPECT_GT(tokenizer_->vocab_size(), 40);
  EXPECT_EQ(tokenizer_->sha256().size(), 64u);
  // Nothing but the model beside it.
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_->path())) ++entries;
  EXPECT_EQ(entries, 1u);
}

TEST_F(TokenizerTest, TextThatLooksLikeAMarkerStaysText) {
  const auto reserved = reserved_ids(tokenizer_->special());
  for (const std::string text : {"@@", "||", "<doc>", "a || b @@ c", "<title> <body> <pq> </s> <s> <pad>",
                                 "package @@ library || tool <doc> server", "||@@<doc>@@||"}) {
    auto ids = tokenizer_->encode(text);
    EXPECT_FALSE(ids.empty()) << text;
    for (int32_t id : ids) {
      EXPECT_EQ(reserved.count(id) == 0 || id == tokenizer_->special().unk, true) << text << " gave id " << id;
      EXPECT_NE(id, tokenizer_->special().end_id);
      EXPECT_NE(id, tokenizer_->special().pq_start);
      EXPECT_NE(id, tokenizer_->special().boundary);
    }
  }
}

TEST_F(TokenizerTest, DecodeInvertsEncodeOnPlainText) {
  for (const std::string text : {"package library tool", "the kernel driver for audio", "python module version 7.0",
                                 "editor (C++ bindings, x86_64)", "network server and client"}) {
    EXPECT_EQ(tokenizer_->decode(tokenizer_->encode(text)), text);
  }
  // Reserved tokens are written as their symbols; pad/bos/eos are dropped.
  const SpecialTokens& s = tokenizer_->special();
  std::vector<int32_t> ids = {s.boundary};
  auto title = tokenizer_->encode("font editor");
  ids.insert(ids.end(), title.begin(), title.end());
  ids.push_back(s.end_id);
  auto body = tokenizer_->encode("the game");
  ids.insert(ids.end(), body.begin(), body.end());
  ids.push_back(s.eos);
  EXPECT_EQ(tokenizer_->decode(ids), "<doc> font editor @@ the game");
}

TEST_F(TokenizerTest, LoadGivesTheSameIds) {
  Tokenizer loaded = Tokenizer::load(dir_->file("tok.model"));
  EXPECT_EQ(loaded.vocab_size(), tokenizer_->vocab_size());
  EXPECT_EQ(loaded.sha256(), tokenizer_->sha256());
  EXPECT_EQ(reserved_ids(loaded.special()), reserved_ids(tokenizer_->special()));
  EXPECT_EQ(loaded.special().boundary, tokenizer_->special().boundary);
  for (const auto& sentence : synthetic_sentences(50)) EXPECT_EQ(loaded.encode(sentence), tokenizer_->encode(sentence));
}

TEST_F(TokenizerTest, LoadOfMissingOrGarbageFilesNamesTheFile) {
  std::string missing = dir_->file("missing.model");
  std::string message = data_error_message([&] { Tokenizer::load(missing); });
  EXPECT_NE(message.find(missing), std::string::npos) << message;
  std::string garbage = dir_->file("garbage.model");
  {
    std::ofstream out(garbage, std::ios::binary);
    out << "this is not a sentencepiece model";
  }
  message = data_error_message([&] { Tokenizer::load(garbage); });
  EXPECT_NE(message.find(garbage), std::string::npos) << message;
  EXPECT_NE(message.find("dgr index"), std::string::npos) << message;
  fs::remove(garbage);
}

TEST(Tokenizer, TrainsBpeAndRejectsBadOptions) {
  TempDir dir;
  TokenizerTrainOptions options;
  options.vocab_size = 200;
  options.model_type = "bpe";
  Tokenizer bpe = Tokenizer::train(synthetic_sentences(200), dir.file("bpe.model"), options);
  EXPECT_EQ(bpe.decode(bpe.encode("the kernel driver")), "the kernel driver");
  options.model_type = "word2vec";
  EXPECT_THROW(Tokenizer::train(synthetic_sentences(10), dir.file("x.model"), options), ConfigError);
  options.model_type = "unigram";
  EXPECT_THROW(Tokenizer::train({"", ""}, dir.file("y.model"), options), DataError);
  EXPECT_FALSE(fs::exists(dir.file("x.model")));
  EXPECT_FALSE(fs::exists(dir.file("y.model")));
}

// ---- the index directory ----

data::Corpus tiny_corpus() {
  data::Corpus corpus;
  auto add = [&](data::Passage p) {
    corpus.index_of[p.pid] = corpus.passages.size();
    corpus.passages.push_back(std::move(p));
  };
  add({"p1", "font editor", "an editor for outline fonts", {"edit fonts", "font tool"}});
  add({"p2", "kernel driver", "the driver for the audio device || with @@ markers", {}});
  add({"p3", "", "a package without a title", {}});
  add({"p4", "font", "fonts for the game", {"game fonts"}});
  const auto texts = synthetic_sentences(40);
  for (size_t i = 0; i < texts.size(); ++i) {
    std::string number = std::to_string(i);
    add({std::string("x").append(number), std::string("utility ").append(number), texts[i], {}});
  }
  return corpus;
}

TEST(IndexDir, BuildAndLoadRoundTrip) {
  TempDir tmp;
  const std::string dir = tmp.file("index");
  data::Corpus corpus = tiny_corpus();
  IndexDirOptions options;
  options.vocab_size = 250;
  auto summary = build_index_dir(corpus, synthetic_sentences(100), dir, options);
  EXPECT_EQ(summary.passages, corpus.passages.size());
  EXPECT_TRUE(summary.trained_tokenizer);
  for (const char* name : {"tokenizer.model", "fm_index.bin", "pids.txt", "index.json"}) {
    EXPECT_TRUE(fs::exists(fs::path(dir) / name)) << name;
  }
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(tmp.path())) ++entries;
  EXPECT_EQ(entries, 1u) << "a temporary directory was left behind";

  IndexDir index = load_index_dir(dir);
  ASSERT_EQ(index.pids.size(), corpus.passages.size());
  EXPECT_EQ(index.fm.total_tokens(), summary.total_tokens);
  EXPECT_EQ(index.tokenizer.vocab_size(), summary.vocab_size);
  const SpecialTokens& s = index.tokenizer.special();
  for (size_t i = 0; i < corpus.passages.size(); ++i) {
    EXPECT_EQ(index.pids[i], corpus.passages[i].pid);
    EXPECT_EQ(index.doc_of.at(corpus.passages[i].pid), static_cast<int32_t>(i));
    auto expected = index_sequence(tokenize_passage(index.tokenizer, corpus.passages[i]), s);
    auto got = index.fm.passage(static_cast<int32_t>(i));
    EXPECT_EQ(std::vector<int32_t>(got.begin(), got.end()), expected);
  }
  // Title keys: `B font @@` is p4's title only, not p1's "font editor".
  std::vector<int32_t> key = {s.boundary};
  auto font = index.tokenizer.encode("font");
  key.insert(key.end(), font.begin(), font.end());
  key.push_back(s.end_id);
  EXPECT_EQ(index.fm.passages_containing(key), std::vector<int32_t>{3});
  // The empty title: p3's sequence starts with @@.
  EXPECT_EQ(index.fm.passage(2)[0], s.end_id);
  // A "||" in the text is not a pseudo-query start: p2 has no pq_start token.
  for (int32_t t : index.fm.passage(1)) EXPECT_NE(t, s.pq_start);
  EXPECT_NE(index.manifest_json.find("\"dgr-index\""), std::string::npos);

  // Rebuilding over an index directory replaces it, with the given tokenizer this time.
  IndexDirOptions reuse = options;
  reuse.tokenizer_model = index.dir + "/tokenizer.model";
  fs::copy_file(reuse.tokenizer_model, tmp.file("copy.model"));
  reuse.tokenizer_model = tmp.file("copy.model");
  auto again = build_index_dir(corpus, {}, dir, reuse);
  EXPECT_FALSE(again.trained_tokenizer);
  EXPECT_EQ(load_index_dir(dir).tokenizer.sha256(), index.tokenizer.sha256());
}

TEST(IndexDir, RefusesToOverwriteOtherDirectories) {
  TempDir tmp;
  const std::string dir = tmp.file("not-an-index");
  fs::create_directories(dir);
  { std::ofstream(fs::path(dir) / "precious.txt") << "keep me"; }
  IndexDirOptions options;
  options.vocab_size = 250;
  EXPECT_THROW(build_index_dir(tiny_corpus(), {}, dir, options), ConfigError);
  EXPECT_TRUE(fs::exists(fs::path(dir) / "precious.txt"));
}

TEST(IndexDir, DetectsDamagedFiles) {
  TempDir tmp;
  const std::string dir = tmp.file("index");
  IndexDirOptions options;
  options.vocab_size = 250;
  build_index_dir(tiny_corpus(), {}, dir, options);
  const std::string fm = (fs::path(dir) / "fm_index.bin").string();
  {
    std::fstream f(fm, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(100);
    char c = static_cast<char>(f.get());
    f.seekp(100);
    f.put(static_cast<char>(c ^ 0x5a));
  }
  std::string message = data_error_message([&] { load_index_dir(dir); });
  EXPECT_NE(message.find(fm), std::string::npos) << message;
  EXPECT_NE(message.find("dgr index"), std::string::npos) << message;

  fs::remove(fm);
  message = data_error_message([&] { load_index_dir(dir); });
  EXPECT_NE(message.find(fm), std::string::npos) << message;

  message = data_error_message([&] { load_index_dir(tmp.file("nowhere")); });
  EXPECT_NE(message.find("nowhere"), std::string::npos) << message;
}

// On the embedded data set (data/debian-tiny when main.sh has built it, else built here with `dgr data
// build-debian`, ~10 s): every passage's title key `B title @@` finds that passage, and every body token
// string of length 10 finds it too.
TEST(IndexDir, EveryTitleKeyOfTheTinyDataSetFindsItsPassage) {
  TempDir tmp;
  std::string corpus_path = std::string(DGR_SOURCE_DIR) + "/data/debian-tiny/corpus.tsv";
  if (!fs::exists(corpus_path)) {
    const std::string out = tmp.file("debian-tiny");
    const std::string command = std::string(DGR_BINARY) + " data build-debian --subset tiny --out " + out +
                                " --force > " + tmp.file("build.log") + " 2>&1";
    ASSERT_EQ(std::system(command.c_str()), 0) << command << " failed; see " << tmp.file("build.log");
    corpus_path = out + "/corpus.tsv";
  }
  const std::string dir = tmp.file("index");
  data::Corpus corpus = data::read_corpus(corpus_path);
  IndexDirOptions options;
  options.vocab_size = 2000;
  options.corpus_path = corpus_path;
  build_index_dir(corpus, {}, dir, options);
  IndexDir index = load_index_dir(dir);
  const SpecialTokens& s = index.tokenizer.special();
  for (size_t i = 0; i < corpus.passages.size(); ++i) {
    PassageTokens p = tokenize_passage(index.tokenizer, corpus.passages[i]);
    std::vector<int32_t> key = {s.boundary};
    key.insert(key.end(), p.title.begin(), p.title.end());
    key.push_back(s.end_id);
    auto docs = index.fm.passages_containing(key);
    EXPECT_TRUE(std::binary_search(docs.begin(), docs.end(), static_cast<int32_t>(i))) << corpus.passages[i].pid;
    if (p.body.size() >= 10) {
      std::vector<int32_t> span(p.body.end() - 10, p.body.end());
      docs = index.fm.passages_containing(span);
      EXPECT_TRUE(std::binary_search(docs.begin(), docs.end(), static_cast<int32_t>(i))) << corpus.passages[i].pid;
    }
  }
}

}  // namespace
}  // namespace dgr::retrieval
