// The mined candidates of `dgr mine` (method.md section 5; format in docs/distillation.md) and teacher runs
// over them (section 6): reading and writing MINED/candidates.jsonl, the mined manifest, and checking a
// teacher's TREC run against the candidates, so that `dgr teacher` and `dgr prepare` apply the same rules.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "data/distill_example.h"
#include "data/readers.h"
#include "data/trec.h"

namespace dgr::data {

inline constexpr const char* kMinedFormat = "dgr-mined";
inline constexpr int kMinedFormatVersion = 1;
inline constexpr const char* kMinedCandidatesFile = "candidates.jsonl";  // one JSON object per query
inline constexpr const char* kMinedCandidatesTsv = "candidates.tsv";     // for outside rankers
inline constexpr const char* kMinedRunFile = "run.trec";                 // the stage-1 run
inline constexpr const char* kMinedManifestFile = "manifest.json";       // written last

struct MinedCandidate {
  std::string pid;
  int32_t doc = 0;         // FM-index document (IndexDir::pids[doc] == pid)
  bool positive = false;   // in the qrels of the split with grade >= 1
  double score = 0;        // stage-1 retriever score; the list order is the retriever's rank
  std::vector<CachedKey> keys;         // [key] at most max_keys, in the retriever's matching order
  std::vector<std::string> key_texts;  // [key] decoded index string, for people (not used in training)
};

struct MinedQuery {
  std::string qid;
  std::string text;
  std::vector<int32_t> tokens;               // the query under the index's tokenizer
  std::vector<MinedCandidate> candidates;    // retriever order, best first
};

// One line of candidates.jsonl (no newline); the inverse of parse_mined_query.
std::string mined_query_json(const MinedQuery& query);
// Parses and checks one line of candidates.jsonl (see MinedReader); errors name `path`:`line_number`.
MinedQuery parse_mined_query(const std::string& line, bool with_keys, const std::string& path, size_t line_number);

// Reads MINED/candidates.jsonl one query per next(). Every line is checked (JSON shape, ranks 1..n in order,
// retriever scores that do not increase, views, token ids); a problem is a DataError naming PATH:LINE.
// `with_keys` = false skips the keys (for the teacher commands, which need only qids and pids).
class MinedReader {
 public:
  MinedReader(const std::string& mined_dir, bool with_keys);
  ~MinedReader();
  MinedReader(const MinedReader&) = delete;
  MinedReader& operator=(const MinedReader&) = delete;
  bool next(MinedQuery& query);
  const std::string& path() const { return path_; }
  size_t line() const;

 private:
  struct Impl;
  std::string path_;
  bool with_keys_;
  Impl* impl_;
};

// Every query of a mined directory (keys only when asked; several GB at full scale with keys).
std::vector<MinedQuery> read_mined_queries(const std::string& mined_dir, bool with_keys);

// What a mined directory says about itself (manifest.json), checked: format, version, the sha256 of
// candidates.jsonl (a DataError naming the file when it was changed or damaged: re-run `dgr mine`).
struct MinedManifest {
  std::string dir;
  std::string json;  // manifest.json as written
  int64_t queries = 0;
  int max_keys = 0;
  std::string tokenizer_sha256, fm_index_sha256, pids_sha256, index_dir, model_path, model_sha256;
};
MinedManifest read_mined_manifest(const std::string& mined_dir);

// What a teacher says about one mined query, aligned with its candidates.
struct TeacherList {
  std::vector<double> score;  // [candidate] teacher score
  std::vector<int32_t> rank;  // [candidate] 1-based rank in the teacher's list
  int64_t unscored = 0;       // candidates the teacher did not score (ranked last)
};

// Note [Unscored candidates]: a teacher list over all candidates from scores of some of them. Scored
// candidates are ranked by score (descending; ties by `tie_order`, ascending); the unscored ones follow in
// the retriever's order, candidate j of them (0-based) with score min(scored) - 1 - j (0 - 1 - j when none is
// scored), so every unscored candidate scores below every scored one and the scores never increase with
// rank. `scores[c]` empty = not scored; `tie_order` has one entry per candidate.
TeacherList teacher_list(const std::vector<std::optional<double>>& scores, const std::vector<int64_t>& tie_order);

enum class MissingCandidates { error, last };
// Run entries that are not mined candidates: error, or ignore (skipped and counted: a run of a teacher over its
// own top k, e.g. pyserini's, or over more queries than were mined).
enum class ExtraEntries { error, ignore };

// A teacher run read and checked against mined queries (keys not needed). The run must be a valid TREC run
// (read_trec_run: columns, numbers, duplicates, ranks against scores); every (qid, pid) must be a mined
// candidate of that query (unknown qid, pid not a candidate, pid not in `corpus_pids` when given: DataError
// naming RUN:LINE and what to do), unless `extra` = ignore: then entries of queries that were not mined or of
// passages that are not candidates are skipped and counted (a pid outside `corpus_pids` stays an error: the
// run is from another corpus). Candidates missing from the run: with `missing` = error a DataError
// counting them (first one named); with `last` ranked after the scored ones (Note [Unscored candidates]).
class TeacherRun {
 public:
  TeacherRun(const std::string& run_path, const std::vector<MinedQuery>& mined, MissingCandidates missing,
             const std::string& mined_dir, const std::unordered_set<std::string>* corpus_pids = nullptr,
             ExtraEntries extra = ExtraEntries::error);
  const std::vector<TeacherList>& lists() const { return lists_; }  // [mined query]
  int64_t unscored_candidates() const { return unscored_candidates_; }
  int64_t queries_with_unscored() const { return queries_with_unscored_; }
  int64_t ignored_entries() const { return ignored_entries_; }            // skipped under ExtraEntries::ignore
  int64_t ignored_query_entries() const { return ignored_query_entries_; }  // of those: of queries not mined
  const std::string& tag() const { return tag_; }

 private:
  std::vector<TeacherList> lists_;
  int64_t unscored_candidates_ = 0, queries_with_unscored_ = 0, ignored_entries_ = 0, ignored_query_entries_ = 0;
  std::string tag_;
};

// The teacher's lists as a TREC run over exactly the mined candidates: queries in mined order, ranks
// 1..n, tag `tag`.
std::vector<RunEntry> teacher_run_entries(const std::vector<MinedQuery>& mined, const std::vector<TeacherList>& lists,
                                          const std::string& tag);

// The pids of an index directory's pids.txt when it exists and matches `pids_sha256` (else nullopt).
std::optional<std::unordered_set<std::string>> read_index_pids(const std::string& index_dir,
                                                               const std::string& pids_sha256);

}  // namespace dgr::data
