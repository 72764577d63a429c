// Driver of tests/bart_import_test.sh: imports a Hugging Face BART directory (trainer/hf_bart.h) into an
// export file, rebuilds the model from that file alone, and compares with transformers' outputs in
// DIR/reference.safetensors (bart_reference.py): the encoder output at real source positions, the teacher-forced
// logits at real target positions, and three steps of cached decoding. Prints the largest absolute difference
// of each and that difference over max(1, largest |reference value|); exit 1 when the latter exceeds the
// tolerance (fp32 sums in another order differ by a few ulps of the largest value). Usage:
// bart_import_driver DIR OUT.h5 [TOLERANCE=1e-5 | --fairseq EXTRACTED]
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "checkpoints/export.h"
#include "common/error.h"
#include "data/safetensors.h"
#include "trainer/hf_bart.h"
#include "trainer/model.h"
#include "trainer/train_state.h"

namespace {

torch::Tensor tensor_of(const dgr::data::NamedArray& a) {
  const auto type = a.dtype == dgr::data::DType::kInt64 ? torch::kLong : torch::kFloat;
  return torch::from_blob(const_cast<uint8_t*>(a.bytes.data()), a.shape, type).clone();
}

}  // namespace

// --roundtrip DIR WORK: import DIR, change every weight as training would (a deterministic small shift), export
// that model back to Hugging Face's layout (WORK/hf) and import it again: the arrays must be identical. Writes
// the changed model's teacher-forced logits on the reference inputs to WORK/dgr_logits.safetensors, for the
// test to compare with transformers' from_pretrained(WORK/hf).
int roundtrip(const std::string& dir, const std::string& work) {
  dgr::trainer::import_hf_bart(dir, work + "/a.h5");
  const auto a = dgr::checkpoints::read_export(work + "/a.h5");
  const auto config = dgr::trainer::ModelConfig::from_json_string(
      nlohmann::json::parse(a.info.model_config_json).at("model").dump());
  dgr::trainer::Seq2Seq model(config);
  dgr::trainer::load_model_arrays(a.weights, model, work + "/a.h5");
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model.named_parameters()) p.value().add_(torch::sin(torch::arange(p.value().numel()).view(p.value().sizes())) * 0.01);
  }
  model.eval();
  dgr::checkpoints::write_export(work + "/b.h5", dgr::trainer::model_arrays(model), a.info);
  const size_t n = dgr::trainer::export_hf_bart(work + "/b.h5", work + "/hf");
  dgr::trainer::import_hf_bart(work + "/hf", work + "/c.h5");
  const auto b = dgr::checkpoints::read_export(work + "/b.h5"), c = dgr::checkpoints::read_export(work + "/c.h5");
  size_t differ = b.weights.size() == c.weights.size() ? 0 : 1;
  for (size_t i = 0; i < std::min(b.weights.size(), c.weights.size()); ++i)
    if (b.weights[i].name != c.weights[i].name || b.weights[i].shape != c.weights[i].shape ||
        b.weights[i].bytes != c.weights[i].bytes) {
      std::cout << "differs after the round trip: " << b.weights[i].name << "\n";
      ++differ;
    }
  std::map<std::string, torch::Tensor> ref;
  for (const auto& r : dgr::data::read_safetensors(dir + "/reference.safetensors").arrays) ref[r.name] = tensor_of(r);
  torch::NoGradGuard no_grad;
  auto [logits, labels] = model.target_logits(ref.at("src"), ref.at("tgt"));
  dgr::data::write_safetensors(work + "/dgr_logits.safetensors",
                               {dgr::data::NamedArray::copy_of("logits", {logits.size(0), logits.size(1)},
                                                               dgr::data::DType::kFloat32, logits.contiguous().data_ptr())});
  std::cout << fmt::format("round trip: {} Hugging Face tensors in {}/hf; {} of {} arrays differ after import -> "
                           "export hf -> import\n", n, work, differ, b.weights.size());
  return differ == 0 ? 0 : 1;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: bart_import_driver DIR OUT.h5 [TOLERANCE] | bart_import_driver --roundtrip DIR WORK\n";
    return 2;
  }
  if (std::string(argv[1]) == "--roundtrip") {
    try {
      return roundtrip(argv[2], argv[3]);
    } catch (const dgr::Error& e) {
      std::cerr << e.what() << "\n";
      return 1;
    }
  }
  const std::string dir = argv[1], out = argv[2];
  // [--fairseq EXTRACTED]: import the fairseq file (scripts/fairseq-extract.py) with DIR as its tokenizer instead.
  const bool fairseq = argc > 4 && std::string(argv[3]) == "--fairseq";
  const double tolerance = !fairseq && argc > 3 ? std::stod(argv[3]) : 1e-5;
  torch::set_num_threads(2);
  try {
    const auto report = fairseq ? dgr::trainer::import_fairseq_bart(argv[4], dir, out) : dgr::trainer::import_hf_bart(dir, out);
    std::cout << fmt::format("imported {} tensors as {} arrays into {}\n", report.hf_tensors, report.weights, out);
    const auto exported = dgr::checkpoints::read_export(out);
    const auto config = dgr::trainer::ModelConfig::from_json_string(
        nlohmann::json::parse(exported.info.model_config_json).at("model").dump());
    dgr::trainer::Seq2Seq model(config);
    dgr::trainer::load_model_arrays(exported.weights, model, out);
    model.eval();
    torch::NoGradGuard no_grad;

    std::map<std::string, torch::Tensor> ref;
    for (const auto& a : dgr::data::read_safetensors(dir + "/reference.safetensors").arrays) ref[a.name] = tensor_of(a);
    const auto src = ref.at("src"), tgt = ref.at("tgt");
    const auto src_real = src.ne(config.pad_id), tgt_real = tgt.ne(config.pad_id);

    // Largest |a - b| and that over max(1, largest |b|).
    auto compare = [](const torch::Tensor& a, const torch::Tensor& b) {
      const double diff = (a - b).abs().max().item<double>();
      return std::pair{diff, diff / std::max(1.0, b.abs().max().item<double>())};
    };
    const auto enc = compare(model.encode(src).index({src_real}), ref.at("encoder_out").index({src_real}));
    auto [logits, labels] = model.target_logits(src, tgt);
    const auto tf = compare(logits, ref.at("logits").index({tgt_real}));
    auto state = model.start(src.slice(0, 0, 1));
    std::vector<torch::Tensor> steps;
    for (int64_t token : {static_cast<int64_t>(config.decoder_start_id), tgt[0][0].item<int64_t>(), tgt[0][1].item<int64_t>()})
      steps.push_back(model.step(state, torch::full({1}, token, torch::kLong)).squeeze(0));
    const auto cached = compare(torch::stack(steps), ref.at("step_log_probs"));
    std::cout << fmt::format("max |dgr - transformers| (scaled): encoder output {:.3g} ({:.3g}), teacher-forced logits "
                             "{:.3g} ({:.3g}; {} tokens x {}), cached decoding log-probs {:.3g} ({:.3g}; 3 steps); "
                             "tolerance {:.0e}\n", enc.first, enc.second, tf.first, tf.second, logits.size(0),
                             logits.size(1), cached.first, cached.second, tolerance);
    const bool ok = enc.second <= tolerance && tf.second <= tolerance && cached.second <= tolerance;
    std::cout << (ok ? "ok\n" : "FAILED\n");
    return ok ? 0 : 1;
  } catch (const dgr::Error& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
