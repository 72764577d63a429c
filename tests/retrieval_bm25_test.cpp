// Tests of the BM25 baseline (retrieval/bm25.h): ranking, Okapi scores as Xapian computes them, odd query
// text, TREC runs.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

#include "common/error.h"
#include "retrieval/bm25.h"
#include "data/readers.h"
#include "data/trec.h"

namespace dgr::retrieval {
namespace {

data::Corpus make_corpus(const std::vector<data::Passage>& passages) {
  data::Corpus corpus;
  for (const auto& passage : passages) {
    corpus.index_of[passage.pid] = corpus.passages.size();
    corpus.passages.push_back(passage);
  }
  return corpus;
}

// Lengths (title + text) 4, 4, 5, 3, 11, 3: 30 terms, average 5. Plain lower-case words only, so that a
// whitespace split counts what Xapian indexes.
data::Corpus small_corpus() {
  return make_corpus({
      {"p1", "alpha", "apple banana cherry", {}},
      {"p2", "beta", "banana banana date", {}},
      {"p3", "", "cherry date elderberry fig grape", {}},
      {"p4", "gamma", "zebra apple", {}},
      {"p5", "delta", "apple apple apple banana cherry date elderberry fig grape honeydew", {}},
      {"p6", "epsilon", "kiwi lemon", {}},
  });
}

size_t count_words(const std::string& text, const std::string& word) {
  std::istringstream in(text);
  size_t count = 0;
  for (std::string token; in >> token;) count += (word.empty() || token == word) ? 1 : 0;
  return count;
}

// Okapi BM25 for a one-term query (wqf 1) as Xapian's BM25Weight(k1, 0, 1, b, 0.5) computes it.
double okapi(double N, double n, double wdf, double doclen, double avglen, double k1, double b) {
  double r = (N - n + 0.5) / (n + 0.5);
  if (r < 2) r = r * 0.5 + 1;  // Xapian's clamp keeping the idf positive
  const double normlen = std::max(doclen / avglen, 0.5);
  return std::log(r) * (k1 + 1) * wdf / (k1 * ((1 - b) + b * normlen) + wdf);
}

void expect_hand_computed_scores(const std::string& term, double k1, double b) {
  const data::Corpus corpus = small_corpus();
  Bm25Options options;
  options.k1 = k1;
  options.b = b;
  const Bm25Index index(corpus, options);
  const auto results = index.search(term);

  double total = 0;
  size_t n = 0;
  for (const auto& passage : corpus.passages) {
    total += count_words(passage.title, "") + count_words(passage.text, "");
    n += count_words(passage.title + " " + passage.text, term) > 0 ? 1 : 0;
  }
  const double N = static_cast<double>(corpus.passages.size());
  ASSERT_EQ(results.size(), n) << term;
  for (const auto& [pid, score] : results) {
    const auto& passage = corpus.passages.at(corpus.index_of.at(pid));
    const double doclen = count_words(passage.title, "") + count_words(passage.text, "");
    const double wdf = count_words(passage.title + " " + passage.text, term);
    const double expected = okapi(N, n, wdf, doclen, total / N, k1, b);
    EXPECT_NEAR(score, expected, 1e-9 * expected) << term << " " << pid << " k1=" << k1 << " b=" << b;
  }
}

TEST(Bm25, RareTermRanksItsPassageFirst) {
  const Bm25Index index(small_corpus());
  const auto results = index.search("zebra fruit salad");
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].first, "p4");
  EXPECT_GT(results[0].second, 0);
  // Lower-cased, and the title is indexed too.
  EXPECT_EQ(index.search("ZEBRA").at(0).first, "p4");
  EXPECT_EQ(index.search("Gamma").at(0).first, "p4");
  const auto mixed = index.search("zebra apple");
  ASSERT_EQ(mixed.size(), 3u);
  EXPECT_EQ(mixed[0].first, "p4");
}

TEST(Bm25, ScoresDescendAndDepthIsRespected) {
  const Bm25Index index(small_corpus());
  const auto all = index.search("apple banana cherry date elderberry fig grape kiwi");
  ASSERT_EQ(all.size(), 6u);
  for (size_t i = 1; i < all.size(); ++i) EXPECT_GE(all[i - 1].second, all[i].second);

  Bm25Options options;
  options.depth = 2;
  const Bm25Index shallow(small_corpus(), options);
  const auto top2 = shallow.search("apple banana cherry date elderberry fig grape kiwi");
  ASSERT_EQ(top2.size(), 2u);
  EXPECT_EQ(top2[0], all[0]);
  EXPECT_EQ(top2[1], all[1]);
}

