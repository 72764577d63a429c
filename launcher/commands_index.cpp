// `dgr index`: build the index directory of a data set (tokenizer, FM-index, passage ids; see
// retrieval/index_dir.h) that training and retrieval load. Only rank 0 builds; the others wait for it.
#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>
#include <thread>

#include "comm/communicator.h"
#include "common/error.h"
#include "common/log.h"
#include "launcher/commands.h"
#include "launcher/flags.h"
#include "retrieval/index_dir.h"
#include "data/readers.h"

namespace fs = std::filesystem;

namespace dgr::launcher {
namespace {

struct IndexCommandOptions {
  std::string data_dir = "data/debian-tiny";
  std::string out;  // "" = DATA/index
  int vocab_size = 8000;
  std::string model_type = "unigram";
  std::string tokenizer_model;
  int threads = 0;  // 0 = the machine's cores
  bool force = false;  // replace an existing index directory
};

int run_index(const IndexCommandOptions& opts, const World& world) {
  // Made before rank 0's work (making it is collective): the other ranks wait for that work in its barrier,
  // which has a deadline (comm::kControlTimeoutMs) and names a rank that does not arrive.
  auto control = comm::make_host_communicator(world);
  if (world.is_root()) {
    auto start = std::chrono::steady_clock::now();
    DGR_CHECK_AS(ConfigError, fs::is_directory(opts.data_dir), "--data {}: not a directory", opts.data_dir);
    const std::string corpus_path = (fs::path(opts.data_dir) / "corpus.tsv").string();
    const std::string out = opts.out.empty() ? (fs::path(opts.data_dir) / "index").string() : opts.out;
    // Models, mined sets and prepared sets name the index they were made with by its SHA-256: a silently
    // rebuilt index would leave them all pointing at something else.
    DGR_CHECK_AS(ConfigError, opts.force || !fs::exists(out), "{} exists: models and data made with it would no "
                 "longer match a rebuilt one; pass --force to replace it, or choose another --out", out);
    auto corpus = data::read_corpus(corpus_path);
    // The training queries are tokenizer training text too (the model reads queries); dev and test are not.
    std::vector<std::string> extra;
    const std::string train_queries = (fs::path(opts.data_dir) / "queries.train.tsv").string();
    if (opts.tokenizer_model.empty()) {
      if (fs::exists(train_queries)) {
        for (auto& q : data::read_queries(train_queries)) extra.push_back(std::move(q.text));
      } else {
        log::get("index")->warn("{} not found: training the tokenizer on the corpus only", train_queries);
      }
    }
    retrieval::IndexDirOptions options;
    options.vocab_size = opts.vocab_size;
    options.model_type = opts.model_type;
    options.tokenizer_model = opts.tokenizer_model;
    options.num_threads = opts.threads > 0 ? opts.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    options.corpus_path = corpus_path;
    auto summary = retrieval::build_index_dir(corpus, extra, out, options);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << fmt::format("index: {} passages, vocab {} ({}), {} tokens, built in {:.1f} s -> {}\n",
                             summary.passages, summary.vocab_size,
                             summary.trained_tokenizer ? "trained " + opts.model_type : opts.tokenizer_model,
                             summary.total_tokens, seconds, out)
              << std::flush;
  }
  control->barrier();
  return 0;
}

}  // namespace

void add_index_commands(CLI::App& app, CommandTable& table) {
  auto opts = std::make_shared<IndexCommandOptions>();
  CLI::App* index = app.add_subcommand("index", "Build the index directory of a data set: tokenizer (SentencePiece or BART's), "
                                                "FM-index over the passages' identifiers, passage ids");
  index->add_option("--data", opts->data_dir, "Data set directory (corpus.tsv; queries.train.tsv trains the tokenizer too)");
  index->add_option("--out", opts->out, "Index directory ('' = DATA/index); an existing one is replaced only with --force");
  index->add_flag("--force", opts->force, "Replace an existing index directory");
  index->add_option("--vocab-size", opts->vocab_size, "Tokenizer vocabulary size (an upper bound on small corpora)")
      ->check(between(16, 1 << 20));
  index->add_option("--model-type", opts->model_type, "SentencePiece model type")
      ->check(CLI::IsMember({"unigram", "bpe"}));
  index->add_option("--tokenizer-model", opts->tokenizer_model,
                    "Use this tokenizer instead of training one: a SentencePiece .model (made by `dgr index`) or a "
                    "BART tokenizer directory (vocab.json + merges.txt, as save_pretrained writes them)");
  index->add_option("--threads", opts->threads, "Tokenizer training threads (0 = the machine's cores)")
      ->check(at_least(0));
  table[index] = [opts](const World& world) { return run_index(*opts, world); };
}

}  // namespace dgr::launcher
