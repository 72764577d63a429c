// Internal to checkpoints/: the names inside a step directory, shared by the writer (store.cpp) and the
// reader (load.cpp). The layout is documented in docs/checkpoint-format.md.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace dgr::checkpoints::layout {

constexpr const char* kModelFile = "model.h5";     // replicated state, written by rank 0
constexpr const char* kMetaFile = "meta.json";     // step, world size, versions, config, state, files + sha256
constexpr const char* kMarkerFile = "COMMITTED";   // written last by rank 0; holds meta.json's sha256
constexpr const char* kTmpSuffix = ".tmp";         // step-00000040.tmp/: being written, never loaded
constexpr const char* kOldSuffix = ".old";         // step-00000040.old/: moved aside while a step is re-saved

std::string rank_file_name(int rank);  // "rank-00003.h5"
// The step of a directory named "step-<8 or more digits>" (nothing after the digits), else nullopt.
std::optional<int64_t> parse_step_dir_name(const std::string& name);
// The step of "step-<digits><suffix>", else nullopt.
std::optional<int64_t> parse_step_dir_name(const std::string& name, const std::string& suffix);
// dgr's version, as written into meta.json and the files.
const char* dgr_version();

}  // namespace dgr::checkpoints::layout
