// Export files <-> models, for `dgr retrieve` and `dgr export` (no LibTorch in this header). An export's
// model_config_json is {"model": ModelConfig, "view_limits": {...}}: what is needed to rebuild the model and
// the exact source/target sequences it was trained on.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "checkpoints/store.h"
#include "retrieval/index_dir.h"
#include "retrieval/seq2seq.h"
#include "retrieval/views.h"
#include "trainer/device.h"

namespace dgr::trainer {

std::string view_limits_json(const retrieval::ViewLimits& limits);
retrieval::ViewLimits parse_view_limits(const std::string& json, const std::string& where);

struct ExportedScorer {
  std::unique_ptr<retrieval::Seq2SeqScorer> scorer;  // the model in eval mode, no gradients
  retrieval::ViewLimits limits;
  std::string tokenizer_sha256, index_sha256, model_config_json;
  std::vector<std::string> trained_views;  // the views it learnt to generate (empty: an export from before dgr recorded them)
};

// Reads and verifies an export file and builds the model on `device` (LibTorch set to `threads` threads):
// the weights are loaded into a CPU model, which is then moved. CheckpointError naming the file when it is
// not an export, damaged, or does not fit its own config.
ExportedScorer load_exported_scorer(const std::string& path, int threads, const DeviceChoice& device = {});

// Where a model meets an index (`retrieve`, `mine`): refuses (ConfigError naming both files and what to do) a
// model made with another tokenizer than the index's (its identifiers would be meaningless), and one trained
// on another FM-index (fm_index.bin's SHA-256 differs: another corpus, or the index was rebuilt) unless
// `any_index`; a model without a recorded index (an import) fits any index of its tokenizer.
void check_model_fits_index(const ExportedScorer& model, const std::string& model_path,
                            const retrieval::IndexDir& index, const std::string& index_path, bool any_index);

// Writes an export file from a stage-1 checkpoint step (loaded with rank < 0): the model/* arrays and
// the model config, view limits, tokenizer and index checksums stored in the checkpoint's config.
void write_export_from_checkpoint(const checkpoints::LoadedCheckpoint& checkpoint, const std::string& path);

}  // namespace dgr::trainer
