// Building and loading the index directory of index_dir.h. The manifest records a sha256 for every file,
// so that a directory mixed from two builds, or a file damaged or replaced by hand, is refused on load
// instead of silently pairing a model with the wrong FM-index.
#include "retrieval/index_dir.h"

#include <filesystem>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"
#include "common/log.h"

namespace fs = std::filesystem;

namespace dgr::retrieval {
namespace {

constexpr const char* kTokenizerFile = "tokenizer.model";
constexpr const char* kBartTokenizerDir = "tokenizer";  // BART: tokenizer/vocab.json + tokenizer/merges.txt
constexpr const char* kFmIndexFile = "fm_index.bin";
constexpr const char* kPidsFile = "pids.txt";
constexpr const char* kManifestFile = "index.json";
const std::string kRebuild = "rebuild it with `dgr index`";

std::string join(const std::string& dir, const char* name) { return (fs::path(dir) / name).string(); }

void write_file(const std::string& path, const std::string& bytes) {
  files::AtomicFile out(path);
  out.write(bytes);
  out.commit();
}

}  // namespace

PassageTokens tokenize_passage(const Tokenizer& tokenizer, const data::Passage& passage) {
  PassageTokens out;
  if (!passage.title.empty()) out.title = tokenizer.encode(passage.title);
  out.body = tokenizer.encode(passage.text);
  out.pseudo_queries.reserve(passage.pseudo_queries.size());
  for (const auto& pq : passage.pseudo_queries) out.pseudo_queries.push_back(tokenizer.encode(pq));
  return out;
}

IndexDirSummary build_index_dir(const data::Corpus& corpus, const std::vector<std::string>& extra_training_texts,
                                const std::string& dir, const IndexDirOptions& options) {
  auto log = log::get("index");
  DGR_CHECK_AS(DataError, !corpus.passages.empty(), "cannot build an index over an empty corpus");
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    DGR_CHECK_AS(ConfigError, fs::is_directory(dir) && fs::exists(fs::path(dir) / kManifestFile),
                 "{} exists and is not a dgr index directory (no {}): choose another output directory or remove it",
                 dir, kManifestFile);
  }
  files::AtomicDir out(dir, /*replace=*/true);
  const std::string tmp = out.tmp_dir();
  IndexDirSummary summary;

  // 1. The tokenizer: trained on everything the model will read or generate, or an existing one (a
  // SentencePiece .model, or a BART tokenizer directory).
  std::string model_path = join(tmp, kTokenizerFile);
  std::string given_tokenizer_sha;
  std::optional<Tokenizer> tokenizer;
  if (!options.tokenizer_model.empty()) {
    const Tokenizer given = Tokenizer::load(options.tokenizer_model);  // check it before copying
    if (given.kind() == TokenizerKind::bart_bpe) {
      model_path = join(tmp, kBartTokenizerDir);
      fs::create_directory(model_path);
      for (const char* name : {"vocab.json", "merges.txt"})
        write_file(join(model_path, name), files::read_all(join(options.tokenizer_model, name)));
    } else {
      write_file(model_path, files::read_all(options.tokenizer_model));
    }
    tokenizer = Tokenizer::load(model_path);
    given_tokenizer_sha = tokenizer->sha256();
  } else {
    std::vector<std::string> texts;
    texts.reserve(corpus.passages.size() * 2 + extra_training_texts.size());
    for (const auto& p : corpus.passages) {
      texts.push_back(p.title);
      texts.push_back(p.text);
      texts.insert(texts.end(), p.pseudo_queries.begin(), p.pseudo_queries.end());
    }
    texts.insert(texts.end(), extra_training_texts.begin(), extra_training_texts.end());
    TokenizerTrainOptions topts;
    topts.vocab_size = options.vocab_size;
    topts.model_type = options.model_type;
    topts.num_threads = options.num_threads;
    log->info("training the {} tokenizer (vocabulary up to {}) on {} texts", options.model_type, options.vocab_size,
              texts.size());
    tokenizer = Tokenizer::train(texts, model_path, topts);
    summary.trained_tokenizer = true;
  }
  const SpecialTokens& special = tokenizer->special();

  // 2. Every passage as its identifier sequence, in corpus order.
  std::vector<std::vector<int32_t>> sequences;
  sequences.reserve(corpus.passages.size());
  for (const auto& p : corpus.passages) sequences.push_back(index_sequence(tokenize_passage(*tokenizer, p), special));
  FMIndex fm = FMIndex::build(sequences, special.boundary);
  const std::string fm_path = join(tmp, kFmIndexFile);
  fm.save(fm_path);

  std::string pids;
  for (const auto& p : corpus.passages) pids += p.pid + "\n";
  const std::string pids_path = join(tmp, kPidsFile);
  write_file(pids_path, pids);

