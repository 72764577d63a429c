// The Debian data set builder on small synthetic package lists: each filter, the queries, the splits,
// the subset, determinism, and that a failed build leaves nothing behind.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"
#include "data/debian_dataset.h"
#include "data/readers.h"

namespace fs = std::filesystem;
using namespace dgr;

namespace {

struct Binary {
  std::string package, source, synopsis, long_text;  // long_text: paragraphs separated by '\n\n'
};

std::string words(const std::string& stem, int count) {
  std::string out;
  for (int i = 0; i < count; ++i) out += (i ? " " : "") + stem + std::to_string(i);
  return out;
}

// Writes Packages and Translation-en in Debian's format (continuation lines, " ." paragraphs).
fs::path write_lists(const std::string& name, const std::vector<Binary>& binaries) {
  fs::path dir = fs::temp_directory_path() / ("dgr_debian_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "lists");
  std::ofstream packages(dir / "lists" / "Packages"), translation(dir / "lists" / "Translation-en");
  for (const auto& b : binaries) {
    std::string md5 = files::md5_hex(b.package + b.synopsis);
    packages << "Package: " << b.package << "\n";
    if (b.source != b.package) packages << "Source: " << b.source << " (1.0-1)\n";
    packages << "Version: 1.0-1\nDescription: " << b.synopsis << "\nDescription-md5: " << md5 << "\n\n";
    translation << "Package: " << b.package << "\nDescription-md5: " << md5 << "\nDescription-en: " << b.synopsis << "\n";
    std::string paragraph;
    size_t start = 0;
    while (start <= b.long_text.size()) {
      size_t end = b.long_text.find("\n\n", start);
      std::string para = b.long_text.substr(start, end == std::string::npos ? std::string::npos : end - start);
      translation << " " << para << "\n";
      if (end == std::string::npos) break;
      translation << " .\n";
      start = end + 2;
    }
    translation << "\n";
  }
  return dir;
}

std::vector<Binary> fixture() {
  std::vector<Binary> b;
  b.push_back({"alpha-doc", "alpha", "documentation for alpha", words("alphadoc", 30)});
  b.push_back({"alpha", "alpha", "fast widget compiler", words("alpha", 25) + "\n\n" + words("alphamore", 5)});
  b.push_back({"libbeta-dev", "beta", "development files for beta", words("betadev", 30)});
  b.push_back({"beta-tools", "beta", "command line beta tools", words("beta", 30)});
  b.push_back({"oldpkg", "oldpkg", "transitional package for newpkg", words("old", 30)});
  for (int i = 1; i <= 5; ++i) {
    std::string n = std::to_string(i);
    b.push_back({"qtmod" + n, "qtmod" + n, "qt module " + n,
                 "Qt is a cross-platform C++ application framework with a rich set of widgets for many uses. "
                 "This package contains module " + n + "."});
  }
  b.push_back({"gamma", "gamma", "gamma ray simulator", words("gamma", 40)});
  b.push_back({"gamma-copy", "gamma-copy", "copy of gamma", words("GAMMA", 40)});
  b.push_back({"delta", "delta", "delta encoder library", words("delta", 60)});
  b.push_back({"delta2", "delta2", "second delta encoder", words("delta", 59) + " changed"});
  b.push_back({"verb", "verb", "verbatim synopsis", "This tool is a verbatim synopsis example. " + words("verb", 30)});
  b.push_back({"amb1", "amb1", "shared synopsis text", words("ambone", 30)});
  b.push_back({"amb2", "amb2", "Shared synopsis text", words("ambtwo", 30)});
  b.push_back({"short", "short", "too short", words("short", 10)});
  return b;
}

std::map<std::string, int64_t> counts_of(const data::DebianDataReport& r) {
  return std::map<std::string, int64_t>(r.counts.begin(), r.counts.end());
}

TEST(DebianDataset, EachFilterAndTheQueries) {
  fs::path dir = write_lists("filters", fixture());
  data::DebianDataConfig cfg;
  cfg.subset = "full";
  cfg.lists_dir = (dir / "lists").string();
  cfg.out = (dir / "out").string();
  auto report = data::build_debian_dataset(cfg);
  auto counts = counts_of(report);
  EXPECT_EQ(counts["binary_packages"], 18);
  EXPECT_EQ(counts["source_packages"], 16);
  EXPECT_EQ(counts["after_transitional_filter"], 15);            // oldpkg
  EXPECT_EQ(counts["after_boilerplate_and_length_filter"], 9);   // 5 qtmod + short
  EXPECT_EQ(counts["after_duplicate_text_filter"], 8);           // gamma-copy
  EXPECT_EQ(counts["after_near_duplicate_filter"], 7);           // delta2
  EXPECT_EQ(counts["queries_dropped_verbatim_in_passage"], 1);    // verb
  EXPECT_EQ(counts["queries_dropped_ambiguous"], 2);              // amb1, amb2
  EXPECT_EQ(counts["queries"], 4);

  auto corpus = data::read_corpus(cfg.out + "/corpus.tsv");
  std::set<std::string> pids;
  for (const auto& p : corpus.passages) {
    pids.insert(p.pid);
    EXPECT_EQ(p.title, p.pid);
  }
  EXPECT_EQ(pids, (std::set<std::string>{"alpha", "amb1", "amb2", "beta-tools", "delta", "gamma", "verb"}));
}

TEST(DebianDataset, PassageIsTheSourceNamedBinaryElseTheFirstMainOne) {
  fs::path dir = write_lists("choice", fixture());
  data::DebianDataConfig cfg;
  cfg.subset = "full";
  cfg.lists_dir = (dir / "lists").string();
  cfg.out = (dir / "out").string();
  data::build_debian_dataset(cfg);
  auto corpus = data::read_corpus(cfg.out + "/corpus.tsv");
  EXPECT_TRUE(corpus.contains("alpha"));
  EXPECT_FALSE(corpus.contains("alpha-doc"));
  EXPECT_TRUE(corpus.contains("beta-tools"));
  EXPECT_FALSE(corpus.contains("libbeta-dev"));
  // Debian's " ." paragraph separators are flattened away.
  const auto& alpha = corpus.passages[corpus.index_of.at("alpha")];
  EXPECT_EQ(alpha.text, words("alpha", 25) + " " + words("alphamore", 5));
}

TEST(DebianDataset, QueriesQrelsAndManifestAreConsistent) {
  fs::path dir = write_lists("files", fixture());
  data::DebianDataConfig cfg;
  cfg.subset = "full";
  cfg.lists_dir = (dir / "lists").string();
  cfg.out = (dir / "out").string();
  auto report = data::build_debian_dataset(cfg);
  auto corpus = data::read_corpus(cfg.out + "/corpus.tsv");
  int64_t total = 0;
  for (const char* split : {"train", "dev", "test"}) {
    auto queries = data::read_queries(cfg.out + "/queries." + split + ".tsv");
    auto qrels = data::read_qrels(cfg.out + "/qrels." + split + ".tsv", &corpus, &queries);
    EXPECT_EQ(queries.size(), qrels.size());
    EXPECT_EQ(static_cast<int64_t>(queries.size()), report.split_sizes.at(split));
    total += static_cast<int64_t>(queries.size());
  }
  EXPECT_EQ(total, 4);
  auto manifest = nlohmann::json::parse(files::read_all(cfg.out + "/manifest.json"));
  EXPECT_EQ(manifest["counts"]["queries"], 4);
  for (const char* name : {"corpus.tsv", "queries.train.tsv", "qrels.test.tsv"}) {
    EXPECT_EQ(manifest["files"][name], files::sha256_file(cfg.out + "/" + name)) << name;
  }
  EXPECT_EQ(manifest["source"]["packages"]["sha256"], files::sha256_file(cfg.lists_dir + "/Packages"));
  std::string text = data::format_report(report);
  for (const char* s : {"after_near_duplicate_filter", "splits: train", "passage words: mean", "examples"}) {
    EXPECT_NE(text.find(s), std::string::npos) << s;
  }
}

std::vector<Binary> many_sources(int n) {
  std::vector<Binary> b;
  for (int i = 0; i < n; ++i) {
    std::string name = "pkg" + std::to_string(i);
    b.push_back({name, name, "synopsis number " + std::to_string(i) + " of the test", words("t" + std::to_string(i) + "x", 25)});
  }
  return b;
}

TEST(DebianDataset, SubsetKeepsOneInKByHashAndSplitsAreDeterministic) {
  fs::path dir = write_lists("subset", many_sources(400));
  data::DebianDataConfig cfg;
  cfg.subset = "small";
  cfg.lists_dir = (dir / "lists").string();
  cfg.out = (dir / "a").string();
  auto report = data::build_debian_dataset(cfg);
  auto corpus = data::read_corpus(cfg.out + "/corpus.tsv");
  int expected = 0;
  for (int i = 0; i < 400; ++i) {
    std::string raw = files::md5_raw("pkg" + std::to_string(i));
    uint64_t r = 0;
    for (unsigned char c : raw) r = (r * 256 + c) % 10;
    bool kept = corpus.contains("pkg" + std::to_string(i));
    EXPECT_EQ(kept, r == 0) << i;
    expected += r == 0;
  }
  EXPECT_EQ(static_cast<int>(corpus.passages.size()), expected);
  EXPECT_GT(expected, 20);
  // Same lists, same output, byte for byte; the split roughly 80/10/10.
  cfg.out = (dir / "b").string();
  data::build_debian_dataset(cfg);
  for (const char* name : {"corpus.tsv", "queries.train.tsv", "queries.dev.tsv", "qrels.test.tsv"}) {
    EXPECT_EQ(files::sha256_file((dir / "a" / name).string()), files::sha256_file((dir / "b" / name).string())) << name;
  }
  cfg.subset = "full";
  cfg.out = (dir / "full").string();
  auto full = data::build_debian_dataset(cfg);
  EXPECT_NEAR(full.split_sizes.at("train"), 320, 40);
  EXPECT_NEAR(full.split_sizes.at("dev"), 40, 20);
  EXPECT_NEAR(full.split_sizes.at("test"), 40, 20);
  // A query keeps its split whatever the subset.
  auto small_test = data::read_queries((dir / "a" / "queries.test.tsv").string());
  auto full_test = data::read_queries((dir / "full" / "queries.test.tsv").string());
  std::set<std::string> full_ids;
  for (const auto& q : full_test) full_ids.insert(q.qid);
  for (const auto& q : small_test) EXPECT_TRUE(full_ids.count(q.qid)) << q.qid;
}

TEST(DebianDataset, ExistingOutputNeedsForceAndFailuresLeaveNothing) {
  fs::path dir = write_lists("force", fixture());
  data::DebianDataConfig cfg;
  cfg.subset = "full";
  cfg.lists_dir = (dir / "lists").string();
  cfg.out = (dir / "out").string();
  data::build_debian_dataset(cfg);
  std::string before = files::sha256_file(cfg.out + "/corpus.tsv");
  EXPECT_THROW(data::build_debian_dataset(cfg), ConfigError);
  EXPECT_EQ(files::sha256_file(cfg.out + "/corpus.tsv"), before);
  cfg.force = true;
  EXPECT_NO_THROW(data::build_debian_dataset(cfg));

  cfg.out = (dir / "never").string();
  cfg.lists_dir = (dir / "missing").string();
  EXPECT_THROW(data::build_debian_dataset(cfg), DataError);
  EXPECT_FALSE(fs::exists(cfg.out));
  fs::create_directories(dir / "garbage");
  std::ofstream(dir / "garbage" / "Packages") << "this is not a packages file\n";
  std::ofstream(dir / "garbage" / "Translation-en") << "";
  cfg.lists_dir = (dir / "garbage").string();
  EXPECT_THROW(data::build_debian_dataset(cfg), DataError);
  EXPECT_FALSE(fs::exists(cfg.out));
  for (const auto& entry : fs::directory_iterator(dir)) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos) << entry.path();
  }
}

}  // namespace
