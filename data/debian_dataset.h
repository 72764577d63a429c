// The embedded default data set: a retrieval collection built from the machine's Debian package lists.
// Passages = one per source package (pid = title = a binary package name, text = its English long
// description), queries = the one-line synopsis, qrels = that package. See docs/data.md.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dgr::data {

struct DebianDataConfig {
  std::string subset = "tiny";      // tiny (1 passage in 100), small (1 in 10) or full
  std::string out;                  // output directory ("" = data/debian-SUBSET)
  std::string lists_dir;            // apt lists to read ("" = fetch into OUT.lists with apt-get update)
  bool force = false;               // replace an existing output directory
  int min_content_words = 20;       // passages with fewer words outside boilerplate sentences are dropped
  int boilerplate_min_sources = 5;  // a sentence in this many source packages' texts is boilerplate
  double near_duplicate_jaccard = 0.7;  // word 5-gram Jaccard at or above which a later passage is dropped
};

// Keep-one-in-K of a subset name (tiny 100, small 10, full 1); throws ConfigError for other names.
int subset_keep_one_in(const std::string& subset);

struct DebianDataReport {
  std::vector<std::pair<std::string, int64_t>> counts;  // [filter step] name -> count, in order
  std::map<std::string, int64_t> split_sizes;          // train/dev/test -> queries
  double passage_words_mean = 0, query_words_mean = 0;
  int64_t passage_words_median = 0, passage_words_max = 0;
  std::vector<std::pair<std::string, std::string>> examples;  // [5] (query text, passage pid: text)
  std::string out_dir;
  std::string release_date;
};

// Builds the data set into cfg.out (atomically: a failed build leaves no output directory behind) and
// returns its report. Runs on one process.
DebianDataReport build_debian_dataset(const DebianDataConfig& cfg);

// The human-readable report printed by `dgr data build-debian`.
std::string format_report(const DebianDataReport& report);

}  // namespace dgr::data
