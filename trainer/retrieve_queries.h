// Retrieval over a set of queries on every rank of a job: queries are dealt round-robin to the ranks, each
// rank runs the FM-index-constrained retriever (retrieval/retriever.h) on its share, and rank 0 gathers
// the results (binary records, through a host communicator with a deadline) in query order. Used by `dgr
// retrieve`, `dgr mine` and by evaluation during training. No LibTorch here: the model comes in as a
// retrieval::Seq2SeqScorer.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "common/world.h"
#include "retrieval/index_dir.h"
#include "retrieval/scoring.h"
#include "retrieval/seq2seq.h"
#include "retrieval/views.h"
#include "data/readers.h"
#include "data/trec.h"
#include "trainer/stage1.h"

namespace dgr::trainer {

// The settings as config.json, mined manifests and the run sidecars of `dgr retrieve` record them: views,
// beam, depth, and every kind of key as it takes effect (title and pseudo-query keys are complete
// identifiers, body keys every prefix; the n-gram and unigram keys are body-view keys, off without it).
nlohmann::json retrieval_settings_json(const RetrievalSettings& settings);
// One line for logs and reports, e.g. "views title, beam 10, depth 100; keys: complete titles; no n-gram keys,
// no unigram keys".
std::string describe_retrieval(const RetrievalSettings& settings);

// Throws ConfigError unless every view `settings` searches (the n-gram and unigram keys count as the body
// view's) is among `trained_views`, the views the model at `model` learnt to generate: keys scored under a
// view the model never learnt are noise. `trained_views` empty: an export from before dgr recorded them
// (not checked).
void check_searched_views_trained(const RetrievalSettings& settings, const std::vector<std::string>& trained_views,
                                  const std::string& model);

struct RetrievalStats {
  size_t queries = 0;       // over all ranks (retrieve_in_rounds: retrieved by this run, after the resumed ones)
  bool stopped = false;     // retrieve_in_rounds: RoundControl::after_round asked to stop
  double seconds = 0;       // wall time of the slowest rank
  double queries_per_second() const { return seconds > 0 ? static_cast<double>(queries) / seconds : 0; }
};

// Collective over `control` (a host communicator, e.g. comm::make_host_communicator; every rank calls it
// with the same queries): rank 0 returns the run (top_k passages per query, best first, tag `tag`) and,
// when `keys` is given, one JSON line per (query, passage) with the matched keys; other ranks return an
// empty run. A rank that does not arrive within control's deadline ends it with a CommError naming it.
// Resuming (`dgr retrieve`, Note [Resumable retrieval] in launcher/commands_train.cpp): rounds of
// `queries_per_rank`; the first `first_query` queries were retrieved by an earlier run and rank 0 passes their
// records (`resumed`), which are consumed as if retrieved; rank 0's `journal` gets every new query's record;
// `after_round` is RoundControl's (collective; true stops: stats->stopped, the run then holds the queries done).
struct RetrieveResume {
  int queries_per_rank = 8;
  size_t first_query = 0;
  const std::vector<std::string>* resumed = nullptr;
  std::function<void(const std::string& record)> journal;
  std::function<bool()> after_round;
};
std::vector<data::RunEntry> retrieve_queries(retrieval::Seq2SeqScorer& model, const retrieval::IndexDir& index,
                                                 const std::vector<data::Query>& queries,
                                                 const RetrievalSettings& settings,
                                                 const retrieval::ViewLimits& limits, comm::Communicator& control,
                                                 const std::string& tag, std::vector<std::string>* keys,
                                                 RetrievalStats* stats, const RetrieveResume* resume = nullptr);

// Collective over `control` (as retrieve_queries): for outputs too large to gather at once (`dgr mine`). Queries are retrieved in rounds of
// `queries_per_rank` x world size; within a round query i goes to rank i % world size. Each rank turns each
// of its results into bytes with `encode(query index, query tokens, passages)`; after every round rank 0
// receives the round's bytes and calls `consume(query index, bytes)` in query order, so rank 0 holds one
// round at a time. `consume` is called on rank 0 only. `also_docs` ([query] passages, or null): each query's
// are scored too and listed besides its top_k (retrieval::score_passages). Returns the stats (on every rank).
using EncodeRetrieved = std::function<std::string(size_t query, const std::vector<int32_t>& query_tokens,
                                                  const std::vector<retrieval::RetrievedPassage>& passages)>;
using ConsumeRetrieved = std::function<void(size_t query, std::string bytes)>;
// Resuming and stopping (Note [Resumable mining] in data/mined_writer.h): rounds start at `first_query` (the
// queries before it were done by an earlier run), and `after_round`, when set, is called on every rank after
// each round has been consumed (a collective: it may vote); true ends the retrieval there (stats.stopped).
struct RoundControl {
  size_t first_query = 0;
  std::function<bool()> after_round;
};
RetrievalStats retrieve_in_rounds(retrieval::Seq2SeqScorer& model, const retrieval::IndexDir& index,
                                  const std::vector<data::Query>& queries, const RetrievalSettings& settings,
                                  const retrieval::ViewLimits& limits, comm::Communicator& control,
                                  int queries_per_rank, const EncodeRetrieved& encode, const ConsumeRetrieved& consume,
                                  const std::vector<std::vector<int32_t>>* also_docs = nullptr,
                                  const RoundControl& rounds = {});

}  // namespace dgr::trainer
