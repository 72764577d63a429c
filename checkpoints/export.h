// `dgr export`: a model-only HDF5 file (weights, model config, the tokenizer and index the model was
// trained with) that retrieval and evaluation load. Layout: docs/checkpoint-format.md.
#pragma once

#include <string>
#include <vector>

#include "checkpoints/array.h"

namespace dgr::checkpoints {

constexpr const char* kExportFormat = "dgr-export";  // root attribute dgr_format of an export file
constexpr int kExportFormatVersion = 1;

// What an export file says about the model besides its weights.
struct ExportInfo {
  std::string model_config_json = "{}";  // the model part of the config, JSON text
  std::string tokenizer_id;              // e.g. the tokenizer's name or path as configured
  std::string tokenizer_sha256;          // sha256 of the tokenizer file(s) used in training
  std::string index_id;                  // the document-id index the model generates into
  std::string index_sha256;
  // The tokenizer's own files, carried in the export (uint8 arrays under /tokenizer: "tokenizer.model", or
  // BART's "vocab.json" and "merges.txt"), so that a model is self-contained; empty in exports from before.
  std::vector<NamedArray> tokenizer_files;
};

// The files of the tokenizer at `path` (a SentencePiece .model, or a directory with vocab.json and merges.txt)
// as ExportInfo::tokenizer_files; empty when `path` is "" or no longer exists (a warning is the caller's).
std::vector<NamedArray> tokenizer_file_arrays(const std::string& path);

struct ExportedModel {
  ExportInfo info;
  std::string dgr_version;           // dgr that wrote the file
  std::vector<NamedArray> weights;   // sorted by name (state-dict keys, dots kept)
};

// Local. Writes `path` atomically (PATH.tmp.<pid>, fsync, rename, fsync of the directory): weights under
// /weights/<key>, the info as root attributes. Throws CheckpointError naming the file on any failure; an
// existing `path` is replaced only when the new file is complete.
void write_export(const std::string& path, const std::vector<NamedArray>& weights, const ExportInfo& info);

// Local. Reads and verifies an export file (format, version, Fletcher-32 of every weight). Throws
// CheckpointError naming the file and what to do.
ExportedModel read_export(const std::string& path);

}  // namespace dgr::checkpoints
