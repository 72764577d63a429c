// Fault probe for control traffic (run by tests/comm_fault_check.cmake under mpiexec, like comm_fault_probe):
//   --scenario checkpoint: every rank saves checkpoints through a checkpoints::Store (async, then wait());
//     at step --fault-at rank --fault-rank's writer stalls for 60 s (StoreOptions::test_hook), so the others
//     wait for it in the commit. They must time out after --timeout-ms, name the rank, and end the job.
//   --scenario retrieval: rank 0 builds a small index directory, every rank loads it and runs
//     trainer::retrieve_queries with a hand-made scorer; rank --fault-rank's scorer stalls for 60 s, so the
//     others wait for it in the gather of the results. With --mode none nothing stalls and rank 0 checks
//     the gathered run and keys against a retrieval of every query on rank 0 alone, field by field.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "checkpoints/store.h"
#include "comm/communicator.h"
#include "common/error.h"
#include "common/log.h"
#include "common/world.h"
#include "retrieval/index_dir.h"
#include "retrieval/retriever.h"
#include "trainer/retrieve_queries.h"

namespace {

namespace fs = std::filesystem;

struct ProbeOptions {
  std::string scenario = "checkpoint";  // checkpoint | retrieval
  std::string mode = "stall";           // stall | none
  std::string dir;                      // scratch directory (checkpoints, index)
  int64_t timeout_ms = 3000;
  int fault_rank = 2;
  int fault_at = 3;  // checkpoint: the step whose write stalls
};

ProbeOptions parse(int argc, char** argv) {
  ProbeOptions options;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    std::string value = argv[i + 1];
    if (flag == "--scenario") options.scenario = value;
    else if (flag == "--mode") options.mode = value;
    else if (flag == "--dir") options.dir = value;
    else if (flag == "--timeout-ms") options.timeout_ms = std::stoll(value);
    else if (flag == "--fault-rank") options.fault_rank = std::stoi(value);
    else if (flag == "--fault-at") options.fault_at = std::stoi(value);
    else throw dgr::ConfigError("unknown flag " + flag + " (use --scenario --mode --dir --timeout-ms --fault-rank --fault-at)");
  }
  DGR_CHECK_AS(dgr::ConfigError, !options.dir.empty(), "--dir is required (a scratch directory)");
  return options;
}

void stall(const dgr::World& world, const std::string& where) {
  std::fprintf(stderr, "probe: rank %d stalls for 60 s %s\n", world.rank(), where.c_str());
  std::fflush(stderr);
  std::this_thread::sleep_for(std::chrono::seconds(60));
}

int run_checkpoint(const ProbeOptions& options, const dgr::World& world) {
  dgr::checkpoints::StoreOptions store_options;
  store_options.dir = options.dir + "/checkpoints";
  store_options.timeout_ms = options.timeout_ms;
  const bool faulty = options.mode == "stall" && world.rank() == options.fault_rank;
  int64_t step = 0;
  store_options.test_hook = [&](const std::string& file, const std::string& array) {
    if (faulty && step == options.fault_at && array.empty()) stall(world, "writing " + file);
  };
  dgr::checkpoints::Store store(store_options, world);
  for (step = 1; step <= 5; ++step) {
    dgr::checkpoints::SaveRequest request;
    request.step = step;
    std::vector<float> values(1000, static_cast<float>(step));
    request.per_rank.push_back(dgr::checkpoints::NamedArray::copy_of("values", {1000}, dgr::checkpoints::DType::kFloat32,
                                                                     values.data()));
    store.save(std::move(request));
    store.wait();
  }
  std::fprintf(stderr, "probe: rank %d committed 5 checkpoints\n", world.rank());
  return 0;
}

// A hand-made model: log-probabilities that depend on the source, the decoding depth and the token, so that
// different queries retrieve different passages. `before_first` runs before its first decoding (a stall).
class ProbeScorer final : public dgr::retrieval::Seq2SeqScorer {
 public:
  ProbeScorer(int32_t vocab_size, std::function<void()> before_first) : vocab_(vocab_size), before_first_(std::move(before_first)) {}
  int32_t vocab_size() const override { return vocab_; }

