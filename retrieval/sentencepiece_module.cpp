// libdgr_sentencepiece.so: SentencePiece behind the interface of sentencepiece_module.h. See Note
// [SentencePiece in its own namespace] there for why this is a separately loaded module.
#include "retrieval/sentencepiece_module.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

namespace dgr::retrieval::spm {
namespace {

class TextIterator : public sentencepiece::SentenceIterator {
 public:
  explicit TextIterator(const std::vector<std::string>& texts) : texts_(texts) { skip_empty(); }
  bool done() const override { return i_ >= texts_.size(); }
  void Next() override {
    ++i_;
    skip_empty();
  }
  const std::string& value() const override { return texts_[i_]; }
  sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }

 private:
  void skip_empty() {
    while (i_ < texts_.size() && texts_[i_].empty()) ++i_;
  }
  const std::vector<std::string>& texts_;
  size_t i_ = 0;
};

class SpmProcessor final : public Processor {
 public:
  bool load_serialized(const std::string& bytes, std::string* error) override {
    auto status = sp_.LoadFromSerializedProto(bytes);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  }
  bool encode(std::string_view text, std::vector<int>* ids, std::string* error) const override {
    auto status = sp_.Encode(text, ids);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  }
  bool decode(const std::vector<int>& ids, std::string* text, std::string* error) const override {
    auto status = sp_.Decode(ids, text);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  }
  std::string id_to_piece(int id) const override { return sp_.IdToPiece(id); }
  int piece_to_id(const std::string& piece) const override { return sp_.PieceToId(piece); }
  int piece_size() const override { return sp_.GetPieceSize(); }
  bool is_control(int id) const override { return sp_.IsControl(id); }
  int pad_id() const override { return sp_.pad_id(); }
  int unk_id() const override { return sp_.unk_id(); }
  int bos_id() const override { return sp_.bos_id(); }
  int eos_id() const override { return sp_.eos_id(); }

 private:
  sentencepiece::SentencePieceProcessor sp_;
};

class SpmLibrary final : public Library {
 public:
  std::unique_ptr<Processor> new_processor() const override { return std::make_unique<SpmProcessor>(); }
  bool train(const std::unordered_map<std::string, std::string>& args, const std::vector<std::string>& texts,
             unsigned seed, std::string* model, std::string* error) const override {
    sentencepiece::SetRandomGeneratorSeed(seed);
    TextIterator iterator(texts);
    auto status = sentencepiece::SentencePieceTrainer::Train(args, &iterator, model);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  }
};

}  // namespace
}  // namespace dgr::retrieval::spm

extern "C" __attribute__((visibility("default"))) const dgr::retrieval::spm::Library* dgr_sentencepiece_library() {
  static const dgr::retrieval::spm::SpmLibrary library;
  return &library;
}