  // 3. The manifest, written last.
  nlohmann::ordered_json m;
  m["format"] = kIndexFormat;
  m["version"] = kIndexFormatVersion;
  m["corpus"] = {{"path", options.corpus_path},
                 {"sha256", options.corpus_path.empty() ? "" : files::sha256_file(options.corpus_path)}};
  m["passages"] = corpus.passages.size();
  m["total_tokens"] = fm.total_tokens();
  m["vocab_size"] = tokenizer->vocab_size();
  m["tokenizer_kind"] = tokenizer_kind_name(tokenizer->kind());
  m["special_tokens"] = {{"pad", special.pad},           {"unk", special.unk},         {"bos", special.bos},
                         {"eos", special.eos},           {"title_view", special.title_view},
                         {"body_view", special.body_view}, {"pq_view", special.pq_view}, {"end", special.end_id},
                         {"pq_start", special.pq_start}, {"boundary", special.boundary},
                         {"decoder_start", special.decoder_start}, {"source_start", special.source_start}};
  m["options"] = {{"vocab_size", options.vocab_size},
                  {"model_type", options.model_type},
                  {"tokenizer_model", options.tokenizer_model},
                  {"tokenizer_model_sha256", given_tokenizer_sha},
                  {"num_threads", options.num_threads},
                  {"extra_training_texts", extra_training_texts.size()}};
  m["tokenizer_sha256"] = tokenizer->sha256();  // BART: sha256(vocab.json)+sha256(merges.txt)
  if (tokenizer->kind() == TokenizerKind::bart_bpe) {
    m["tokenizer_vocab_sha256"] = files::sha256_file(join(model_path, "vocab.json"));
    m["tokenizer_merges_sha256"] = files::sha256_file(join(model_path, "merges.txt"));
  }
  m["fm_index_sha256"] = files::sha256_file(fm_path);
  m["pids_sha256"] = files::sha256_file(pids_path);
  write_file(join(tmp, kManifestFile), m.dump(2) + "\n");
  out.commit();

  summary.passages = corpus.passages.size();
  summary.vocab_size = tokenizer->vocab_size();
  summary.total_tokens = fm.total_tokens();
  return summary;
}

namespace {
IndexDir load_index_dir_unchecked(const std::string& dir) {
  const std::string manifest_path = join(dir, kManifestFile);
  DGR_CHECK_AS(DataError, fs::is_directory(dir), "{}: no such index directory: build it with `dgr index`", dir);
  DGR_CHECK_AS(DataError, fs::exists(manifest_path),
               "{}: missing (not a dgr index directory, or an interrupted build): {}", manifest_path, kRebuild);
  std::string manifest = files::read_all(manifest_path);
  nlohmann::json m = nlohmann::json::parse(manifest, nullptr, /*allow_exceptions=*/false);
  DGR_CHECK_AS(DataError, m.is_object() && m.value("format", "") == kIndexFormat,
               "{}: not a dgr index manifest (no \"format\": \"{}\"): {}", manifest_path, kIndexFormat, kRebuild);
  DGR_CHECK_AS(DataError, m.value("version", -1) == kIndexFormatVersion,
               "{}: index format version {}, this dgr reads version {}: {}", manifest_path, m.value("version", -1),
               kIndexFormatVersion, kRebuild);
  auto verify = [&](const char* name, const char* key) {
    std::string path = join(dir, name);
    DGR_CHECK_AS(DataError, fs::exists(path), "{}: missing from the index directory: {}", path, kRebuild);
    std::string expected = m.value(key, "");
    std::string actual = files::sha256_file(path);
    DGR_CHECK_AS(DataError, !expected.empty() && expected == actual,
                 "{}: sha256 {} does not match {} in {} (damaged, or from another build): {}", path, actual,
                 expected.empty() ? "(none)" : expected, manifest_path, kRebuild);
    return path;
  };
  std::string tokenizer_path;
  const std::string kind = m.value("tokenizer_kind", "sentencepiece");
  if (kind == tokenizer_kind_name(TokenizerKind::bart_bpe)) {
    tokenizer_path = join(dir, kBartTokenizerDir);
    verify((fs::path(kBartTokenizerDir) / "vocab.json").c_str(), "tokenizer_vocab_sha256");
    verify((fs::path(kBartTokenizerDir) / "merges.txt").c_str(), "tokenizer_merges_sha256");
  } else {
    DGR_CHECK_AS(DataError, kind == tokenizer_kind_name(TokenizerKind::sentencepiece),
                 "{}: unknown tokenizer_kind '{}' (this dgr knows sentencepiece and bart-bpe): {}", manifest_path,
                 kind, kRebuild);
    tokenizer_path = verify(kTokenizerFile, "tokenizer_sha256");
  }
  std::string fm_path = verify(kFmIndexFile, "fm_index_sha256");
  std::string pids_path = verify(kPidsFile, "pids_sha256");

  IndexDir index{dir, Tokenizer::load(tokenizer_path), FMIndex::load(fm_path), {}, {}, manifest};
  std::istringstream pids(files::read_all(pids_path));
  for (std::string line; std::getline(pids, line);) {
    DGR_CHECK_AS(DataError, !line.empty(), "{}:{}: empty passage id: {}", pids_path, index.pids.size() + 1, kRebuild);
    auto [it, inserted] = index.doc_of.emplace(line, static_cast<int32_t>(index.pids.size()));
    DGR_CHECK_AS(DataError, inserted, "{}:{}: passage id '{}' is a duplicate: {}", pids_path, index.pids.size() + 1,
                 line, kRebuild);
    index.pids.push_back(line);
  }
  DGR_CHECK_AS(DataError,
               index.pids.size() == index.fm.num_passages() &&
                   index.pids.size() == m.value("passages", static_cast<size_t>(0)),
               "{}: {} passage ids, {} passages in {}, {} in {}: {}", pids_path, index.pids.size(),
               index.fm.num_passages(), fm_path, m.value("passages", static_cast<size_t>(0)), manifest_path, kRebuild);
  DGR_CHECK_AS(DataError, index.tokenizer.special().boundary == index.fm.boundary(),
               "{}: boundary token {} differs from the tokenizer's {} ({}): {}", fm_path, index.fm.boundary(),
               index.tokenizer.special().boundary, tokenizer_path, kRebuild);
  return index;
}
}  // namespace

IndexDir load_index_dir(const std::string& dir) {
  try {
    return load_index_dir_unchecked(dir);
  } catch (const nlohmann::json::exception& e) {
    throw DataError(fmt::format("{}: malformed index manifest ({}): {}", join(dir, kManifestFile), e.what(), kRebuild));
  }
}

}  // namespace dgr::retrieval