TEST(Bm25, OddQueryTextNeverThrows) {
  const Bm25Index index(small_corpus());
  EXPECT_NO_THROW(index.search("C++ (library) -- foo:bar"));
  EXPECT_NO_THROW(index.search("\"unbalanced AND OR NOT ( * apple* -banana +cherry title:x"));
  EXPECT_TRUE(index.search("").empty());
  EXPECT_TRUE(index.search("  ... !!! -- ()").empty());
  EXPECT_TRUE(index.search("nothing matches these").empty());
  // Operators are plain words: "-banana" still finds banana, "AND" is a term (matching nothing).
  const auto results = index.search("-banana AND");
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0].first, "p2");  // banana twice in a short passage
}

TEST(Bm25, SingleTermScoreIsTheOkapiFormula) {
  expect_hand_computed_scores("apple", 0.9, 0.4);   // n = 3: Xapian's clamped idf
  expect_hand_computed_scores("zebra", 0.9, 0.4);   // n = 1
  expect_hand_computed_scores("banana", 0.9, 0.4);  // wdf 2 in p2
  expect_hand_computed_scores("apple", 1.5, 1.0);
  expect_hand_computed_scores("apple", 0.5, 0.0);
}

TEST(Bm25, ParametersMatter) {
  Bm25Options no_norm;
  no_norm.b = 0;
  Bm25Options full_norm;
  full_norm.b = 1;
  const auto a = Bm25Index(small_corpus(), no_norm).search("apple");
  const auto b = Bm25Index(small_corpus(), full_norm).search("apple");
  ASSERT_EQ(a.size(), 3u);
  ASSERT_EQ(b.size(), 3u);
  auto score_of = [](const auto& results, const std::string& pid) {
    for (const auto& [p, s] : results) {
      if (p == pid) return s;
    }
    return -1.0;
  };
  // p4 (length 3) gains and p5 (length 11) loses from length normalisation.
  EXPECT_GT(score_of(b, "p4"), score_of(a, "p4") + 1e-6);
  EXPECT_LT(score_of(b, "p5"), score_of(a, "p5") - 1e-6);

  Bm25Options small_k1;
  small_k1.k1 = 0.1;
  const auto c = Bm25Index(small_corpus(), small_k1).search("apple");
  EXPECT_NE(score_of(c, "p5"), score_of(Bm25Index(small_corpus()).search("apple"), "p5"));
}

TEST(Bm25, TiesAreBrokenByPid) {
  const auto corpus = make_corpus({
      {"zz", "", "same words here", {}},
      {"mm", "", "same words here", {}},
      {"aa", "", "same words here", {}},
      {"other", "", "different text entirely", {}},
  });
  const auto results = Bm25Index(corpus).search("words");
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0].first, "aa");
  EXPECT_EQ(results[1].first, "mm");
  EXPECT_EQ(results[2].first, "zz");
  EXPECT_EQ(results[0].second, results[2].second);
}

TEST(Bm25, InvalidOptionsAreErrors) {
  Bm25Options options;
  options.depth = 0;
  EXPECT_THROW(Bm25Index(small_corpus(), options), Error);
  options = {};
  options.b = 1.5;
  EXPECT_THROW(Bm25Index(small_corpus(), options), Error);
}

TEST(Bm25, RunRanksAndTrecRoundTrip) {
  const data::Corpus corpus = small_corpus();
  const std::vector<data::Query> queries = {
      {"q1", "apple banana"}, {"q2", "zebra"}, {"q3", "C++ (library)"}, {"q4", "date fig kiwi"}};
  const Bm25Index index(corpus);
  const auto run = index.run(queries);
  std::map<std::string, std::vector<int>> ranks;
  for (const auto& entry : run) {
    EXPECT_EQ(entry.tag, "bm25");
    ranks[entry.qid].push_back(entry.rank);
  }
  EXPECT_EQ(ranks.count("q3"), 0u);
  for (const auto& [qid, list] : ranks) {
    for (size_t i = 0; i < list.size(); ++i) EXPECT_EQ(list[i], static_cast<int>(i + 1)) << qid;
    EXPECT_EQ(list.size(), index.search(queries[qid[1] - '1'].text).size());
  }

  const auto dir = std::filesystem::temp_directory_path() /
                   ("dgr_bm25_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "run.trec").string();
  write_trec_run(path, run);
  std::vector<data::RunEntry> back;
  ASSERT_NO_THROW(back = data::read_trec_run(path, &corpus, &queries));
  ASSERT_EQ(back.size(), run.size());
  for (size_t i = 0; i < run.size(); ++i) {
    EXPECT_EQ(back[i].qid, run[i].qid);
    EXPECT_EQ(back[i].pid, run[i].pid);
    EXPECT_EQ(back[i].rank, run[i].rank);
    EXPECT_NEAR(back[i].score, run[i].score, 1e-6);
    EXPECT_EQ(back[i].tag, "bm25");
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace dgr::retrieval
