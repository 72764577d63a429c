#include "trainer/exported_model.h"

#include <filesystem>

#include <map>

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "checkpoints/export.h"
#include "common/error.h"
#include "common/files.h"
#include "trainer/cpu_allocator.h"
#include "trainer/model.h"
#include "trainer/model_scorer.h"
#include "trainer/placement.h"
#include "trainer/train_state.h"

namespace dgr::trainer {

std::string view_limits_json(const retrieval::ViewLimits& l) {
  return nlohmann::json{{"max_source", l.max_source}, {"max_title", l.max_title}, {"body_length", l.body_length},
                        {"max_pq", l.max_pq}}
      .dump();
}

retrieval::ViewLimits parse_view_limits(const std::string& json, const std::string& where) {
  try {
    auto j = nlohmann::json::parse(json);
    retrieval::ViewLimits l;
    l.max_source = j.at("max_source").get<int>();
    l.max_title = j.at("max_title").get<int>();
    l.body_length = j.at("body_length").get<int>();
    l.max_pq = j.at("max_pq").get<int>();
    return l;
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(where + ": bad view limits (" + e.what() + ")");
  }
}

ExportedScorer load_exported_scorer(const std::string& path, int threads, const DeviceChoice& device) {
  if (threads > 0) torch::set_num_threads(threads);
  install_caching_cpu_allocator();  // Note [CPU page faults]
  checkpoints::ExportedModel exported = checkpoints::read_export(path);
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(exported.info.model_config_json);
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(path + ": model_config is not JSON (" + e.what() + "): re-export the model");
  }
  DGR_CHECK_AS(CheckpointError, config.contains("model") && config.contains("view_limits"),
               "{}: model_config lacks 'model' or 'view_limits': not a stage-1 export of this dgr; re-export it", path);
  ModelConfig model_config = ModelConfig::from_json_string(config["model"].dump());
  auto model = std::make_shared<Seq2Seq>(model_config);
  load_model_arrays(exported.weights, *model, path);
  if (device.cuda) model->to(torch_device(device));  // parameters and buffers
  model->eval();
  ExportedScorer out;
  out.scorer = make_model_scorer(model);
  out.limits = parse_view_limits(config["view_limits"].dump(), path);
  out.trained_views = config.value("trained_views", std::vector<std::string>{});
  out.tokenizer_sha256 = exported.info.tokenizer_sha256;
  out.index_sha256 = exported.info.index_sha256;
  out.model_config_json = exported.info.model_config_json;
  return out;
}

void write_export_from_checkpoint(const checkpoints::LoadedCheckpoint& checkpoint, const std::string& path) {
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(checkpoint.config_json);
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(checkpoint.dir + ": config is not JSON (" + e.what() + ")");
  }
  DGR_CHECK_AS(CheckpointError, config.contains("export"),
               "{}: the checkpoint's config has no 'export' section: not a dgr training checkpoint", checkpoint.dir);
  const auto& e = config["export"];
  checkpoints::ExportInfo info;
  info.model_config_json = e.at("model_config").dump();
  info.tokenizer_id = e.value("tokenizer_id", "");
  info.tokenizer_sha256 = e.value("tokenizer_sha256", "");
  info.index_id = e.value("index_id", "");
  info.index_sha256 = e.value("index_sha256", "");
  // The tokenizer's files as they are now, when they still have the training's SHA-256.
  {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path tok(info.tokenizer_id);
    std::string sha;
    if (!info.tokenizer_id.empty() && fs::is_directory(tok, ec) && fs::exists(tok / "vocab.json", ec) &&
        fs::exists(tok / "merges.txt", ec)) {
      sha = files::sha256_file((tok / "vocab.json").string()) + "+" + files::sha256_file((tok / "merges.txt").string());
    } else if (!info.tokenizer_id.empty() && fs::is_regular_file(tok, ec)) {
      sha = files::sha256_file(tok.string());
    }
    if (!sha.empty() && sha == info.tokenizer_sha256) info.tokenizer_files = checkpoints::tokenizer_file_arrays(tok.string());
  }
  // A run with --ema-decay exports the average of the weights ("ema/<key>", Note [Weight averaging]), as
  // its final export does; buffers and runs without it take "model/<key>".
  std::map<std::string, const checkpoints::NamedArray*> averages;
  for (const auto& a : checkpoint.replicated) {
    if (a.name.rfind("ema/", 0) == 0) averages[a.name.substr(4)] = &a;
  }
  std::vector<checkpoints::NamedArray> weights;
  for (const auto& a : checkpoint.replicated) {
    if (a.name.rfind("model/", 0) != 0) continue;
    auto average = averages.find(a.name.substr(6));
    checkpoints::NamedArray w = average != averages.end() ? *average->second : a;
    w.name = a.name.substr(6);
    weights.push_back(std::move(w));
  }
  DGR_CHECK_AS(CheckpointError, !weights.empty(), "{}: no model/* arrays", checkpoint.dir);
  // Rebuild the model once to prove the weights fit the config before writing a file that claims so.
  auto model = std::make_shared<Seq2Seq>(ModelConfig::from_json_string(e.at("model_config").at("model").dump()));
  load_model_arrays(weights, *model, checkpoint.dir);
  checkpoints::write_export(path, weights, info);
}

void check_model_fits_index(const ExportedScorer& model, const std::string& model_path,
                            const retrieval::IndexDir& index, const std::string& index_path, bool any_index) {
  DGR_CHECK_AS(ConfigError, model.tokenizer_sha256 == index.tokenizer.sha256(),
               "{} was trained with another tokenizer (sha256 {}) than {} has ({}): its identifiers would be "
               "meaningless; use the index the model was trained with (--index)", model_path, model.tokenizer_sha256,
               index_path, index.tokenizer.sha256());
  const std::string fm_sha = nlohmann::json::parse(index.manifest_json).value("fm_index_sha256", "");
  DGR_CHECK_AS(ConfigError, any_index || model.index_sha256.empty() || model.index_sha256 == fm_sha,
               "{} was trained on another FM-index (sha256 {}) than {} ({}): another corpus, or an index rebuilt "
               "since; use the index it was trained with (--index), or pass --any-index to use this one anyway",
               model_path, model.index_sha256, index_path, fm_sha);
}

}  // namespace dgr::trainer
