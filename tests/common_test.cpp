// common/: text helpers, atomic output, checksums, rank tags and the error macros.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "common/text.h"

namespace fs = std::filesystem;
using namespace dgr;

namespace {

fs::path fresh_dir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("dgr_common_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

TEST(Text, Utf8Validation) {
  EXPECT_TRUE(text::is_valid_utf8("plain ascii"));
  EXPECT_TRUE(text::is_valid_utf8("caf\xC3\xA9 \xE2\x80\x98q\xE2\x80\x99 \xF0\x9F\x98\x80"));
  size_t offset = 99;
  EXPECT_FALSE(text::is_valid_utf8("ab\xE9" "cd", &offset));  // latin-1 e-acute
  EXPECT_EQ(offset, 2u);
  EXPECT_FALSE(text::is_valid_utf8("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(text::is_valid_utf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(text::is_valid_utf8("\xE2\x80"));          // truncated
}

TEST(Text, SplitTrimCollapse) {
  auto parts = text::split("a\t\tb\t", '\t');
  ASSERT_EQ(parts.size(), 4u);
  EXPECT_EQ(parts[0], "a");
  EXPECT_EQ(parts[1], "");
  EXPECT_EQ(parts[2], "b");
  EXPECT_EQ(parts[3], "");
  auto words = text::split_ws("  one \t two\nthree  ");
  ASSERT_EQ(words.size(), 3u);
  EXPECT_EQ(words[2], "three");
  EXPECT_EQ(text::trim("  x y \n"), "x y");
  EXPECT_EQ(text::collapse_ws(" a \t b\n\nc "), "a b c");
  EXPECT_EQ(text::to_lower("MiXeD 1"), "mixed 1");
}

TEST(Files, AtomicFileAppearsOnlyOnCommit) {
  fs::path dir = fresh_dir("file");
  std::string path = (dir / "out.txt").string();
  {
    files::AtomicFile f(path);
    f.write("half");
    EXPECT_FALSE(fs::exists(path));
  }  // not committed: nothing left behind
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(fs::is_empty(dir));
  {
    files::AtomicFile f(path);
    f.write("whole");
    f.commit();
  }
  EXPECT_EQ(files::read_all(path), "whole");
  EXPECT_TRUE(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);
}

TEST(Files, AtomicDirReplacesOnlyOnCommitAndOnlyWithForce) {
  fs::path dir = fresh_dir("dir");
  std::string out = (dir / "set").string();
  {
    files::AtomicDir d(out, false);
    std::ofstream(fs::path(d.tmp_dir()) / "a") << "1";
  }  // abandoned
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(fs::is_empty(dir));
  {
    files::AtomicDir d(out, false);
    std::ofstream(fs::path(d.tmp_dir()) / "a") << "1";
    d.commit();
  }
  EXPECT_EQ(files::read_all(out + "/a"), "1");
  EXPECT_THROW(files::AtomicDir(out, false), ConfigError);
  {
    files::AtomicDir d(out, true);
    std::ofstream(fs::path(d.tmp_dir()) / "b") << "2";
    EXPECT_TRUE(fs::exists(out + "/a"));  // old one intact until commit
    d.commit();
  }
  EXPECT_FALSE(fs::exists(out + "/a"));
  EXPECT_EQ(files::read_all(out + "/b"), "2");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
}

TEST(Files, Checksums) {
  EXPECT_EQ(files::md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
  EXPECT_EQ(files::md5_hex("2048"), "051928341be67dcba03f0e04104d9047");
  fs::path dir = fresh_dir("sha");
  std::ofstream(dir / "abc") << "abc";
  EXPECT_EQ(files::sha256_file((dir / "abc").string()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  try {
    files::read_all((dir / "missing").string());
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("missing: cannot open"), std::string::npos);
  }
}

TEST(Log, RankTagIsZeroPadded) {
  EXPECT_EQ(log::rank_tag(3, 16), "r03/16");
  EXPECT_EQ(log::rank_tag(0, 1), "r00/1");
  EXPECT_EQ(log::rank_tag(7, 128), "r007/128");
}

TEST(Log, OneFilePerRankWithTheRankInEveryLine) {
  fs::path dir = fresh_dir("log");
  log::Options options;
  options.dir = dir.string();
  log::init(options, 2, 4);
  log::get("test")->debug("hello from the test");
  log::flush();
  std::string content = files::read_all((dir / "dgr.r02.log").string());
  EXPECT_NE(content.find("[r02/4] [debug] [test] hello from the test"), std::string::npos) << content;
  log::init(log::Options{}, 0, 1);
}

TEST(Errors, CheckMacroNamesFileAndLine) {
  try {
    DGR_CHECK_AS(DataError, 1 + 1 == 3, "expected {} got {}", 3, 2);
    FAIL();
  } catch (const DataError& e) {
    std::string what = e.what();
    EXPECT_EQ(what.rfind("common_test.cpp:", 0), 0u) << what;
    EXPECT_NE(what.find("expected 3 got 2"), std::string::npos);
  }
  EXPECT_NO_THROW(DGR_CHECK(true, "never"));
}

}  // namespace
