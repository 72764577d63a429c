// Reading a step directory back: marker, meta.json, format version, sha256 of each file read, HDF5
// Fletcher-32 checks; every problem is an error naming the file and saying what to do.
#include <algorithm>
#include <filesystem>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "data/hdf5_file.h"
#include "checkpoints/layout.h"
#include "checkpoints/store.h"
#include "common/files.h"

#ifndef DGR_VERSION
#define DGR_VERSION "unknown"
#endif

namespace dgr::checkpoints {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace layout {

std::string rank_file_name(int rank) { return fmt::format("rank-{:05d}.h5", rank); }

std::optional<int64_t> parse_step_dir_name(const std::string& name, const std::string& suffix) {
  const std::string prefix = "step-";
  if (name.size() < prefix.size() + 8 + suffix.size() || name.compare(0, prefix.size(), prefix) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
    return std::nullopt;
  }
  std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.size() < 8 || digits.size() > 18 || digits.find_first_not_of("0123456789") != std::string::npos) {
    return std::nullopt;
  }
  return std::stoll(digits);
}

std::optional<int64_t> parse_step_dir_name(const std::string& name) { return parse_step_dir_name(name, ""); }

const char* dgr_version() { return DGR_VERSION; }

}  // namespace layout

std::string step_dir_name(int64_t step) { return fmt::format("step-{:08d}", step); }