  class ProbeDecoding final : public Decoding {
   public:
    ProbeDecoding(int32_t vocab, uint64_t source_hash) : vocab_(vocab), source_hash_(source_hash) {}
    const std::vector<float>& step(std::span<const int32_t> parents, std::span<const int32_t>) override {
      ++depth_;
      out_.resize(parents.size() * static_cast<size_t>(vocab_));
      for (size_t b = 0; b < parents.size(); ++b) {
        for (int32_t t = 0; t < vocab_; ++t) out_[b * static_cast<size_t>(vocab_) + static_cast<size_t>(t)] = log_prob(source_hash_, depth_, t);
      }
      return out_;
    }

   private:
    int32_t vocab_;
    uint64_t source_hash_;
    int depth_ = 0;
    std::vector<float> out_;
  };

  std::unique_ptr<Decoding> start(std::span<const int32_t> source) override {
    if (before_first_) std::exchange(before_first_, nullptr)();
    return std::make_unique<ProbeDecoding>(vocab_, hash(source));
  }
  std::vector<float> score(std::span<const int32_t> source, const std::vector<std::vector<int32_t>>& targets) override {
    std::vector<float> scores;
    for (const auto& target : targets) {
      float sum = 0;
      for (size_t t = 0; t < target.size(); ++t) sum += log_prob(hash(source), static_cast<int>(t) + 1, target[t]);
      scores.push_back(sum);
    }
    return scores;
  }

 private:
  static uint64_t hash(std::span<const int32_t> source) {
    uint64_t h = 7;
    for (int32_t t : source) h = h * 31 + static_cast<uint64_t>(t);
    return h;
  }
  static float log_prob(uint64_t source_hash, int depth, int32_t token) {
    const uint64_t mix = source_hash + static_cast<uint64_t>(depth) * 7 + static_cast<uint64_t>(token) * 13;
    return -1.0f - 0.25f * static_cast<float>(mix % 17) / 17.0f;
  }
  int32_t vocab_;
  std::function<void()> before_first_;
};

std::vector<std::string> sentences(size_t n, int seed) {
  const std::vector<std::string> words = {"package", "library", "tool", "network", "server", "client", "python",
                                          "module", "data", "file", "system", "kernel", "driver", "font", "game",
                                          "editor", "utility", "shared", "audio", "manager"};
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) {
    std::string s;
    for (size_t k = 0; k < 3 + (i * 7 + static_cast<size_t>(seed)) % 6; ++k) {
      s += (s.empty() ? "" : " ") + words[(i * 13 + k * 5 + static_cast<size_t>(seed)) % words.size()];
    }
    out.push_back(s);
  }
  return out;
}

