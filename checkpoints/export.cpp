// Model-only export files: /weights/<key> datasets plus root attributes for the config and the ids and
// checksums of the tokenizer and index; written under a temporary name and renamed when complete.
#include "checkpoints/export.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "data/hdf5_file.h"
#include "checkpoints/layout.h"
#include "common/error.h"

namespace dgr::checkpoints {
namespace fs = std::filesystem;

void write_export(const std::string& path, const std::vector<NamedArray>& weights, const ExportInfo& info) {
  DGR_CHECK_AS(CheckpointError, nlohmann::json::accept(info.model_config_json),
               "{}: the model config to export is not valid JSON: {:.200}", path, info.model_config_json);
  const std::string tmp_path = fmt::format("{}.tmp.{}", path, ::getpid());
  try {
    data::h5::File file = data::h5::File::create(tmp_path);
    file.set_string_attr("dgr_format", kExportFormat);
    file.set_int_attr("format_version", kExportFormatVersion);
    file.set_string_attr("dgr_version", layout::dgr_version());
    file.set_string_attr("model_config", info.model_config_json);
    file.set_string_attr("tokenizer_id", info.tokenizer_id);
    file.set_string_attr("tokenizer_sha256", info.tokenizer_sha256);
    file.set_string_attr("index_id", info.index_id);
    file.set_string_attr("index_sha256", info.index_sha256);
    if (!info.tokenizer_files.empty()) {
      std::string names;
      for (const NamedArray& t : info.tokenizer_files) {
        names += (names.empty() ? "" : ",") + t.name;
        file.write_array(t, {}, "tokenizer");
      }
      file.set_string_attr("tokenizer_files", names);
    }
    file.create_group("weights");  // present even when there are no weights
    for (const NamedArray& w : weights) {
      check_array_name(w.name);
      DGR_CHECK_AS(CheckpointError, w.name.find('/') == std::string::npos,
                   "{}: weight name '{}' contains '/': export keeps state-dict keys ('a.b.weight') flat", path,
                   w.name);
      file.write_array(w, {}, "weights");
    }
    file.close();
    data::h5::fsync_path(tmp_path);
    fs::rename(tmp_path, path);
    fs::path parent = fs::path(path).parent_path();
    data::h5::fsync_path(parent.empty() ? "." : parent.string());
  } catch (const std::exception& e) {
    std::error_code ec;
    fs::remove(tmp_path, ec);
    throw CheckpointError(fmt::format("{}: export failed: {}", path, e.what()));
  }
}

std::vector<NamedArray> tokenizer_file_arrays(const std::string& path) {
  std::vector<NamedArray> out;
  std::error_code ec;
  if (path.empty() || !fs::exists(path, ec)) return out;
  auto add = [&out](const std::string& name, const std::string& file) {
    std::ifstream in(file, std::ios::binary);
    DGR_CHECK_AS(CheckpointError, in.good(), "{}: cannot read the tokenizer file to export", file);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    NamedArray a;
    a.name = name;
    a.dtype = DType::kUInt8;
    a.shape = {static_cast<int64_t>(bytes.size())};
    a.bytes.assign(bytes.begin(), bytes.end());
    out.push_back(std::move(a));
  };
  if (fs::is_directory(path, ec)) {
    for (const char* name : {"vocab.json", "merges.txt"}) add(name, (fs::path(path) / name).string());
  } else {
    add("tokenizer.model", path);
  }
  return out;
}

ExportedModel read_export(const std::string& path) {
  data::h5::File file = data::h5::File::open_read(path);
  std::optional<std::string> format = file.string_attr("dgr_format");
  std::optional<int64_t> version = file.int_attr("format_version");
  DGR_CHECK_AS(CheckpointError, format && *format == kExportFormat,
               "{}: not a dgr export file (root attribute dgr_format is '{}', expected '{}'): export one with "
               "`dgr export`", path, format.value_or("<missing>"), kExportFormat);
  DGR_CHECK_AS(CheckpointError, version && *version == kExportFormatVersion,
               "{}: unknown export format version {} (this dgr reads version {}; was it written by a newer dgr?)",
               path, version ? std::to_string(*version) : "<missing>", kExportFormatVersion);
  ExportedModel out;
  auto required = [&](const char* name) {
    std::optional<std::string> value = file.string_attr(name);
    DGR_CHECK_AS(CheckpointError, value.has_value(), "{}: root attribute '{}' is missing: the file is damaged or "
                 "incomplete; export it again", path, name);
    return *value;
  };
  out.dgr_version = required("dgr_version");
  out.info.model_config_json = required("model_config");
  out.info.tokenizer_id = required("tokenizer_id");
  out.info.tokenizer_sha256 = required("tokenizer_sha256");
  out.info.index_id = required("index_id");
  out.info.index_sha256 = required("index_sha256");
  try {
    if (file.string_attr("tokenizer_files")) out.info.tokenizer_files = file.read_arrays("tokenizer");
    out.weights = file.read_arrays("weights");
  } catch (const CheckpointError& e) {
    throw CheckpointError(fmt::format("{} (the export file is damaged: export it again)", e.what()));
  }
  return out;
}

}  // namespace dgr::checkpoints