std::vector<int64_t> committed_steps(const std::string& dir) {
  std::vector<int64_t> steps;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return steps;
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::optional<int64_t> step = layout::parse_step_dir_name(entry.path().filename().string());
    if (step && entry.is_directory() && fs::exists(entry.path() / layout::kMarkerFile)) steps.push_back(*step);
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

namespace {

// Checks the root attributes every dgr checkpoint file carries.
void check_file_root(const data::h5::File& file, const char* kind, int64_t step) {
  std::optional<std::string> format = file.string_attr("dgr_format");
  std::optional<int64_t> version = file.int_attr("format_version");
  std::optional<std::string> file_kind = file.string_attr("kind");
  std::optional<int64_t> file_step = file.int_attr("step");
  DGR_CHECK_AS(CheckpointError, format && *format == kCheckpointFormat,
               "{}: not a dgr checkpoint file (root attribute dgr_format is '{}', expected '{}')", file.path(),
               format.value_or("<missing>"), kCheckpointFormat);
  DGR_CHECK_AS(CheckpointError, version && *version == kFormatVersion,
               "{}: unknown format version {} (this dgr reads version {}; was it written by a newer dgr?)",
               file.path(), version ? std::to_string(*version) : "<missing>", kFormatVersion);
  DGR_CHECK_AS(CheckpointError, file_kind && *file_kind == kind, "{}: holds '{}' state, expected '{}'",
               file.path(), file_kind.value_or("<missing>"), kind);
  DGR_CHECK_AS(CheckpointError, file_step && *file_step == step, "{}: is for step {}, meta.json says {}",
               file.path(), file_step ? std::to_string(*file_step) : "<missing>", step);
}

}  // namespace

LoadedCheckpoint load_step(const std::string& step_dir, int rank, int world_size,
                           bool model_only_on_other_world_size) {
  std::string dir = step_dir;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const std::string advice = fmt::format("the checkpoint is damaged: delete {} or resume from an earlier one", dir);
  auto damaged = [&](const std::string& file, const std::string& what) {
    return DamagedCheckpointError(fmt::format("{}: {}: {}", file, what, advice));
  };

  const std::string marker_path = dir + "/" + layout::kMarkerFile;
  if (!fs::exists(marker_path)) {
    throw DamagedCheckpointError(fmt::format(
        "{}: missing: the checkpoint was never committed (the job probably stopped while writing it): delete {} "
        "or resume from an earlier one", marker_path, dir));
  }
  const std::string meta_path = dir + "/" + layout::kMetaFile;
  json meta;
  try {
    meta = json::parse(files::read_all(meta_path));
  } catch (const std::exception& e) {
    throw damaged(meta_path, fmt::format("cannot be read as JSON ({})", e.what()));
  }
  if (!meta.is_object() || meta.value("dgr_format", std::string()) != kCheckpointFormat) {
    throw damaged(meta_path, fmt::format("not a dgr checkpoint (dgr_format is not '{}')", kCheckpointFormat));
  }
  if (!meta.contains("format_version") || meta["format_version"] != kFormatVersion) {
    throw damaged(meta_path, fmt::format("unknown format version {} (this dgr {} reads version {}; was it "
                                         "written by a newer dgr?)",
                                         meta.contains("format_version") ? meta["format_version"].dump() : "<missing>",
                                         layout::dgr_version(), kFormatVersion));
  }

  LoadedCheckpoint out;
  out.dir = dir;
  std::map<std::string, std::pair<uint64_t, std::string>> listed;  // file name -> (bytes, sha256)
  try {
    json marker = json::parse(files::read_all(marker_path));
    std::string meta_sha = files::sha256_file(meta_path);
    if (marker.at("meta_sha256").get<std::string>() != meta_sha) {
      throw damaged(meta_path, fmt::format("sha256 {} does not match {} in {}", meta_sha,
                                           marker.at("meta_sha256").get<std::string>(), layout::kMarkerFile));
    }
    out.step = meta.at("step").get<int64_t>();
    out.world_size = meta.at("world_size").get<int>();
    out.dgr_version = meta.at("dgr_version").get<std::string>();
    out.config_json = meta.at("config").dump();
    out.state_json = meta.at("state").dump();
    for (const auto& f : meta.at("files")) {
      listed[f.at("name").get<std::string>()] = {f.at("bytes").get<uint64_t>(), f.at("sha256").get<std::string>()};
    }
    if (marker.at("step").get<int64_t>() != out.step) {
      throw damaged(marker_path, fmt::format("is for step {}, meta.json for step {}", marker.at("step").dump(), out.step));
    }
  } catch (const DamagedCheckpointError&) {
    throw;
  } catch (const std::exception& e) {
    throw damaged(meta_path, fmt::format("incomplete ({})", e.what()));
  }
  std::optional<int64_t> dir_step = layout::parse_step_dir_name(fs::path(dir).filename().string());
  if (dir_step && *dir_step != out.step) {
    throw damaged(meta_path, fmt::format("is for step {}, but the directory is named for step {}", out.step, *dir_step));
  }
  if (rank >= 0 && out.world_size != world_size && model_only_on_other_world_size) {
    rank = -1;  // replicated part only: per-rank state is re-derived by the caller
  } else if (rank >= 0 && out.world_size != world_size) {
    throw CheckpointError(fmt::format(
        "{}: written by {} ranks, this job has {}: resume with {} ranks (each rank's RNG states and data cursor "
        "are in its own file), or start a new run in another directory", dir, out.world_size, world_size,
        out.world_size));
  }

  // Verifies a listed file's size and sha256, then reads it (HDF5 verifies each chunk's Fletcher-32).
  auto read_file = [&](const std::string& name, const char* kind, auto&& read) {
    auto it = listed.find(name);
    if (it == listed.end()) throw damaged(meta_path, fmt::format("does not list {}", name));
    const std::string path = dir + "/" + name;
    std::error_code ec;
    uint64_t bytes = fs::file_size(path, ec);
    if (ec) throw damaged(path, fmt::format("cannot be read ({})", ec.message()));
    if (bytes != it->second.first) {
      throw damaged(path, fmt::format("has {} bytes, meta.json says {} (truncated or overwritten)", bytes,
                                      it->second.first));
    }
    try {
      std::string sha = files::sha256_file(path);
      if (sha != it->second.second) {
        throw damaged(path, fmt::format("sha256 {} does not match {} in meta.json", sha, it->second.second));
      }
      data::h5::File file = data::h5::File::open_read(path);
      check_file_root(file, kind, out.step);
      read(file);
    } catch (const DamagedCheckpointError&) {
      throw;
    } catch (const std::exception& e) {
      throw DamagedCheckpointError(fmt::format("{}: {}", e.what(), advice));
    }
  };

  read_file(layout::kModelFile, "replicated", [&](const data::h5::File& file) { out.replicated = file.read_arrays(); });
  out.rank_state_json = "{}";
  if (rank >= 0) {
    read_file(layout::rank_file_name(rank), "rank", [&](const data::h5::File& file) {
      std::optional<int64_t> file_rank = file.int_attr("rank");
      DGR_CHECK_AS(CheckpointError, file_rank && *file_rank == rank, "{}: holds the state of rank {}, expected {}",
                   file.path(), file_rank ? std::to_string(*file_rank) : "<missing>", rank);
      out.rank_state_json = json::parse(file.string_attr("rank_state_json").value_or("{}")).dump();
      out.per_rank = file.read_arrays();
    });
  }
  return out;
}

}  // namespace dgr::checkpoints