int run_retrieval(const ProbeOptions& options, const dgr::World& world) {
  // Rank 0's index build is waited for with the default deadline; the retrieval's with --timeout-ms.
  auto setup = dgr::comm::make_host_communicator(world);
  const std::string index_path = options.dir + "/index";
  if (world.rank() == 0) {
    dgr::data::Corpus corpus;
    const auto titles = sentences(60, 1), texts = sentences(60, 2);
    for (size_t i = 0; i < titles.size(); ++i) {
      corpus.index_of[fmt::format("p{}", i)] = corpus.passages.size();
      corpus.passages.push_back({fmt::format("p{}", i), titles[i], texts[i], {}});
    }
    dgr::retrieval::IndexDirOptions index_options;
    index_options.vocab_size = 200;
    dgr::retrieval::build_index_dir(corpus, sentences(200, 3), index_path, index_options);
  }
  setup->barrier();
  const auto index = dgr::retrieval::load_index_dir(index_path);
  auto control = dgr::comm::make_host_communicator(world, options.timeout_ms);
  std::vector<dgr::data::Query> queries;
  const auto texts = sentences(23, 4);
  for (size_t i = 0; i < texts.size(); ++i) queries.push_back({fmt::format("q{}", i), texts[i]});
  dgr::trainer::RetrievalSettings settings;
  settings.top_k = 5;
  settings.views = {"title", "body"};  // complete title keys alone weigh 0 under this scorer: body keys hit
  const dgr::retrieval::ViewLimits limits;
  const bool faulty = options.mode == "stall" && world.rank() == options.fault_rank;
  ProbeScorer scorer(index.tokenizer.vocab_size(), [&] {
    if (faulty) stall(world, "in its first query");
  });
  std::vector<std::string> keys;
  dgr::trainer::RetrievalStats stats;
  const auto run = dgr::trainer::retrieve_queries(scorer, index, queries, settings, limits, *control, "probe", &keys, &stats);
  DGR_CHECK(stats.queries == queries.size() && stats.seconds >= 0, "stats: {} queries in {} s", stats.queries, stats.seconds);
  if (world.rank() != 0) {
    DGR_CHECK(run.empty() && keys.empty(), "rank {} got {} run entries, expected none", world.rank(), run.size());
    return 0;
  }
  // Every query on this rank alone: the gathered run must be the same, entry by entry, in query order.
  dgr::retrieval::RetrieverOptions retriever_options;
  retriever_options.beam.beam_size = settings.beam;
  retriever_options.limits = limits;
  retriever_options.scoring.top_k = static_cast<size_t>(settings.top_k);
  retriever_options.title_view = retriever_options.body_view = true;  // settings.views: title and body
  retriever_options.pq_view = false;
  retriever_options.ngram_keys = settings.ngram_keys;
  retriever_options.unigram_keys = settings.unigram_keys;
  dgr::retrieval::Retriever retriever(index.fm, index.tokenizer, retriever_options);
  ProbeScorer local(index.tokenizer.vocab_size(), nullptr);
  // The expected run, with its tied scores written apart as retrieve_queries writes them (Note [Written scores]).
  std::vector<dgr::data::RunEntry> expected;
  for (const auto& query : queries) {
    const auto passages = retriever.retrieve(local, index.tokenizer.encode(query.text));
    for (size_t r = 0; r < passages.size(); ++r)
      expected.push_back({query.qid, index.pids[static_cast<size_t>(passages[r].doc)], static_cast<int>(r + 1),
                          passages[r].score, "probe"});
  }
  dgr::data::untie_scores(expected);
  size_t at = 0;
  for (; at < expected.size(); ++at) {
    DGR_CHECK(at < run.size(), "the gathered run has {} entries, fewer than expected", run.size());
    const auto& e = run[at];
    const auto& x = expected[at];
    DGR_CHECK(e.qid == x.qid && e.pid == x.pid && e.rank == x.rank && e.score == x.score && e.tag == x.tag,
              "run entry {}: got ({} {} {} {} {}), expected ({} {} {} {} {})", at, e.qid, e.pid, e.rank, e.score, e.tag,
              x.qid, x.pid, x.rank, x.score, x.tag);
    DGR_CHECK(keys[at].find(fmt::format("\"qid\":\"{}\"", x.qid)) != std::string::npos &&
                  keys[at].find(fmt::format("\"rank\":{}", x.rank)) != std::string::npos,
              "keys line {} does not belong to {} rank {}: {}", at, x.qid, x.rank, keys[at]);
  }
  DGR_CHECK(at == run.size() && at == keys.size() && at > 0, "{} entries expected, the run has {} and {} keys lines",
            at, run.size(), keys.size());
  std::fprintf(stderr, "probe: the gathered run of %zu queries on %d ranks matches, %zu entries\n", queries.size(),
               world.size(), run.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  dgr::World world(&argc, &argv);
  dgr::log::init({}, world.rank(), world.size());
  try {
    const ProbeOptions options = parse(argc, argv);
    // Only rank 0 touches the directory before the first collective of either scenario.
    if (world.rank() == 0) fs::remove_all(options.dir);
    return options.scenario == "retrieval" ? run_retrieval(options, world) : run_checkpoint(options, world);
  } catch (const std::exception& e) {
    dgr::log::get("main")->error("fatal: {}", e.what());  // as dgr's main: with the rank, then end every rank
    dgr::log::flush();
  }
  world.abort(2);
}
