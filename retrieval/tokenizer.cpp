// The SentencePiece tokenizer of tokenizer.h: training from sentences held in memory (no input file, no
// files next to the model), loading with a check of the reserved tokens, and decoding that writes the
// reserved tokens as their symbols (SentencePiece itself drops control symbols when decoding).
//
// Note [Reserved tokens]: the markers are SentencePiece *control* symbols, not user-defined ones. A user-
// defined symbol is matched in the input text, so a passage containing "||" would produce the pq_start id
// and break the identifier layout of the FM-index; a control symbol has an id but is never produced by
// Encode, so "@@" in text is tokenized as ordinary characters. Control symbols get the ids right after
// pad/unk/bos/eos, in the order of kReserved.
#include "retrieval/tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <unordered_map>

#include "common/error.h"
#include "common/files.h"
#include "retrieval/bart_bpe.h"
#include "retrieval/sentencepiece_module.h"

namespace dgr::retrieval {
namespace {

// The reserved symbols in id order and where their ids go in SpecialTokens.
struct ReservedSymbol {
  const char* symbol;
  int32_t SpecialTokens::*field;
};
constexpr ReservedSymbol kReserved[] = {
    {"<title>", &SpecialTokens::title_view}, {"<body>", &SpecialTokens::body_view},
    {"<pq>", &SpecialTokens::pq_view},       {"@@", &SpecialTokens::end_id},
    {"||", &SpecialTokens::pq_start},        {"<doc>", &SpecialTokens::boundary},
};

const std::string kRetrain = "retrain it with `dgr index`";

// MINDER's view texts, appended to the query in a source (Note [Markers with BART]).
constexpr const char* kBartViewText[3] = {" || title || +", " || body || +", " || query || +"};

}  // namespace

const char* tokenizer_kind_name(TokenizerKind kind) {
  return kind == TokenizerKind::bart_bpe ? "bart-bpe" : "sentencepiece";
}

namespace spm {

// The module is looked for in DGR_SENTENCEPIECE_MODULE, next to the running executable, and where the build
// put it (DGR_SENTENCEPIECE_MODULE_PATH, compiled in).
const Library& library() {
  static std::once_flag once;
  static const Library* loaded = nullptr;
  static std::string failure;
  std::call_once(once, [] {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("DGR_SENTENCEPIECE_MODULE")) candidates.emplace_back(env);
    std::error_code ec;
    auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec) candidates.push_back((exe.parent_path() / "libdgr_sentencepiece.so").string());
    candidates.emplace_back(DGR_SENTENCEPIECE_MODULE_PATH);
    for (const auto& path : candidates) {
      if (!std::filesystem::exists(path, ec)) continue;
      // Note [SentencePiece in its own namespace] in sentencepiece_module.h.
      void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (handle == nullptr) {
        failure += path + ": " + ::dlerror() + "; ";
        continue;
      }
      auto entry = reinterpret_cast<const Library* (*)()>(::dlsym(handle, "dgr_sentencepiece_library"));
      if (entry == nullptr) {
        failure += path + ": no dgr_sentencepiece_library; ";
        continue;
      }
      loaded = entry();
      return;
    }
    if (failure.empty()) {
      for (const auto& path : candidates) failure += path + " ";
      failure = "not found at " + failure;
    }
  });
  DGR_CHECK(loaded != nullptr, "cannot load dgr's SentencePiece module libdgr_sentencepiece.so ({}): build the "
            "dgr_sentencepiece target, or set DGR_SENTENCEPIECE_MODULE to its path", failure);
  return *loaded;
}

}  // namespace spm

