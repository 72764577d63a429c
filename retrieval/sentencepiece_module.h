// The boundary between dgr and SentencePiece. Note [SentencePiece in its own namespace]: Debian's
// libsentencepiece carries its own copy of protobuf-lite and exports its symbols; LibTorch loads the system
// libprotobuf. In one process with both linked normally, libprotobuf's static initialisers bind to
// SentencePiece's copies of protobuf functions and the program crashes before main. So SentencePiece is
// never linked into dgr: the module libdgr_sentencepiece.so (sentencepiece_module.cpp, the only file that
// includes SentencePiece headers) links it, and tokenizer.cpp loads the module with dlopen(RTLD_LOCAL |
// RTLD_DEEPBIND), which keeps SentencePiece's protobuf copy private to it. Calls cross through the virtual
// functions below (no symbol lookup), with standard-library types only.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace dgr::retrieval::spm {

class Processor {
 public:
  virtual ~Processor() = default;
  // false + *error on failure.
  virtual bool load_serialized(const std::string& bytes, std::string* error) = 0;
  virtual bool encode(std::string_view text, std::vector<int>* ids, std::string* error) const = 0;
  virtual bool decode(const std::vector<int>& ids, std::string* text, std::string* error) const = 0;
  virtual std::string id_to_piece(int id) const = 0;
  virtual int piece_to_id(const std::string& piece) const = 0;
  virtual int piece_size() const = 0;
  virtual bool is_control(int id) const = 0;
  virtual int pad_id() const = 0;
  virtual int unk_id() const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
};

class Library {
 public:
  virtual ~Library() = default;
  virtual std::unique_ptr<Processor> new_processor() const = 0;
  // Trains on the non-empty `texts`; the serialized model goes to *model.
  virtual bool train(const std::unordered_map<std::string, std::string>& args, const std::vector<std::string>& texts,
                     unsigned seed, std::string* model, std::string* error) const = 0;
};

// In tokenizer.cpp: the module, loaded once (thread-safe); throws dgr::Error naming the module path and
// what to do when it cannot be loaded. DGR_SENTENCEPIECE_MODULE overrides where it is looked for.
const Library& library();

}  // namespace dgr::retrieval::spm

// Exported by the module.
extern "C" const dgr::retrieval::spm::Library* dgr_sentencepiece_library();
