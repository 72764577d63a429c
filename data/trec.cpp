// TREC runs read (every line checked, PATH:LINE errors with what to do) and written (atomically).
#include "data/trec.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <unordered_map>

#include <fmt/format.h>

#include "common/error.h"
#include "common/files.h"
#include "common/text.h"
#include "data/line_checks.h"
#include "data/readers.h"

namespace dgr::data {

using namespace line_checks;

std::vector<RunEntry> read_trec_run(const std::string& path, const Corpus* corpus,
                                    const std::vector<Query>* queries) {
  // The entries of one query, for the per-query checks.
  struct QueryEntries {
    std::vector<size_t> entries;                         // indices into `run`
    std::unordered_map<int, size_t> line_of_rank;        // rank -> line
    std::unordered_map<std::string, size_t> line_of_pid;  // pid -> line
  };
  DataLines lines(path);
  KnownIds known(corpus, queries, "run");
  std::vector<RunEntry> run;
  std::vector<size_t> line_of;  // [entry] line
  std::vector<QueryEntries> groups;
  std::unordered_map<std::string, size_t> group_of;  // qid -> index in groups
  std::string line;
  while (lines.next(line)) {
    auto words = text::split_ws(line);
    if (words.size() != 6) {
      lines.fail(fmt::format("found {}, expected 6 as in a TREC run 'qid Q0 "
                             "pid rank score tag' (fix the line)",
                             count_fields(words.size(), "whitespace-separated")));
    }
    RunEntry e;
    e.qid = std::string(words[0]);
    e.pid = std::string(words[2]);
    e.tag = std::string(words[5]);
    if (!parse_int(words[3], &e.rank) || e.rank <= 0) {
      lines.fail(fmt::format("rank {} is not a positive integer, expected 1, 2, ... in the 4th field (fix "
                             "the rank)",
                             quote(words[3])));
    }
    if (!parse_double(words[4], &e.score)) {
      lines.fail(fmt::format("score {} is not a number, expected a finite number in the 5th field (fix the "
                             "score)",
                             quote(words[4])));
    }
    if (!std::isfinite(e.score)) {
      lines.fail(fmt::format("score {} is not finite, expected a finite number (fix the scorer that wrote "
                             "the run)",
                             quote(words[4])));
    }
    known.check(lines, e.qid, e.pid);
    auto [g, new_group] = group_of.emplace(e.qid, groups.size());
    if (new_group) groups.emplace_back();
    QueryEntries& group = groups[g->second];
    auto [r, new_rank] = group.line_of_rank.emplace(e.rank, lines.line());
    if (!new_rank) {
      lines.fail(fmt::format("rank {} of query {} is a duplicate, {}, expected unique ranks per query "
                             "(re-rank the run)",
                             e.rank, quote(e.qid), duplicate_note(r->second)));
    }
    auto [p, new_pid] = group.line_of_pid.emplace(e.pid, lines.line());
    if (!new_pid) {
      lines.fail(fmt::format("passage {} is ranked twice for query {}, {}, expected each passage once per "
                             "query (deduplicate the run)",
                             quote(e.pid), quote(e.qid), duplicate_note(p->second)));
    }
    group.entries.push_back(run.size());
    line_of.push_back(lines.line());
    run.push_back(std::move(e));
  }
  if (run.empty()) {
    throw_data_error(path, 0,
                     "found no run lines, expected lines 'qid Q0 pid rank score tag' (check the file is not "
                     "empty or truncated)");
  }
  for (QueryEntries& group : groups) {
    auto& entries = group.entries;
    std::sort(entries.begin(), entries.end(), [&](size_t a, size_t b) { return run[a].rank < run[b].rank; });
    for (size_t i = 1; i < entries.size(); ++i) {
      const RunEntry& above = run[entries[i - 1]];
      const RunEntry& below = run[entries[i]];
      if (below.score > above.score) {
        throw_data_error(path, line_of[entries[i]],
                         fmt::format("query {}: rank {} has score {} above rank {}'s {} on line {}, expected "
                                     "scores that do not increase with rank (ranks must follow scores: "
                                     "re-sort the run)",
                                     quote(below.qid), below.rank, format_score(below.score), above.rank,
                                     format_score(above.score),
                                     line_of[entries[i - 1]]));
      }
    }
  }
  return run;
}

namespace {

// A score as trec_eval reads the 6-decimal text dgr writes: atof, then a 32-bit float.
float read_back(double score) { return static_cast<float>(std::strtod(fmt::format("{:.6f}", score).c_str(), nullptr)); }

// The largest 6-decimal number whose read-back float is below `above` (Note [Written scores]).
double largest_below(float above) {
  constexpr double kScale = 1e6;  // the written decimals
  const float target = std::nextafter(above, -std::numeric_limits<float>::infinity());
  double micro = std::floor(static_cast<double>(target) * kScale);
  for (int step = 0; read_back(micro / kScale) >= above; ++step) {
    DGR_CHECK(step < 1000, "untie_scores: no 6-decimal score below {} found", above);
    micro -= 1;
  }
  return micro / kScale;
}

}  // namespace

void untie_scores(std::vector<RunEntry>& run) {
  struct Last {
    int rank;
    double score;  // as given
    float written;  // as read back
  };
  std::unordered_map<std::string, Last> last;  // qid -> its previous entry
  for (RunEntry& entry : run) {
    DGR_CHECK(std::isfinite(entry.score), "untie_scores: query {} passage {} has score {}", entry.qid, entry.pid,
              entry.score);
    auto it = last.find(entry.qid);
    if (it == last.end()) {
      last.emplace(entry.qid, Last{entry.rank, entry.score, read_back(entry.score)});
      continue;
    }
    Last& above = it->second;
    DGR_CHECK(entry.rank > above.rank && entry.score <= above.score,
              "untie_scores: query {}: rank {} (score {}) follows rank {} (score {}), expected each query's "
              "entries by increasing rank and non-increasing score",
              entry.qid, entry.rank, entry.score, above.rank, above.score);
    above.rank = entry.rank;
    above.score = entry.score;
    if (read_back(entry.score) >= above.written) entry.score = largest_below(above.written);
    above.written = read_back(entry.score);
  }
}

void write_trec_run(const std::string& path, const std::vector<RunEntry>& given) {
  std::vector<RunEntry> run = given;
  untie_scores(run);
  files::AtomicFile file(path);
  std::string line;
  for (const RunEntry& entry : run) {
    line = fmt::format("{} Q0 {} {} {:.6f} {}\n", entry.qid, entry.pid, entry.rank, entry.score,
                       entry.tag.empty() ? std::string("bm25") : entry.tag);
    file.write(line);
  }
  file.commit();
}

}  // namespace dgr::data