struct Tokenizer::Impl {
  std::unique_ptr<spm::Processor> sp;  // SentencePiece
  std::unique_ptr<BartBpe> bart;       // or BART's BPE
  std::vector<char> reserved;          // [id] -> a reserved marker (SentencePiece: decoded as its symbol)
  std::vector<int32_t> markers;        // BART: the marker ids plain text must not produce
};

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::train(const std::vector<std::string>& texts, const std::string& model_path,
                           const TokenizerTrainOptions& options) {
  DGR_CHECK_AS(ConfigError, options.model_type == "unigram" || options.model_type == "bpe",
               "tokenizer model type '{}' is not supported: use unigram or bpe", options.model_type);
  DGR_CHECK_AS(ConfigError, options.vocab_size >= 16, "tokenizer vocabulary size {} is too small (at least 16)",
               options.vocab_size);
  size_t non_empty = 0;
  for (const auto& t : texts) non_empty += t.empty() ? 0 : 1;
  DGR_CHECK_AS(DataError, non_empty > 0, "no text to train the tokenizer {} on (the corpus is empty?)", model_path);

  std::string control;
  for (const auto& r : kReserved) {
    if (!control.empty()) control += ',';
    control += r.symbol;
  }
  // No model_prefix: with a serialized_model_proto SentencePiece returns the model instead of writing files.
  std::unordered_map<std::string, std::string> args = {
      {"model_type", options.model_type},
      {"vocab_size", std::to_string(options.vocab_size)},
      {"hard_vocab_limit", "false"},  // a small corpus gets fewer pieces instead of an error
      {"character_coverage", "1.0"},
      {"pad_id", "0"},
      {"unk_id", "1"},
      {"bos_id", "2"},
      {"eos_id", "3"},
      {"control_symbols", control},  // Note [Reserved tokens]
      {"num_threads", std::to_string(std::max(1, options.num_threads))},
      {"max_sentence_length", "65536"},  // long descriptions are training text too
      {"minloglevel", "2"},              // SentencePiece logs every EM step at INFO
  };
  std::string model, error;
  bool ok = spm::library().train(args, texts, static_cast<unsigned int>(options.seed), &model, &error);
  DGR_CHECK_AS(DataError, ok, "training the tokenizer {} failed: {} ({} sentences, vocab size {}, {})",
               model_path, error, non_empty, options.vocab_size, options.model_type);
  {
    files::AtomicFile out(model_path);
    out.write(model);
    out.commit();
  }
  return load(model_path);
}

Tokenizer Tokenizer::load_bart(const std::string& dir) {
  Tokenizer tok;
  tok.kind_ = TokenizerKind::bart_bpe;
  tok.impl_->bart = std::make_unique<BartBpe>(BartBpe::load(dir));
  const BartBpe& bpe = *tok.impl_->bart;
  SpecialTokens& s = tok.special_;
  s.pad = bpe.pad();
  s.unk = bpe.unk();
  s.bos = bpe.bos();
  s.eos = bpe.eos();
  s.decoder_start = bpe.eos();
  s.source_start = bpe.bos();
  s.boundary = bpe.eos();
  const std::string vocab = (std::filesystem::path(dir) / "vocab.json").string();
  auto marker = [&](const char* text) {
    const std::vector<int32_t> ids = bpe.encode(text);
    DGR_CHECK_AS(DataError, ids.size() == 1, "{}: \"{}\" is {} tokens in this vocabulary, dgr needs it as one token "
                 "(the marker SEAL and MINDER use with BART; GPT-2's vocabulary has it): use BART's vocab.json and "
                 "merges.txt, or train your BPE on text that contains it", vocab, text, ids.size());
    tok.impl_->markers.push_back(ids[0]);
    return ids[0];
  };
  s.end_id = marker(" @@");
  s.pq_start = marker(" ||");
  for (size_t v = 0; v < s.view_text.size(); ++v) s.view_text[v] = bpe.encode(kBartViewText[v]);
  tok.path_ = dir;
  tok.sha256_ = files::sha256_file(vocab) + "+" +
                files::sha256_file((std::filesystem::path(dir) / "merges.txt").string());
  return tok;
}

