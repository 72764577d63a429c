// Writes an export file of a small trained dgr model and a text dump of the same weights, for
// export_h5py_test.sh to compare against what Python's h5py reads (bit for bit, names = state-dict keys).
// Usage: export_h5py_driver OUT.h5 DUMP.txt
// DUMP: one line per parameter, then per buffer, in named_parameters()/named_buffers() order:
//   KEY <TAB> SHAPE (comma separated, empty for a scalar) <TAB> v0 v1 ... (each float32 as its 32-bit pattern
//   in hex, 8 digits)
#include <torch/torch.h>

#include <bit>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <memory>
#include <string>

#include "checkpoints/export.h"
#include "trainer/model.h"
#include "trainer/train_state.h"

namespace {

constexpr uint64_t kSeed = 20240917;
constexpr int kVocab = 300;
constexpr int kSteps = 3;

// Random token rows in [4, kVocab) with a padded tail (kPadId) on some rows.
torch::Tensor random_tokens(int64_t rows, int64_t length) {
  torch::Tensor t = torch::randint(4, kVocab, {rows, length}, torch::kInt64);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t keep = length - (r % 3);  // 0, 1 or 2 pads at the end
    if (keep < length) t.index_put_({r, torch::indexing::Slice(keep, torch::indexing::None)}, dgr::trainer::kPadId);
  }
  return t;
}

void dump_tensor(std::ofstream& out, const std::string& key, const torch::Tensor& tensor) {
  torch::Tensor host = tensor.detach().to(torch::kCPU).contiguous();
  if (host.scalar_type() != torch::kFloat32) {
    throw std::runtime_error("'" + key + "' is " + std::string(c10::toString(host.scalar_type())) +
                             ", the dump handles float32 only");
  }
  out << key << '\t';
  for (int64_t d = 0; d < host.dim(); ++d) out << (d ? "," : "") << host.size(d);
  out << '\t';
  const float* data = host.data_ptr<float>();
  char buf[16];
  for (int64_t i = 0; i < host.numel(); ++i) {
    std::snprintf(buf, sizeof buf, "%08x", std::bit_cast<uint32_t>(data[i]));
    if (i) out << ' ';
    out << buf;
  }
  out << '\n';
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s OUT.h5 DUMP.txt\n", argv[0]);
    return 2;
  }
  try {
    torch::set_num_threads(1);
    torch::manual_seed(kSeed);
    dgr::trainer::ModelConfig config = dgr::trainer::model_preset("test", kVocab);
    auto model = std::make_shared<dgr::trainer::Seq2Seq>(config);
    model->train();

    // A few AdamW steps so the exported values are not just the initialization.
    torch::optim::AdamW optimizer(model->parameters(), torch::optim::AdamWOptions(1e-2).weight_decay(0.01));
    for (int step = 0; step < kSteps; ++step) {
      torch::Tensor src = random_tokens(4, 12);
      torch::Tensor tgt = random_tokens(4, 6);
      optimizer.zero_grad();
      torch::Tensor loss = model->loss(src, tgt, 0.1);
      torch::Tensor tokens = (tgt != dgr::trainer::kPadId).sum();
      (loss / tokens).backward();
      optimizer.step();
    }

    dgr::checkpoints::ExportInfo info;
    info.model_config_json = config.to_json_string();
    info.tokenizer_id = "export_h5py_driver";
    info.index_id = "export_h5py_driver";
    dgr::checkpoints::write_export(argv[1], dgr::trainer::model_arrays(*model), info);

    std::ofstream out(argv[2]);
    if (!out) throw std::runtime_error(std::string("cannot write ") + argv[2]);
    int64_t arrays = 0, values = 0;
    for (auto& item : model->named_parameters()) {
      dump_tensor(out, item.key(), item.value());
      ++arrays, values += item.value().numel();
    }
    for (auto& item : model->named_buffers()) {
      dump_tensor(out, item.key(), item.value());
      ++arrays, values += item.value().numel();
    }
    out.close();
    if (!out) throw std::runtime_error(std::string("writing ") + argv[2] + " failed");
    std::printf("wrote %s and %s: %lld arrays, %lld values\n", argv[1], argv[2], static_cast<long long>(arrays),
                static_cast<long long>(values));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "export_h5py_driver: %s\n", e.what());
    return 1;
  }
}
