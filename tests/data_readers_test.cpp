// Tests for the data readers: valid corpus/queries/qrels/run files (plain and gzipped) parse to the
// expected values, and every kind of bad input is a one-line dgr::DataError naming PATH:LINE.
#include <stdlib.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "data/corpus_queries.h"
#include "data/line_reader.h"
#include "data/query_split.h"
#include "data/readers.h"
#include "data/trec.h"

namespace dgr::data {
namespace {

// Passes when `f` throws dgr::DataError whose message is one line, starts with "PATH:LINE: " ("PATH: "
// when line is 0) and contains `needle`.
::testing::AssertionResult throws_data_error(const std::function<void()>& f, const std::string& path,
                                             int line, const std::string& needle) {
  std::string prefix = line > 0 ? path + ":" + std::to_string(line) + ": " : path + ": ";
  try {
    f();
  } catch (const DataError& e) {
    std::string what = e.what();
    if (what.rfind(prefix, 0) != 0) {
      return ::testing::AssertionFailure() << "message does not start with '" << prefix << "': " << what;
    }
    if (what.find('\n') != std::string::npos || what.find('\r') != std::string::npos) {
      return ::testing::AssertionFailure() << "message is not one line: " << what;
    }
    if (what.find(needle) == std::string::npos) {
      return ::testing::AssertionFailure() << "message lacks '" << needle << "': " << what;
    }
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw another exception type: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

#define EXPECT_DATA_ERROR(statement, path, line, needle) \
  EXPECT_TRUE(throws_data_error([&] { statement; }, path, line, needle))

class ReadersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string base = ::testing::TempDir();
    if (!base.empty() && base.back() == '/') base.pop_back();
    std::string pattern = base + "/sharding_readers_XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes `content` to DIR/name (gzip-compressed when `gz`) and returns the path.
  std::string write(const std::string& name, const std::string& content, bool gz = false) {
    std::string path = dir_ + "/" + name;
    if (gz) {
      gzFile f = gzopen(path.c_str(), "wb");
      EXPECT_NE(f, nullptr);
      EXPECT_EQ(gzwrite(f, content.data(), static_cast<unsigned>(content.size())),
                static_cast<int>(content.size()));
      EXPECT_EQ(gzclose(f), Z_OK);
    } else {
      std::ofstream(path, std::ios::binary) << content;
    }
    return path;
  }

  std::vector<Query> queries_q1_q2() { return read_queries(write("q.tsv", "q1\tfirst\nq2\tsecond\n")); }
  Corpus corpus_p1_p2() { return read_corpus(write("c.tsv", "p1\tt\tone\np2\tt\ttwo\n")); }

  std::string dir_;
};

// ------------------------------------------------------------------------------------- valid inputs

TEST_F(ReadersTest, LineReaderNumbersLinesStripsCrAndBomAndReadsLongLines) {
  std::string long_line(200000, 'x');
  std::string path = write("lines.txt", "\xEF\xBB\xBF" "a\r\n\nb\n" + long_line + "\nlast");
  LineReader reader(path);
  std::string line;
  std::vector<std::pair<size_t, std::string>> got;
  while (reader.next(line)) got.emplace_back(reader.line_number(), line);
  std::vector<std::pair<size_t, std::string>> want = {{1, "a"}, {2, ""}, {3, "b"}, {4, long_line}, {5, "last"}};
  EXPECT_EQ(got, want);
}

TEST_F(ReadersTest, CorpusTsv) {
  Corpus c = read_corpus(write("c.tsv",
                               "\xEF\xBB\xBFpid\ttitle\ttext\tpseudo_queries\n"
                               "p1\tTitle one\tText one\t\n"
                               "\n"
                               "p2\t\tText two\tpq a ||| pq b\r\n"
                               "p3\tT3\tCaf\xC3\xA9\t\n"));
  ASSERT_EQ(c.passages.size(), 3u);
  EXPECT_EQ(c.passages[0].pid, "p1");
  EXPECT_EQ(c.passages[0].title, "Title one");
  EXPECT_EQ(c.passages[0].text, "Text one");
  EXPECT_TRUE(c.passages[0].pseudo_queries.empty());
  EXPECT_EQ(c.passages[1].title, "");
  EXPECT_EQ(c.passages[1].text, "Text two");
  EXPECT_EQ(c.passages[1].pseudo_queries, (std::vector<std::string>{"pq a", "pq b"}));
  EXPECT_EQ(c.passages[2].text, "Caf\xC3\xA9");
  EXPECT_TRUE(c.passages[2].pseudo_queries.empty());
  EXPECT_EQ(c.index_of.at("p2"), 1u);
  EXPECT_TRUE(c.contains("p3"));
  EXPECT_FALSE(c.contains("pid"));
}

TEST_F(ReadersTest, CorpusJsonl) {
  Corpus c = read_corpus(write("c.jsonl",
                               R"({"pid": "p1", "title": "T1", "text": "one", "pseudo_queries": ["a", "b"]})"
                               "\n"
                               R"({"id": "p2", "text": "two \u00e9", "url": "ignored"})"
                               "\n"));
  ASSERT_EQ(c.passages.size(), 2u);
  EXPECT_EQ(c.passages[0].pid, "p1");
  EXPECT_EQ(c.passages[0].title, "T1");
  EXPECT_EQ(c.passages[0].text, "one");
  EXPECT_EQ(c.passages[0].pseudo_queries, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(c.passages[1].pid, "p2");
  EXPECT_EQ(c.passages[1].title, "");
  EXPECT_EQ(c.passages[1].text, "two \xC3\xA9");
  EXPECT_EQ(c.index_of.at("p2"), 1u);
}

TEST_F(ReadersTest, GzippedInputs) {
  Corpus tsv = read_corpus(write("c.tsv.gz", "p1\tt\tone\np2\tt\ttwo\tx\n", true));
  ASSERT_EQ(tsv.passages.size(), 2u);
  EXPECT_EQ(tsv.passages[1].pseudo_queries, std::vector<std::string>{"x"});
  Corpus jsonl = read_corpus(write("c.JSONL.GZ", "{\"pid\": \"p9\", \"text\": \"nine\"}\n", true));
  ASSERT_EQ(jsonl.passages.size(), 1u);
  EXPECT_EQ(jsonl.passages[0].pid, "p9");
  auto queries = read_queries(write("q.tsv.gz", "q1\thello\n", true));
  ASSERT_EQ(queries.size(), 1u);
  EXPECT_EQ(queries[0].text, "hello");
}

TEST_F(ReadersTest, Queries) {
  auto q = read_queries(write("q.tsv", "qid\ttext\nq1\twhat is x\n\nq2\twho is y\r\n"));
  ASSERT_EQ(q.size(), 2u);
  EXPECT_EQ(q[0].qid, "q1");
  EXPECT_EQ(q[0].text, "what is x");
  EXPECT_EQ(q[1].qid, "q2");
  EXPECT_EQ(q[1].text, "who is y");
}

TEST_F(ReadersTest, QrelsTrec) {
  Corpus corpus = corpus_p1_p2();
  auto queries = queries_q1_q2();
  auto qrels = read_qrels(write("qrels.txt", "q1 0 p1 2\nq1\t0\tp2\t0\nq2  0  p1  -1\n"), &corpus, &queries);
  ASSERT_EQ(qrels.size(), 3u);
  EXPECT_EQ(qrels[0].qid, "q1");
  EXPECT_EQ(qrels[0].pid, "p1");
  EXPECT_EQ(qrels[0].grade, 2);
  EXPECT_EQ(qrels[1].pid, "p2");
  EXPECT_EQ(qrels[1].grade, 0);
  EXPECT_EQ(qrels[2].qid, "q2");
  EXPECT_EQ(qrels[2].grade, -1);
}

// Note [Trust the header]: a qrels header of two columns admits no grade column.
TEST_F(ReadersTest, QrelsTsvHeaderDeclaresTheColumns) {
  auto path = write("qrels_header.tsv", "qid\tpid\nq1\tp1\nq2\tp2\t2\n");
  EXPECT_DATA_ERROR(read_qrels(path, nullptr, nullptr), path, 3, "the header (line 1) names 2 columns");
  auto ok = read_qrels(write("qrels_graded.tsv", "qid\tpid\tgrade\nq1\tp1\nq2\tp2\t2\n"), nullptr, nullptr);
  ASSERT_EQ(ok.size(), 2u);
  EXPECT_EQ(ok[1].grade, 2);
}

TEST_F(ReadersTest, QrelsTsv) {
  auto qrels = read_qrels(write("qrels.tsv", "qid\tpid\tgrade\nq1\tp1\nq1\tp2\t3\n"), nullptr, nullptr);
  ASSERT_EQ(qrels.size(), 2u);
  EXPECT_EQ(qrels[0].qid, "q1");
  EXPECT_EQ(qrels[0].pid, "p1");
  EXPECT_EQ(qrels[0].grade, 1);
  EXPECT_EQ(qrels[1].pid, "p2");
  EXPECT_EQ(qrels[1].grade, 3);
}

TEST_F(ReadersTest, TrecRun) {
  Corpus corpus = corpus_p1_p2();
  auto queries = queries_q1_q2();
  auto run = read_trec_run(write("run.trec",
                                 "q1 Q0 p2 2 1.5 bm25\n"
                                 "q2 Q0 p1 1 -3 bm25\n"
                                 "q1 Q0 p1 1 +2.5e0 bm25\n"
                                 "q2\tx\tp2\t7\t-3\tbm25\n"),
                           &corpus, &queries);
  ASSERT_EQ(run.size(), 4u);
  EXPECT_EQ(run[0].qid, "q1");
  EXPECT_EQ(run[0].pid, "p2");
  EXPECT_EQ(run[0].rank, 2);
  EXPECT_DOUBLE_EQ(run[0].score, 1.5);
  EXPECT_EQ(run[0].tag, "bm25");
  EXPECT_DOUBLE_EQ(run[2].score, 2.5);
  EXPECT_EQ(run[3].rank, 7);
  EXPECT_DOUBLE_EQ(run[3].score, -3);
}

// --------------------------------------------------------------------------------- whole-file errors

TEST_F(ReadersTest, MissingFile) {
  std::string path = dir_ + "/nope.tsv";
  EXPECT_DATA_ERROR(read_queries(path), path, 0, "cannot open: No such file or directory (check the path)");
}

TEST_F(ReadersTest, DirectoryInsteadOfFile) {
  std::string path = dir_ + "/sub.tsv";
  std::filesystem::create_directory(path);
  EXPECT_DATA_ERROR(read_corpus(path), path, 0, "directory");
}

TEST_F(ReadersTest, CorruptGzip) {
  std::string good = write("full.gz", std::string(100000, 'a') + "\tb\n", true);
  std::ifstream in(good, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string path = write("cut.tsv.gz", bytes.substr(0, bytes.size() / 2));
  EXPECT_DATA_ERROR(read_queries(path), path, 1, "gunzip");
}

TEST_F(ReadersTest, EmptyFiles) {
  std::string empty = write("empty.tsv", "");
  EXPECT_DATA_ERROR(read_corpus(empty), empty, 0, "no passages");
  EXPECT_DATA_ERROR(read_queries(empty), empty, 0, "no queries");
  EXPECT_DATA_ERROR(read_qrels(empty, nullptr, nullptr), empty, 0, "no qrels");
  EXPECT_DATA_ERROR(read_trec_run(empty, nullptr, nullptr), empty, 0, "no run lines");
  std::string header_only = write("header.tsv", "pid\ttitle\ttext\n\n");
  EXPECT_DATA_ERROR(read_corpus(header_only), header_only, 0, "no passages");
  std::string jsonl = write("blank.jsonl.gz", "\n\n", true);
  EXPECT_DATA_ERROR(read_corpus(jsonl), jsonl, 0, "no passages");
}

TEST_F(ReadersTest, UnknownCorpusExtension) {
  std::string path = write("corpus.csv", "p1\tt\tx\n");
  EXPECT_DATA_ERROR(read_corpus(path), path, 0, "expected .tsv, .jsonl");
}

// ------------------------------------------------------------------------------- line-level errors

TEST_F(ReadersTest, InvalidUtf8) {
  std::string path = write("q.tsv", "q1\tok\nq2\tcaf\xE9 au lait\n");
  EXPECT_DATA_ERROR(read_queries(path), path, 2, "not valid UTF-8 at byte 7");
}

TEST_F(ReadersTest, EmbeddedNul) {
  std::string path = write("q.tsv", std::string("q1\tok\n\nq2\tbad\0text\n", 19));
  EXPECT_DATA_ERROR(read_queries(path), path, 3, "NUL byte at byte 7");
}

TEST_F(ReadersTest, EmbeddedNulInJsonString) {
  std::string path = write("c.jsonl", "{\"pid\": \"p1\", \"text\": \"a\\u0000b\"}\n");
  EXPECT_DATA_ERROR(read_corpus(path), path, 1, "text of passage 'p1' holds a NUL byte");
  std::string pid = write("pid.jsonl", "{\"pid\": \"p\\u00001\", \"text\": \"x\"}\n");
  EXPECT_DATA_ERROR(read_corpus(pid), pid, 1, "passage id 'p\\x001' holds a NUL byte");
}

TEST_F(ReadersTest, WhitespaceOnlyLine) {
  std::string path = write("run.trec", "q1 Q0 p1 1 1 t\n  \t \n");
  EXPECT_DATA_ERROR(read_trec_run(path, nullptr, nullptr), path, 2, "only whitespace");
}

TEST_F(ReadersTest, CorpusTsvWrongFieldCount) {
  std::string path = write("c.tsv", "p1\tt\tx\np2\tonly two\n");
  EXPECT_DATA_ERROR(read_corpus(path), path, 2, "found 2 tab-separated fields, expected 3 or 4");
  std::string five = write("c5.tsv", "p1\tt\tx\tpq\textra\n");
  EXPECT_DATA_ERROR(read_corpus(five), five, 1, "found 5 tab-separated fields");
}

// Note [Trust the header]: the header's column count is the count of every line.
TEST_F(ReadersTest, CorpusTsvHeaderDeclaresTheColumns) {
  std::string stray_tab = write("stray.tsv", "pid\ttitle\ttext\np1\tT\tone\np2\tT\ttwo words\tmore text\n");
  EXPECT_DATA_ERROR(read_corpus(stray_tab), stray_tab, 3,
                    "found 4 tab-separated fields, but the header (line 1) names 3 columns (pid<TAB>title<TAB>text)");
  EXPECT_DATA_ERROR(read_corpus(stray_tab), stray_tab, 3, "replace tabs inside the text with spaces");
  std::string with_pq = write("pq.tsv", "pid\ttitle\ttext\tpseudo_queries\np1\tT\tone\ta ||| b\np2\tT\ttwo\t\n");
  Corpus c = read_corpus(with_pq);
  ASSERT_EQ(c.passages.size(), 2u);
  EXPECT_EQ(c.passages[0].pseudo_queries, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(c.passages[1].pseudo_queries.empty());
  std::string missing_pq = write("missing.tsv", "pid\ttitle\ttext\tpseudo_queries\np1\tT\tone\ta\np2\tT\ttwo\n");
  EXPECT_DATA_ERROR(read_corpus(missing_pq), missing_pq, 3, "found 3 tab-separated fields, but the header (line 1) names 4");
  std::string gz_stray = write("stray.tsv.gz", "pid\ttitle\ttext\n\np1\tT\ta\tb\n", true);
  EXPECT_DATA_ERROR(read_corpus(gz_stray), gz_stray, 3, "but the header (line 1) names 3 columns");
  std::string bad_header = write("header5.tsv", "pid\ttitle\ttext\tpq\textra\np1\tT\tone\n");
  EXPECT_DATA_ERROR(read_corpus(bad_header), bad_header, 1, "the header names 5 columns, expected 2");
  std::string no_header = write("noheader.tsv", "p1\tT\tone\np2\tT\ttwo\tpq\n");
  EXPECT_EQ(read_corpus(no_header).passages.size(), 2u);  // without a header 3 or 4 fields, as before
}

TEST_F(ReadersTest, CorpusEmptyPid) {
  std::string path = write("c.tsv", "p1\tt\tx\n\tt\ty\n");
  EXPECT_DATA_ERROR(read_corpus(path), path, 2, "empty passage id");
}

TEST_F(ReadersTest, CorpusPidWithWhitespace) {
  std::string path = write("c.tsv", "p 1\tt\tx\n");
  EXPECT_DATA_ERROR(read_corpus(path), path, 1, "passage id 'p 1' contains whitespace");
}

TEST_F(ReadersTest, CorpusEmptyText) {
  std::string path = write("c.tsv", "p1\tt\tx\np2\ttitle\t  \n");
  EXPECT_DATA_ERROR(read_corpus(path), path, 2, "text of passage 'p2' is empty");
}

TEST_F(ReadersTest, CorpusEmptyPseudoQuery) {
  std::string path = write("c.tsv", "p1\tt\tx\ta ||| ||| b\n");
  EXPECT_DATA_ERROR(read_corpus(path), path, 1, "pseudo-query 2 of passage 'p1' is empty");
}

TEST_F(ReadersTest, CorpusDuplicatePid) {
  std::string tsv = write("c.tsv", "p1\tt\tx\np2\tt\ty\n\np1\tt\tz\n");
  EXPECT_DATA_ERROR(read_corpus(tsv), tsv, 4, "passage id 'p1' is a duplicate, also on line 1");
  std::string jsonl = write("c.jsonl", "{\"pid\":\"p1\",\"text\":\"x\"}\n{\"id\":\"p1\",\"text\":\"y\"}\n");
  EXPECT_DATA_ERROR(read_corpus(jsonl), jsonl, 2, "also on line 1");
}

TEST_F(ReadersTest, JsonlMalformed) {
  std::string path = write("c.jsonl", "{\"pid\":\"p1\",\"text\":\"x\"}\n{\"pid\":\"p2\",\"text\":\"y\"\n");
  EXPECT_DATA_ERROR(read_corpus(path), path, 2, "malformed JSON");
}

TEST_F(ReadersTest, JsonlNotAnObject) {
  std::string path = write("c.jsonl", "[\"p1\", \"x\"]\n");
  EXPECT_DATA_ERROR(read_corpus(path), path, 1, "found a JSON array, expected an object");
}

TEST_F(ReadersTest, JsonlMissingPid) {
  std::string path = write("c.jsonl", "{\"text\":\"x\"}\n");
  EXPECT_DATA_ERROR(read_corpus(path), path, 1, "no \"pid\" key");
}

TEST_F(ReadersTest, JsonlBothPidAndId) {
  std::string path = write("c.jsonl", "{\"pid\":\"p1\",\"id\":\"p2\",\"text\":\"x\"}\n");
  EXPECT_DATA_ERROR(read_corpus(path), path, 1, "both \"pid\" and \"id\"");
}

TEST_F(ReadersTest, JsonlMissingText) {
  std::string path = write("c.jsonl", "{\"pid\":\"p1\",\"body\":\"x\"}\n");
  EXPECT_DATA_ERROR(read_corpus(path), path, 1, "no \"text\" key in passage 'p1'");
  EXPECT_DATA_ERROR(read_corpus(path), path, 1, "found \"body\": rename it to \"text\"");
  std::string both = write("both.jsonl", "{\"pid\":\"p1\",\"text\":\"x\",\"contents\":\"y\"}\n");
  EXPECT_DATA_ERROR(read_corpus(both), both, 1, "both \"text\" and \"contents\"");
}

// The field's own formats: pyserini's JSONL ({"id", "contents"}) and MS MARCO's collection.tsv (pid<TAB>text,
// no header, no title), with or without a 2-column header; a 2-field file stays 2 fields on every line.
TEST_F(ReadersTest, CorporaWithoutTitles) {
  Corpus pyserini = read_corpus(write("pyserini.jsonl", "{\"id\": \"7\", \"contents\": \"seven\"}\n"
                                                        "{\"id\": \"8\", \"contents\": \"eight\", \"title\": \"T\"}\n"));
  ASSERT_EQ(pyserini.passages.size(), 2u);
  EXPECT_EQ(pyserini.passages[0].pid, "7");
  EXPECT_EQ(pyserini.passages[0].text, "seven");
  EXPECT_EQ(pyserini.passages[0].title, "");
  EXPECT_EQ(pyserini.passages[1].title, "T");
  Corpus msmarco = read_corpus(write("collection.tsv", "0\tThe presence of communication amid scientific minds\n"
                                                       "1\tThe Manhattan Project and its atomic bomb\n"));
  ASSERT_EQ(msmarco.passages.size(), 2u);
  EXPECT_EQ(msmarco.passages[1].pid, "1");
  EXPECT_EQ(msmarco.passages[1].title, "");
  EXPECT_EQ(msmarco.passages[1].text, "The Manhattan Project and its atomic bomb");
  EXPECT_EQ(read_corpus(write("header2.tsv", "pid\ttext\np1\tone\n")).passages[0].text, "one");
  std::string stray = write("stray2.tsv", "0\tfirst\n1\ttwo\tparts\n");
  EXPECT_DATA_ERROR(read_corpus(stray), stray, 2, "found 3 tab-separated fields, but line 1 (no header) has 2 columns "
                                                  "(pid<TAB>text)");
  std::string empty = write("empty2.tsv", "0\t\n");
  EXPECT_DATA_ERROR(read_corpus(empty), empty, 1, "text of passage '0' is empty");
}

TEST_F(ReadersTest, JsonlEmptyText) {
  std::string path = write("c.jsonl", "{\"pid\":\"p1\",\"text\":\"\"}\n");
  EXPECT_DATA_ERROR(read_corpus(path), path, 1, "text of passage 'p1' is empty");
}

TEST_F(ReadersTest, JsonlWrongTypes) {
  std::string pid = write("pid.jsonl", "{\"pid\":17,\"text\":\"x\"}\n");
  EXPECT_DATA_ERROR(read_corpus(pid), pid, 1, "\"pid\" is a JSON number, expected a string");
  std::string text = write("text.jsonl", "{\"pid\":\"p1\",\"text\":[\"x\"]}\n");
  EXPECT_DATA_ERROR(read_corpus(text), text, 1, "\"text\" is a JSON array, expected a string");
  std::string title = write("title.jsonl", "{\"pid\":\"p1\",\"text\":\"x\",\"title\":null}\n");
  EXPECT_DATA_ERROR(read_corpus(title), title, 1, "\"title\" is a JSON null, expected a string");
  std::string pqs = write("pqs.jsonl", "{\"pid\":\"p1\",\"text\":\"x\",\"pseudo_queries\":\"a\"}\n");
  EXPECT_DATA_ERROR(read_corpus(pqs), pqs, 1, "\"pseudo_queries\" is a JSON string, expected an array");
  std::string pq = write("pq.jsonl", "{\"pid\":\"p1\",\"text\":\"x\",\"pseudo_queries\":[\"a\",2]}\n");
  EXPECT_DATA_ERROR(read_corpus(pq), pq, 1, "pseudo-query 2 of passage 'p1' is a JSON number");
}

TEST_F(ReadersTest, QueriesWrongFieldCount) {
  std::string path = write("q.tsv", "q1\ta\tb\n");
  EXPECT_DATA_ERROR(read_queries(path), path, 1, "found 3 tab-separated fields, expected 2");
  std::string one = write("one.tsv", "q1 no tab\n");
  EXPECT_DATA_ERROR(read_queries(one), one, 1, "found 1 tab-separated field, expected 2");
}

TEST_F(ReadersTest, QueriesEmptyQidOrText) {
  std::string qid = write("qid.tsv", "q1\tok\n\ttext\n");
  EXPECT_DATA_ERROR(read_queries(qid), qid, 2, "empty query id");
  std::string text = write("text.tsv", "q1\t\n");
  EXPECT_DATA_ERROR(read_queries(text), text, 1, "text of query 'q1' is empty");
}

TEST_F(ReadersTest, QueriesDuplicateQid) {
  std::string path = write("q.tsv", "qid\ttext\nq1\ta\nq2\tb\nq1\tc\n");
  EXPECT_DATA_ERROR(read_queries(path), path, 4, "query id 'q1' is a duplicate, also on line 2");
}

TEST_F(ReadersTest, QrelsUnknownFormat) {
  std::string path = write("qrels.txt", "q1 p1\n");
  EXPECT_DATA_ERROR(read_qrels(path, nullptr, nullptr), path, 1, "expected TREC qrels 'qid 0 pid grade' or TSV");
}

TEST_F(ReadersTest, QrelsTrecWrongFieldCount) {
  std::string path = write("qrels.txt", "q1 0 p1 1\nq1 0 p2\n");
  EXPECT_DATA_ERROR(read_qrels(path, nullptr, nullptr), path, 2, "found 3 whitespace-separated fields, expected 4");
  std::string five = write("five.txt", "q1 0 p1 1\nq1 0 p2 1 extra\n");
  EXPECT_DATA_ERROR(read_qrels(five, nullptr, nullptr), five, 2, "found 5 whitespace-separated fields, expected 4");
}

TEST_F(ReadersTest, QrelsTrecSecondFieldNotInteger) {
  std::string path = write("qrels.txt", "q1 0 p1 1\nq1 Q0 p2 1\n");
  EXPECT_DATA_ERROR(read_qrels(path, nullptr, nullptr), path, 2, "second field 'Q0' is not an integer");
}

TEST_F(ReadersTest, QrelsTsvWrongFieldCount) {
  std::string path = write("qrels.tsv", "q1\tp1\t1\nq1 0 p2 1\n");
  EXPECT_DATA_ERROR(read_qrels(path, nullptr, nullptr), path, 2, "found 1 tab-separated field, expected 2 or 3");
  std::string four = write("four.tsv", "q1\tp1\nq1\tp2\t1\textra\n");
  EXPECT_DATA_ERROR(read_qrels(four, nullptr, nullptr), four, 2, "found 4 tab-separated fields, expected 2 or 3");
}

TEST_F(ReadersTest, QrelsTsvEmptyPid) {
  std::string path = write("qrels.tsv", "q1\t\t1\n");
  EXPECT_DATA_ERROR(read_qrels(path, nullptr, nullptr), path, 1, "empty passage id");
}

TEST_F(ReadersTest, QrelsGradeNotInteger) {
  std::string trec = write("qrels.txt", "q1 0 p1 1\nq1 0 p2 1.5\n");
  EXPECT_DATA_ERROR(read_qrels(trec, nullptr, nullptr), trec, 2, "grade '1.5' is not an integer");
  std::string tsv = write("qrels.tsv", "q1\tp1\thigh\n");
  EXPECT_DATA_ERROR(read_qrels(tsv, nullptr, nullptr), tsv, 1, "grade 'high' is not an integer");
}

TEST_F(ReadersTest, QrelsDuplicatePair) {
  std::string path = write("qrels.txt", "q1 0 p1 1\nq1 0 p2 1\nq2 0 p1 1\nq1 0 p1 0\n");
  EXPECT_DATA_ERROR(read_qrels(path, nullptr, nullptr), path, 4, "also on line 1");
}

TEST_F(ReadersTest, QrelsUnknownIds) {
  Corpus corpus = corpus_p1_p2();
  auto queries = queries_q1_q2();
  std::string pid = write("pid.txt", "q1 0 p1 1\nq1 0 p77 1\n");
  EXPECT_DATA_ERROR(read_qrels(pid, &corpus, &queries), pid, 2,
                    "passage id 'p77' is not in the corpus (are the qrels from another corpus?)");
  std::string qid = write("qid.tsv", "q9\tp1\n");
  EXPECT_DATA_ERROR(read_qrels(qid, &corpus, &queries), qid, 1, "query id 'q9' is not in the queries");
  // Without a corpus and queries the same ids are accepted.
  EXPECT_EQ(read_qrels(pid, nullptr, nullptr).size(), 2u);
}

TEST_F(ReadersTest, RunWrongFieldCount) {
  std::string path = write("run.trec", "q1 Q0 p1 1 2.0 t\nq1 Q0 p2 2 1.0\n");
  EXPECT_DATA_ERROR(read_trec_run(path, nullptr, nullptr), path, 2, "found 5 whitespace-separated fields, expected 6");
  std::string seven = write("seven.trec", "q1 Q0 p1 1 2.0 my run\n");
  EXPECT_DATA_ERROR(read_trec_run(seven, nullptr, nullptr), seven, 1, "found 7 whitespace-separated fields, expected 6");
}

TEST_F(ReadersTest, RunBadRank) {
  std::string word = write("word.trec", "q1 Q0 p1 first 2.0 t\n");
  EXPECT_DATA_ERROR(read_trec_run(word, nullptr, nullptr), word, 1, "rank 'first' is not a positive integer");
  std::string zero = write("zero.trec", "q1 Q0 p1 1 2.0 t\nq1 Q0 p2 0 1.0 t\n");
  EXPECT_DATA_ERROR(read_trec_run(zero, nullptr, nullptr), zero, 2, "rank '0' is not a positive integer");
  std::string negative = write("neg.trec", "q1 Q0 p1 -2 2.0 t\n");
  EXPECT_DATA_ERROR(read_trec_run(negative, nullptr, nullptr), negative, 1, "rank '-2' is not a positive");
}

TEST_F(ReadersTest, RunBadScore) {
  std::string word = write("word.trec", "q1 Q0 p1 1 high t\n");
  EXPECT_DATA_ERROR(read_trec_run(word, nullptr, nullptr), word, 1, "score 'high' is not a number");
  std::string nan = write("nan.trec", "q1 Q0 p1 1 2 t\nq1 Q0 p2 2 nan t\n");
  EXPECT_DATA_ERROR(read_trec_run(nan, nullptr, nullptr), nan, 2, "score 'nan' is not finite");
  std::string inf = write("inf.trec", "q1 Q0 p1 1 -inf t\n");
  EXPECT_DATA_ERROR(read_trec_run(inf, nullptr, nullptr), inf, 1, "score '-inf' is not finite");
  std::string overflow = write("overflow.trec", "q1 Q0 p1 1 1e999 t\n");
  EXPECT_DATA_ERROR(read_trec_run(overflow, nullptr, nullptr), overflow, 1, "score '1e999' is not finite");
}

TEST_F(ReadersTest, RunDuplicateRank) {
  std::string path = write("run.trec", "q1 Q0 p1 1 2 t\nq2 Q0 p1 2 1 t\nq1 Q0 p2 1 2 t\n");
  EXPECT_DATA_ERROR(read_trec_run(path, nullptr, nullptr), path, 3, "rank 1 of query 'q1' is a duplicate, also on line 1");
}

TEST_F(ReadersTest, RunDuplicatePair) {
  std::string path = write("run.trec", "q1 Q0 p1 1 2 t\nq1 Q0 p2 2 1 t\nq1 Q0 p1 3 0 t\n");
  EXPECT_DATA_ERROR(read_trec_run(path, nullptr, nullptr), path, 3,
                    "passage 'p1' is ranked twice for query 'q1', also on line 1");
}

TEST_F(ReadersTest, RunRanksContradictScores) {
  std::string path = write("run.trec",
                           "q1 Q0 p1 1 3.0 t\n"
                           "q2 Q0 p1 1 9 t\n"
                           "q1 Q0 p3 3 2.5 t\n"
                           "q1 Q0 p2 2 1.0 t\n"
                           "q1 Q0 p4 4 2.5 t\n");
  EXPECT_DATA_ERROR(read_trec_run(path, nullptr, nullptr), path, 3,
                    "rank 3 has score 2.5 above rank 2's 1.0 on line 4");
  // Equal scores are allowed.
  std::string ties = write("ties.trec", "q1 Q0 p1 1 2 t\nq1 Q0 p2 2 2 t\nq1 Q0 p3 3 1 t\n");
  EXPECT_EQ(read_trec_run(ties, nullptr, nullptr).size(), 3u);
}

TEST_F(ReadersTest, WrittenRunsHaveNoTies) {
  // Note [Written scores]: ties (also ones that only the 6 decimals or a float make) become strictly
  // decreasing; other scores, the order, the ranks and the interleaving of queries stay as they are.
  std::vector<RunEntry> run = {
      {"q1", "a", 1, 5.0, "t"},       {"q2", "x", 1, 64.25, "t"},    {"q1", "b", 2, 5.0, "t"},
      {"q2", "y", 2, 64.2499999, "t"},  // "64.250000" when written
      {"q1", "c", 3, 5.0, "t"},       {"q2", "z", 3, 64.249999, "t"},  // another 6-decimal, the same float
      {"q1", "d", 4, 4.0, "t"},       {"q2", "w", 4, -2.5, "t"},
  };
  const std::string path = dir_ + "/run.trec";
  write_trec_run(path, run);
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text,
            "q1 Q0 a 1 5.000000 t\n"
            "q2 Q0 x 1 64.250000 t\n"
            "q1 Q0 b 2 4.999999 t\n"
            "q2 Q0 y 2 64.249992 t\n"  // the float below 64.25 is 64.25 - 2^-17
            "q1 Q0 c 3 4.999998 t\n"
            "q2 Q0 z 3 64.249984 t\n"
            "q1 Q0 d 4 4.000000 t\n"
            "q2 Q0 w 4 -2.500000 t\n");
  auto back = read_trec_run(path, nullptr, nullptr);
  ASSERT_EQ(back.size(), run.size());
  for (size_t i = 2; i < back.size(); ++i) {  // entries i - 2 and i are of the same query
    EXPECT_LT(static_cast<float>(back[i].score), static_cast<float>(back[i - 2].score)) << "entry " << i;
    EXPECT_EQ(back[i].rank, run[i].rank);
  }
  std::vector<RunEntry> twice = back;
  untie_scores(twice);  // idempotent: nothing left to untie
  for (size_t i = 0; i < back.size(); ++i) EXPECT_EQ(twice[i].score, back[i].score) << "entry " << i;
}

TEST_F(ReadersTest, UntieNeedsRankOrder) {
  std::vector<RunEntry> backwards = {{"q1", "a", 2, 5.0, "t"}, {"q1", "b", 1, 5.0, "t"}};
  EXPECT_THROW(untie_scores(backwards), dgr::Error);
  std::vector<RunEntry> rising = {{"q1", "a", 1, 5.0, "t"}, {"q1", "b", 2, 6.0, "t"}};
  EXPECT_THROW(untie_scores(rising), dgr::Error);
}

TEST_F(ReadersTest, RunUnknownIds) {
  Corpus corpus = corpus_p1_p2();
  auto queries = queries_q1_q2();
  std::string pid = write("pid.trec", "q1 Q0 p1 1 2 t\nq1 Q0 p77 2 1 t\n");
  EXPECT_DATA_ERROR(read_trec_run(pid, &corpus, &queries), pid, 2, "passage id 'p77' is not in the corpus");
  std::string qid = write("qid.trec", "q9 Q0 p1 1 2 t\n");
  EXPECT_DATA_ERROR(read_trec_run(qid, &corpus, &queries), qid, 1, "query id 'q9' is not in the queries");
}

TEST_F(ReadersTest, ErrorMessagesStayOnOneLine) {
  // A control character inside a reported value is escaped, not copied into the message.
  std::string path = write("c.jsonl", "{\"pid\":\"p\\n1\",\"text\":\"x\"}\n");
  EXPECT_DATA_ERROR(read_corpus(path), path, 1, "passage id 'p\\x0A1' contains whitespace");
}

// `dgr data split`: the two parts partition the queries and their judgements, the drawn part has
// round(fraction * n) queries, the hash order depends on the seed and the ids only (not on the other queries
// or the file order), each part keeps the file's order, and a refused split writes nothing.
TEST_F(ReadersTest, QuerySplitPartitionsQueriesAndJudgementsByAHashOfTheIds) {
  std::string corpus, queries = "qid\ttext\n", qrels;
  for (int i = 0; i < 40; ++i) {
    corpus += fmt::format("p{}\tt{}\tbody {}\n", i, i, i);
    queries += fmt::format("q{}\tquery {}\n", i, i);
    qrels += fmt::format("q{}\tp{}\t1\nq{}\tp{}\t2\n", i, i, i, (i + 1) % 40);
  }
  write("corpus.tsv", corpus);
  write("queries.train.tsv", queries);
  write("qrels.train.tsv", qrels);
  QuerySplitOptions o;
  o.data_dir = dir_;
  o.fraction = 0.3;
  const QuerySplitReport report = split_queries(o);
  EXPECT_EQ(report.second_queries, 12u);
  EXPECT_EQ(report.first_queries, 28u);
  const auto first = read_queries(dir_ + "/queries.train-stage1.tsv");
  const auto second = read_queries(dir_ + "/queries.train-stage2.tsv");
  ASSERT_EQ(first.size(), 28u);
  ASSERT_EQ(second.size(), 12u);
  std::set<std::string> all;
  for (const auto& part : {first, second}) {
    int last = -1;
    for (const auto& q : part) {
      EXPECT_TRUE(all.insert(q.qid).second) << q.qid << " is in both parts";
      const int number = std::stoi(q.qid.substr(1));
      EXPECT_GT(number, last) << "a part is not in the file's order";
      last = number;
      EXPECT_EQ(q.text, "query " + q.qid.substr(1));
    }
  }
  EXPECT_EQ(all.size(), 40u);
  for (const auto& [split, part] : {std::pair{std::string("train-stage1"), first}, std::pair{std::string("train-stage2"), second}}) {
    const auto judged = read_qrels(dir_ + "/qrels." + split + ".tsv", nullptr, &part);  // every qid in the part
    EXPECT_EQ(judged.size(), 2 * part.size()) << split;
    for (const auto& r : judged) {
      const int number = std::stoi(r.qid.substr(1));
      EXPECT_EQ(r.pid, fmt::format("p{}", r.grade == 1 ? number : (number + 1) % 40)) << r.qid;
    }
  }
  // Another seed draws other queries; the same seed on a reversed file with fewer queries draws from the
  // same order: the queries it draws come first among the remaining ones.
  o.seed = 2;
  o.force = true;
  split_queries(o);
  std::set<std::string> drawn, drawn_seed2;
  for (const auto& q : second) drawn.insert(q.qid);
  for (const auto& q : read_queries(dir_ + "/queries.train-stage2.tsv")) drawn_seed2.insert(q.qid);
  EXPECT_EQ(drawn_seed2.size(), 12u);
  EXPECT_NE(drawn_seed2, drawn);
  std::string reversed = "qid\ttext\n";
  for (int i = 39; i >= 0; --i) if (i % 3 != 0) reversed += fmt::format("q{}\tquery {}\n", i, i);
  write("queries.more.tsv", reversed);
  std::string more_qrels;
  for (int i = 39; i >= 0; --i) if (i % 3 != 0) more_qrels += fmt::format("q{}\tp{}\n", i, i);
  write("qrels.more.tsv", more_qrels);
  o.seed = 1;
  o.from = "more";
  o.first = "a";
  o.second = "b";
  o.fraction = 12.0 / 40;
  split_queries(o);
  const auto a = read_queries(dir_ + "/queries.a.tsv");
  const auto b = read_queries(dir_ + "/queries.b.tsv");
  EXPECT_EQ(b.size(), 8u);  // round(0.3 * 26)
  std::set<std::string> drawn_from_more;
  for (const auto& q : b) drawn_from_more.insert(q.qid);
  size_t kept_drawn = 0;  // the queries drawn from all 40 that remain: first in the order, so drawn again
  for (int i = 0; i < 40; ++i) {
    const std::string qid = fmt::format("q{}", i);
    if (i % 3 == 0 || drawn.count(qid) == 0) continue;
    ++kept_drawn;
    EXPECT_EQ(drawn_from_more.count(qid), 1u) << qid << " was drawn from all queries but not from a subset";
  }
  EXPECT_GT(kept_drawn, 4u);

  // Refused: parts that exist (without force), a fraction that leaves a part empty, the same name twice.
  o.force = false;
  EXPECT_THROW(split_queries(o), ConfigError);
  o.force = true;
  o.first = "c";
  o.second = "d";
  o.fraction = 0.01;
  EXPECT_THROW(split_queries(o), ConfigError);
  o.fraction = 0.5;
  o.second = "c";
  EXPECT_THROW(split_queries(o), ConfigError);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/queries.c.tsv"));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/queries.d.tsv"));
  // A judgement of a passage the corpus lacks is a DataError naming the file and line; nothing is written.
  write("qrels.more.tsv", more_qrels + "q1\tnowhere\n");
  o.second = "d";
  EXPECT_DATA_ERROR(split_queries(o), dir_ + "/qrels.more.tsv", 27, "nowhere");
  for (const auto& entry : std::filesystem::directory_iterator(dir_))
    EXPECT_EQ(entry.path().filename().string().find(".c."), std::string::npos) << entry.path();
}

// `dgr data corpus-queries`: one query per drawn passage, judged by its source passage only; keywords are
// distinct body words in body order, never function words, short words, numbers or title words; a sentence
// query is one whole body sentence within the length bounds; passages that qualify are taken in hash order
// (a passage that does not qualify is skipped, not counted); a refused call writes nothing.
TEST_F(ReadersTest, CorpusQueriesComeFromTheirPassagesBodies) {
  std::string corpus = "pid\ttitle\ttext\n";
  for (int i = 0; i < 30; ++i)
    corpus += fmt::format("p{}\tzebra{} tool\tThe zebra{} tool parses alpha{} beta{} and gamma{} with 12345 of "
                          "delta{} files. It is fast; very fast indeed for epsilon{} loads!\n", i, i, i, i, i, i, i, i, i);
  corpus += "short\tshort\tTiny, the and of it.\n";  // one eligible word, one short sentence: skipped
  write("corpus.tsv", corpus);
  CorpusQueryOptions o;
  o.data_dir = dir_;
  o.count = 100;  // more than qualify: every passage is tried
  o.words = 3;
  const CorpusQueryReport report = make_corpus_queries(o);
  EXPECT_EQ(report.queries, 30u);
  EXPECT_EQ(report.passages, 31u);
  EXPECT_EQ(report.passages_tried, 31u);
  const auto queries = read_queries(dir_ + "/queries.corpus.tsv");
  const auto judged = read_qrels(dir_ + "/qrels.corpus.tsv", nullptr, &queries);
  ASSERT_EQ(queries.size(), 30u);
  ASSERT_EQ(judged.size(), 30u);
  std::set<std::string> words_seen;
  for (size_t k = 0; k < queries.size(); ++k) {
    const auto& q = queries[k];
    ASSERT_EQ(q.qid.rfind("c:p", 0), 0u) << q.qid;
    const std::string i = q.qid.substr(3);
    EXPECT_EQ(judged[k].qid, q.qid);
    EXPECT_EQ(judged[k].pid, "p" + i);
    // The eligible words of passage i, in body order ("zebraI" and "tool" are title words).
    const std::vector<std::string> eligible = {"parses", "alpha" + i, "beta" + i, "gamma" + i, "delta" + i,
                                               "files", "fast", "indeed", "epsilon" + i, "loads"};
    std::vector<std::string> words;
    std::string w;
    for (char c : q.text + " ") {
      if (c != ' ') { w += c; continue; }
      words.push_back(w);
      w.clear();
    }
    ASSERT_EQ(words.size(), 3u) << q.text;
    size_t last = 0;
    for (const auto& word : words) {
      const auto at = std::find(eligible.begin(), eligible.end(), word);
      ASSERT_NE(at, eligible.end()) << "'" << word << "' is not an eligible body word of p" << i;
      const auto pos = static_cast<size_t>(at - eligible.begin()) + 1;
      EXPECT_GT(pos, last) << q.text << ": not in body order";
      last = pos;
      words_seen.insert(word.rfind("alpha", 0) == 0 ? "alpha" : word);
    }
  }
  EXPECT_GT(words_seen.size(), 5u);  // the hash draws different words for different passages

  // Fewer than asked: the first `count` qualifying passages in hash order, a subset of the above.
  o.count = 7;
  o.force = true;
  o.split = "few";
  EXPECT_EQ(make_corpus_queries(o).queries, 7u);
  std::set<std::string> all;
  for (const auto& q : queries) all.insert(q.qid + "\t" + q.text);
  for (const auto& q : read_queries(dir_ + "/queries.few.tsv")) EXPECT_EQ(all.count(q.qid + "\t" + q.text), 1u) << q.qid;

  // Sentences of 13, 3 and 6 words ("12345" counts): with bounds 7..13 only the first qualifies.
  o.kind = "sentence";
  o.split = "sentences";
  o.count = 100;
  o.min_sentence_words = 7;
  o.max_sentence_words = 13;
  EXPECT_EQ(make_corpus_queries(o).queries, 30u);
  for (const auto& q : read_queries(dir_ + "/queries.sentences.tsv")) {
    const std::string i = q.qid.substr(3);
    EXPECT_EQ(q.text, fmt::format("The zebra{} tool parses alpha{} beta{} and gamma{} with 12345 of delta{} files", i, i,
                                  i, i, i));
  }
  o.min_sentence_words = 3;
  o.max_sentence_words = 3;
  o.split = "shortest";
  EXPECT_EQ(make_corpus_queries(o).queries, 30u);
  for (const auto& q : read_queries(dir_ + "/queries.shortest.tsv")) EXPECT_EQ(q.text, "It is fast");
  o.min_sentence_words = 6;  // 13 and 6 words qualify: the hash picks each for some of the 30 passages
  o.max_sentence_words = 13;
  o.split = "any";
  EXPECT_EQ(make_corpus_queries(o).queries, 30u);
  std::set<std::string> kinds;
  for (const auto& q : read_queries(dir_ + "/queries.any.tsv")) kinds.insert(q.text.substr(0, 4));
  EXPECT_EQ(kinds, (std::set<std::string>{"The ", "very"}));

  // Refused: an existing split without force; no passage qualifying. Nothing written.
  o.force = false;
  EXPECT_THROW(make_corpus_queries(o), ConfigError);
  o.force = true;
  o.kind = "keywords";
  o.words = 11;
  o.split = "none";
  EXPECT_THROW(make_corpus_queries(o), ConfigError);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/queries.none.tsv"));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/qrels.none.tsv"));
}

}  // namespace
}  // namespace dgr::data