Tokenizer Tokenizer::load(const std::string& model_path) {
  std::error_code ec;
  if (std::filesystem::is_directory(model_path, ec)) return load_bart(model_path);
  std::string bytes = files::read_all(model_path);
  Tokenizer tok;
  tok.impl_->sp = spm::library().new_processor();
  auto& sp = *tok.impl_->sp;
  std::string error;
  DGR_CHECK_AS(DataError, sp.load_serialized(bytes, &error), "{}: not a SentencePiece model ({}): {}", model_path,
               error, kRetrain);
  DGR_CHECK_AS(DataError, sp.pad_id() == 0 && sp.unk_id() == 1 && sp.bos_id() == 2 && sp.eos_id() == 3,
               "{}: SentencePiece model with pad/unk/bos/eos ids {}/{}/{}/{}, dgr needs 0/1/2/3: {}", model_path,
               sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id(), kRetrain);
  tok.impl_->reserved.assign(static_cast<size_t>(sp.piece_size()), 0);
  for (const auto& r : kReserved) {
    int id = sp.piece_to_id(r.symbol);
    DGR_CHECK_AS(DataError, id != sp.unk_id() && sp.is_control(id),
                 "{}: the tokenizer lacks the reserved token '{}' (a model not made by `dgr index`): {}", model_path,
                 r.symbol, kRetrain);
    tok.special_.*(r.field) = id;
    tok.impl_->reserved[static_cast<size_t>(id)] = 1;
  }
  tok.path_ = model_path;
  tok.sha256_ = files::sha256_file(model_path);
  return tok;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  if (impl_->bart) {
    if (text.empty()) return {};
    std::string spaced(1, ' ');
    spaced.append(text.data(), text.size());
    std::vector<int32_t> raw = impl_->bart->encode(spaced);
    std::vector<int32_t> out;
    out.reserve(raw.size());
    for (int32_t id : raw) {
      if (std::find(impl_->markers.begin(), impl_->markers.end(), id) == impl_->markers.end()) {
        out.push_back(id);
      } else {
        for (int32_t b : impl_->bart->byte_tokens(id)) out.push_back(b);  // Note [Markers with BART]
      }
    }
    return out;
  }
  std::vector<int> ids;
  std::string error;
  DGR_CHECK(impl_->sp->encode(text, &ids, &error), "tokenizer {}: encode failed: {}", path_, error);
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  if (impl_->bart) {
    // Every token's bytes, pad, bos and eos (the boundary) dropped; the leading space of " " + text removed.
    std::vector<int32_t> kept;
    for (int32_t id : ids) {
      if (id != special_.pad && id != special_.bos && id != special_.eos) kept.push_back(id);
    }
    std::string out = impl_->bart->decode(kept);
    if (!out.empty() && out.front() == ' ') out.erase(0, 1);
    return out;
  }
  // Runs of ordinary pieces are decoded by SentencePiece; reserved markers are written as their symbols,
  // separated by single spaces; pad, bos and eos are dropped.
  const auto& sp = *impl_->sp;
  const int size = sp.piece_size();
  std::string out;
  std::vector<int> run;
  auto append = [&out](const std::string& part) {
    if (part.empty()) return;
    if (!out.empty()) out += ' ';
    out += part;
  };
  auto flush = [&] {
    if (run.empty()) return;
    std::string text;
    std::string error;
    DGR_CHECK(sp.decode(run, &text, &error), "tokenizer {}: decode failed: {}", path_, error);
    append(text);
    run.clear();
  };
  for (int32_t id : ids) {
    DGR_CHECK(id >= 0 && id < size, "tokenizer {}: token id {} out of range [0, {})", path_, id, size);
    if (impl_->reserved[static_cast<size_t>(id)]) {
      flush();
      append(sp.id_to_piece(id));
    } else if (id != special_.pad && id != special_.bos && id != special_.eos) {
      run.push_back(id);
    }
  }
  flush();
  return out;
}

std::string Tokenizer::piece(int32_t id) const {
  DGR_CHECK(id >= 0 && id < vocab_size(), "tokenizer {}: token id {} out of range [0, {})", path_, id, vocab_size());
  return impl_->bart ? impl_->bart->token(id) : impl_->sp->id_to_piece(id);
}

int32_t Tokenizer::vocab_size() const { return impl_->bart ? impl_->bart->vocab_size() : impl_->sp->piece_size(); }

}  // namespace dgr::retrieval
