#include "trainer/run_common.h"

#include <chrono>
#include <ctime>

#include <torch/torch.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "checkpoints/export.h"
#include "common/files.h"
#include "common/log.h"
#include "retrieval/metrics.h"
#include "trainer/exported_model.h"
#include "trainer/model.h"
#include "trainer/retrieve_queries.h"
#include "trainer/train_state.h"

namespace dgr::trainer {

void save_effective_config(const std::string& out_dir, const std::string& config_json, const World& world) {
  if (!world.is_root()) return;
  log::get("train")->info("effective config (also in {}/config.json): {}", out_dir, config_json);
  std::filesystem::create_directories(out_dir);
  files::AtomicFile file((std::filesystem::path(out_dir) / "config.json").string());
  file.write(nlohmann::json::parse(config_json).dump(2) + "\n");
  file.commit();
}

std::unique_ptr<comm::Communicator> make_train_communicator(const std::string& backend, int timeout_s,
                                                            const World& world) {
  comm::Options options;
  options.backend = backend;
  options.timeout_ms = static_cast<int64_t>(timeout_s) * 1000;
  return comm::make_communicator(options, world);
}

double scheduled_lr(double base, int64_t step, int64_t warmup_steps, int64_t total_steps, const std::string& decay) {
  if (step < warmup_steps) return base * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  if (decay == "constant") return base;
  return base * std::max(0.0, static_cast<double>(total_steps - step) /
                                  static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps)));
}

std::vector<EvalSet> load_eval_sets(const std::filesystem::path& data_dir, const std::vector<std::string>& splits,
                                    int max_queries, const data::Corpus& corpus) {
  std::vector<EvalSet> sets;
  for (const auto& split : splits) {
    EvalSet set;
    set.split = split;
    set.queries = data::read_queries((data_dir / ("queries." + split + ".tsv")).string());
    if (max_queries > 0 && set.queries.size() > static_cast<size_t>(max_queries))
      set.queries.resize(static_cast<size_t>(max_queries));
    set.qrels = data::read_qrels((data_dir / ("qrels." + split + ".tsv")).string(), &corpus, nullptr);
    sets.push_back(std::move(set));
  }
  return sets;
}

std::map<std::string, std::map<std::string, double>> evaluate_sets(retrieval::Seq2SeqScorer& scorer, const retrieval::IndexDir& index, const std::vector<EvalSet>& sets,
                   const RetrievalSettings& settings, const retrieval::ViewLimits& limits, comm::Communicator& control,
                   const EvalPoint& point, std::ostream& jsonl) {
  auto log = log::get("train");
  std::map<std::string, std::map<std::string, double>> results;
  for (const auto& set : sets) {
    RetrievalStats stats;
    auto run = retrieve_queries(scorer, index, set.queries, settings, limits, control, "dgr", nullptr, &stats);
    if (control.rank() != 0) continue;
    auto evaluation = retrieval::evaluate(run, set.qrels);
    log->info("eval {} {} at step {} (epoch {:.2f}): {} [{:.1f} queries/s]", point.when, set.split, point.step,
              point.epoch, retrieval::format_metrics(evaluation), stats.queries_per_second());
    nlohmann::json line = {{"event", "eval"}, {"split", set.split}, {"step", point.step}, {"epoch", point.epoch},
                           {"time", utc_time_now()}, {"elapsed_s", point.elapsed_s}, {"queries_per_s", stats.queries_per_second()},
                           {"metrics", evaluation.mean}, {"attempt", point.attempt}};
    jsonl << line.dump() << "\n" << std::flush;
    results[set.split] = evaluation.mean;
  }
  return results;
}

std::string utc_time_now() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &utc);
  return fmt::format("{}.{:03d}Z", text, static_cast<int>(millis));
}

InitialModel load_initial_model(const std::string& path, const retrieval::IndexDir& index, const std::string& index_path,
                                double dropout, uint64_t seed) {
  checkpoints::ExportedModel init = checkpoints::read_export(path);
  DGR_CHECK_AS(CheckpointError, init.info.tokenizer_sha256 == index.tokenizer.sha256(),
               "{} was made with another tokenizer (sha256 {}) than {} has ({}): use the index built with the model's "
               "tokenizer (`dgr index --tokenizer-model` with the tokenizer it was trained or imported with)", path,
               init.info.tokenizer_sha256, index_path, index.tokenizer.sha256());
  nlohmann::json init_config = nlohmann::json::parse(init.info.model_config_json);
  ModelConfig config = ModelConfig::from_json_string(init_config.at("model").dump());
  const retrieval::SpecialTokens& special = index.tokenizer.special();
  DGR_CHECK_AS(CheckpointError, config.pad_id == special.pad && config.decoder_start_id == special.decoder_start &&
               config.vocab_size == index.tokenizer.vocab_size(),
               "{}: the model pads with id {}, starts decoding with id {} and has {} tokens, the tokenizer of {} has "
               "pad {}, decoder start {} and {} tokens: the model was not made for this tokenizer", path, config.pad_id,
               config.decoder_start_id, config.vocab_size, index_path, special.pad, special.decoder_start,
               index.tokenizer.vocab_size());
  if (dropout >= 0) config.dropout = dropout;
  InitialModel out;
  out.limits = parse_view_limits(init_config.at("view_limits").dump(), path);
  out.trained_views = init_config.value("trained_views", std::vector<std::string>{});
  torch::manual_seed(seed);
  out.model = std::make_shared<Seq2Seq>(config);
  load_model_arrays(init.weights, *out.model, path);
  return out;
}

std::string write_final_export(Seq2Seq& model, const std::string& out_dir, const std::string& model_config_json,
                               const retrieval::IndexDir& index, const std::string& index_path,
                               const std::string& index_sha256, const World& world, const std::string& file_name) {
  if (!world.is_root()) return "";
  checkpoints::ExportInfo info;
  info.model_config_json = model_config_json;
  info.tokenizer_id = index.tokenizer.path();
  info.tokenizer_sha256 = index.tokenizer.sha256();
  info.index_id = index_path;
  info.index_sha256 = index_sha256;
  info.tokenizer_files = checkpoints::tokenizer_file_arrays(index.tokenizer.path());
  const std::string path = (std::filesystem::path(out_dir) / file_name).string();
  checkpoints::write_export(path, model_arrays(model), info);
  return path;
}

}  // namespace dgr::trainer
