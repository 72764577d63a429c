// Training state <-> checkpoints (see train_state.h).
#include "trainer/train_state.h"

#include <ATen/CPUGeneratorImpl.h>
#include <algorithm>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/log.h"

namespace dgr::trainer {
namespace {

using checkpoints::DType;
using checkpoints::NamedArray;

DType to_dtype(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat32: return DType::kFloat32;
    case torch::kBFloat16: return DType::kBFloat16;
    case torch::kFloat64: return DType::kFloat64;
    case torch::kInt64: return DType::kInt64;
    case torch::kInt32: return DType::kInt32;
    case torch::kUInt8: return DType::kUInt8;
    default: throw CheckpointError(fmt::format("cannot checkpoint a tensor of dtype {}", c10::toString(type)));
  }
}

NamedArray to_array(const std::string& name, const torch::Tensor& tensor) {
  torch::Tensor host = tensor.detach().to(torch::kCPU).contiguous();
  std::vector<int64_t> shape(host.sizes().begin(), host.sizes().end());
  return NamedArray::copy_of(name, shape, to_dtype(host.scalar_type()), host.data_ptr());
}

// A host copy of `tensor` (any device, any strides) in a buffer from `pool` (Note [Staging buffers] in
// checkpoints/array.cpp): one copy, straight from the tensor into the checkpoint's array.
NamedArray staged_array(checkpoints::StagingPool& pool, const std::string& name, const torch::Tensor& tensor) {
  std::vector<int64_t> shape(tensor.sizes().begin(), tensor.sizes().end());
  NamedArray array = pool.take(name, shape, to_dtype(tensor.scalar_type()));
  if (array.bytes.empty()) return array;
  torch::NoGradGuard no_grad;
  torch::Tensor host = torch::from_blob(array.bytes.data(), tensor.sizes(),
                                        torch::TensorOptions().dtype(tensor.scalar_type()).device(torch::kCPU));
  host.copy_(tensor.detach());
  return array;
}

// The device the model's parameters live on (CPU for a model without parameters).
torch::Device model_device(torch::nn::Module& model) {
  for (const auto& p : model.parameters()) return p.device();
  return torch::Device(torch::kCPU);
}

// Name of the per-rank array holding the generator state of `device` ("rng/cpu", "rng/cuda").
std::string rng_array_name(const torch::Device& device) { return device.is_cuda() ? "rng/cuda" : "rng/cpu"; }

torch::Tensor generator_state(const torch::Device& device) {
  auto generator = device.is_cuda() ? at::globalContext().defaultGenerator(device)
                                    : at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get_state();
}

void set_generator_state(const torch::Device& device, const NamedArray& array) {
  torch::Tensor bytes = torch::from_blob(const_cast<uint8_t*>(array.bytes.data()),
                                         {static_cast<int64_t>(array.bytes.size())}, torch::kUInt8).clone();
  auto generator = device.is_cuda() ? at::globalContext().defaultGenerator(device)
                                    : at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(bytes);
}

// Copies `array` into `tensor` in place after checking shape and dtype.
void copy_into(const NamedArray& array, torch::Tensor tensor, const std::string& where) {
  std::vector<int64_t> shape(tensor.sizes().begin(), tensor.sizes().end());
  DGR_CHECK_AS(CheckpointError, array.shape == shape && array.dtype == to_dtype(tensor.scalar_type()),
               "{}: '{}' is {} {} in the checkpoint but {} {} in the model (was it saved from another model "
               "config?)", where, array.name, checkpoints::dtype_name(array.dtype), checkpoints::shape_string(array.shape),
               c10::toString(tensor.scalar_type()), checkpoints::shape_string(shape));
  torch::NoGradGuard no_grad;
  torch::Tensor source = torch::from_blob(const_cast<uint8_t*>(array.bytes.data()), tensor.sizes(),
                                          tensor.options().device(torch::kCPU));
  tensor.copy_(source);
}


// The per-parameter state of Adam or AdamW as (name suffix, tensor) pairs, plus its step count.
struct AdamLike {
  torch::Tensor* exp_avg = nullptr;
  torch::Tensor* exp_avg_sq = nullptr;
  torch::Tensor* max_exp_avg_sq = nullptr;
  int64_t* step = nullptr;
};

AdamLike adam_state(torch::optim::OptimizerParamState& state) {
  if (auto* s = dynamic_cast<torch::optim::AdamParamState*>(&state)) {
    return {&s->exp_avg(), &s->exp_avg_sq(), &s->max_exp_avg_sq(), &s->step()};
  }
  if (auto* s = dynamic_cast<torch::optim::AdamWParamState*>(&state)) {
    return {&s->exp_avg(), &s->exp_avg_sq(), &s->max_exp_avg_sq(), &s->step()};
  }
  throw CheckpointError("checkpoints support the Adam and AdamW optimizers only");
}

}  // namespace

compat::OptimizerStateKey state_key(const torch::Tensor& p) { return compat::optimizer_state_key(p); }

std::vector<std::pair<std::string, torch::Tensor>> named_parameters(torch::nn::Module& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& item : model.named_parameters()) out.emplace_back(item.key(), item.value());
  return out;
}

std::vector<NamedArray> model_arrays(torch::nn::Module& model) {
  std::vector<NamedArray> out;
  for (auto& item : model.named_parameters()) out.push_back(to_array(item.key(), item.value()));
  for (auto& item : model.named_buffers()) out.push_back(to_array(item.key(), item.value()));
  return out;
}

void load_model_arrays(const std::vector<NamedArray>& arrays, torch::nn::Module& model, const std::string& file) {
  std::map<std::string, const NamedArray*> by_name;
  for (const auto& a : arrays) by_name[a.name] = &a;
  size_t used = 0;
  auto load = [&](const std::string& key, torch::Tensor tensor) {
    auto it = by_name.find(key);
    DGR_CHECK_AS(CheckpointError, it != by_name.end(),
                 "{}: the model has '{}' but the file lacks it (was it written for another model config?)", file, key);
    copy_into(*it->second, tensor, file);
    ++used;
  };
  for (auto& item : model.named_parameters()) load(item.key(), item.value());
  for (auto& item : model.named_buffers()) load(item.key(), item.value());
  if (used != by_name.size()) {
    std::map<std::string, bool> known;
    for (auto& item : model.named_parameters()) known[item.key()] = true;
    for (auto& item : model.named_buffers()) known[item.key()] = true;
    for (const auto& [name, a] : by_name) {
      DGR_CHECK_AS(CheckpointError, known.count(name), "{}: '{}' is in the file but not in the model (was it written "
                   "for another model config?)", file, name);
    }
  }
}

void seed_rank_rng(uint64_t seed, int rank, int64_t step) {
  torch::manual_seed(seed * 1000003ull + static_cast<uint64_t>(rank) * 7919ull + static_cast<uint64_t>(step));
}

checkpoints::SaveRequest make_save_request(const TrainProgress& progress, torch::nn::Module& model,
                                           torch::optim::Optimizer& optimizer, const std::string& config_json,
                                           checkpoints::Store& store, const ExtraTensors& extras) {
  checkpoints::StagingPool& pool = store.staging();
  checkpoints::SaveRequest request;
  request.step = progress.step;
  // Host tensors are copied by the writer while the next forward and backward run (Note [Overlapped copy]
  // in checkpoints/store.cpp); others (a GPU's, non-contiguous ones) are copied here.
  auto add = [&](const std::string& name, const torch::Tensor& tensor) {
    if (tensor.device().is_cpu() && tensor.is_contiguous()) {
      request.replicated_sources.push_back({name, std::vector<int64_t>(tensor.sizes().begin(), tensor.sizes().end()),
                                            to_dtype(tensor.scalar_type()), tensor.data_ptr()});
    } else {
      request.replicated.push_back(staged_array(pool, name, tensor));
    }
  };
  if (store.writes_replicated()) {  // other ranks' copies would be dropped: they skip the copy
    for (auto& item : model.named_parameters()) add("model/" + item.key(), item.value());
    for (auto& item : model.named_buffers()) add("model/" + item.key(), item.value());
    auto& states = optimizer.state();
    for (auto& [name, p] : named_parameters(model)) {
      auto it = states.find(state_key(p));
      if (it == states.end()) continue;  // no step taken yet for this parameter
      AdamLike s = adam_state(*it->second);
      add("optimizer/" + name + "/exp_avg", *s.exp_avg);
      add("optimizer/" + name + "/exp_avg_sq", *s.exp_avg_sq);
      if (s.max_exp_avg_sq->defined()) add("optimizer/" + name + "/max_exp_avg_sq", *s.max_exp_avg_sq);
      int64_t step = *s.step;
      request.replicated.push_back(pool.copy_of("optimizer/" + name + "/step", {}, DType::kInt64, &step));
    }
    for (const auto& [name, tensor] : extras) add(name, tensor);
  }
  request.per_rank.push_back(staged_array(pool, "rng/cpu", generator_state(torch::Device(torch::kCPU))));
  const torch::Device device = model_device(model);
  if (device.is_cuda()) request.per_rank.push_back(staged_array(pool, rng_array_name(device), generator_state(device)));
  nlohmann::json state = {{"step", progress.step},
                          {"epoch", progress.position.epoch},
                          {"step_in_epoch", progress.position.step_in_epoch},
                          {"seed", progress.seed}};
  request.state_json = state.dump();
  request.config_json = config_json;
  return request;
}

TrainProgress restore(const checkpoints::LoadedCheckpoint& checkpoint, torch::nn::Module& model,
                      torch::optim::Optimizer& optimizer, int rank, int world_size, const ExtraTensors& extras) {
  const std::string where = checkpoint.dir;
  std::map<std::string, const NamedArray*> arrays;
  for (const auto& a : checkpoint.replicated) arrays[a.name] = &a;
  std::vector<std::string> missing;
  auto find = [&](const std::string& name) -> const NamedArray* {
    auto it = arrays.find(name);
    if (it == arrays.end()) { missing.push_back(name); return nullptr; }
    return it->second;
  };
  for (auto& item : model.named_parameters()) {
    if (const NamedArray* a = find("model/" + item.key())) copy_into(*a, item.value(), where);
  }
  for (auto& item : model.named_buffers()) {
    if (const NamedArray* a = find("model/" + item.key())) copy_into(*a, item.value(), where);
  }
  DGR_CHECK_AS(CheckpointError, missing.empty(), "{}: the model has {} parameter(s) the checkpoint lacks, e.g. '{}' "
               "(was it saved from another model config?)", where, missing.size(), missing.empty() ? "" : missing[0]);
  auto& states = optimizer.state();
  for (auto& [name, p] : named_parameters(model)) {
    auto exp_avg = arrays.find("optimizer/" + name + "/exp_avg");
    if (exp_avg == arrays.end()) continue;  // saved before this parameter's first step
    std::unique_ptr<torch::optim::OptimizerParamState> fresh;
    bool adamw = dynamic_cast<torch::optim::AdamW*>(&optimizer) != nullptr;
    if (adamw) fresh = std::make_unique<torch::optim::AdamWParamState>();
    else fresh = std::make_unique<torch::optim::AdamParamState>();
    AdamLike s = adam_state(*fresh);
    *s.exp_avg = torch::zeros_like(p);
    *s.exp_avg_sq = torch::zeros_like(p);
    copy_into(*exp_avg->second, *s.exp_avg, where);
    if (const NamedArray* a = find("optimizer/" + name + "/exp_avg_sq")) copy_into(*a, *s.exp_avg_sq, where);
    auto max_sq = arrays.find("optimizer/" + name + "/max_exp_avg_sq");
    if (max_sq != arrays.end()) {
      *s.max_exp_avg_sq = torch::zeros_like(p);
      copy_into(*max_sq->second, *s.max_exp_avg_sq, where);
    }
    if (const NamedArray* a = find("optimizer/" + name + "/step")) *s.step = a->values<int64_t>().at(0);
    states[state_key(p)] = std::move(fresh);
  }
  DGR_CHECK_AS(CheckpointError, missing.empty(), "{}: optimizer state incomplete, e.g. '{}' missing", where, missing[0]);
  size_t extras_from_model = 0;
  for (const auto& [name, tensor] : extras) {
    auto it = arrays.find(name);
    if (it != arrays.end()) {
      copy_into(*it->second, tensor, where);
      continue;
    }
    const std::string model_name = "model/" + name.substr(name.find('/') + 1);
    auto from_model = arrays.find(model_name);
    DGR_CHECK_AS(CheckpointError, from_model != arrays.end(), "{}: neither '{}' nor '{}' is in the checkpoint", where,
                 name, model_name);
    copy_into(*from_model->second, tensor, where);
    ++extras_from_model;
  }
  if (extras_from_model > 0 && rank == 0) {
    log::get("trainer")->warn("{}: {} of {} extra arrays (e.g. '{}') are not in it (written without them): they start "
                              "from the restored model", where, extras_from_model, extras.size(), extras.front().first);
  }

  auto state = nlohmann::json::parse(checkpoint.state_json);
  TrainProgress progress;
  progress.step = state.at("step").get<int64_t>();
  progress.position = {state.at("epoch").get<int64_t>(), state.at("step_in_epoch").get<int64_t>()};
  progress.seed = state.at("seed").get<uint64_t>();
  const NamedArray* rng = nullptr;
  const NamedArray* device_rng = nullptr;
  const torch::Device device = model_device(model);
  for (const auto& a : checkpoint.per_rank) {
    if (a.name == "rng/cpu") rng = &a;
    if (device.is_cuda() && a.name == rng_array_name(device)) device_rng = &a;
  }
  if (checkpoint.world_size == world_size && rng != nullptr && (device_rng != nullptr || !device.is_cuda())) {
    set_generator_state(torch::Device(torch::kCPU), *rng);
    if (device_rng != nullptr) set_generator_state(device, *device_rng);
  } else {
    if (checkpoint.world_size != world_size) {
      log::get("trainer")->warn("checkpoint written by {} ranks, resuming on {}: model, optimizer and data position "
                                "are restored exactly; this rank's random state is re-derived from the seed (see "
                                "Note [Resume on another world size])", checkpoint.world_size, world_size);
    } else {
      log::get("trainer")->warn("{}: no saved random state for {} (written on another device?): model, optimizer "
                                "and data position are restored exactly; this rank's random state is re-derived "
                                "from the seed", where, device.str());
    }
    seed_rank_rng(progress.seed, rank, progress.step);
  }
  return progress;
}

std::vector<std::string> check_resume_config(const std::string& saved_json, const std::string& current_json,
                                             const std::string& dir, bool accept_changes) {
  const auto saved = nlohmann::json::parse(saved_json, nullptr, false);
  const auto current = nlohmann::json::parse(current_json, nullptr, false);
  if (saved.is_discarded() || current.is_discarded() || !saved.is_object() || !current.is_object()) return {};
  // What makes the checkpoint's weights, optimizer state and data position mean something else.
  static const std::vector<std::string> fixed = {
      "/export/model_config", "/export/tokenizer_sha256", "/export/index_sha256", "/train/stage",
      "/train/global_batch", "/train/seed", "/train/train_split", "/train/views", "/train/preset",
      "/train/prepared_dir", "/train/loss", "/train/gen_views"};
  std::vector<std::string> errors, changed;
  for (const auto& pointer : fixed) {
    const nlohmann::json::json_pointer p(pointer);
    const bool in_saved = saved.contains(p), in_current = current.contains(p);
    if (!in_saved && !in_current) continue;
    const std::string a = in_saved ? saved.at(p).dump() : "(absent)", b = in_current ? current.at(p).dump() : "(absent)";
    if (a != b) errors.push_back(fmt::format("{}: {} -> {}", pointer.substr(1), a, b));
  }
  // --accept-changes continues anyway, except into another model (its weights would not fit).
  const bool model_changed = std::any_of(errors.begin(), errors.end(), [](const std::string& e) {
    return e.rfind("export/model_config", 0) == 0;
  });
  if (!errors.empty() && (!accept_changes || model_changed)) {
    throw ConfigError(fmt::format("{}: the checkpoint is of another run than this command describes ({}): resume with "
                                  "the run's own settings, start over with --no-resume or another --out{}",
                                  dir, fmt::join(errors, "; "),
                                  model_changed ? "" : ", or pass --accept-changes to continue it with these"));
  }
  for (const auto& e : errors) changed.push_back("(--accept-changes) " + e);
  const auto flat_saved = saved.contains("train") ? saved.at("train").flatten() : nlohmann::json::object();
  const auto flat_current = current.contains("train") ? current.at("train").flatten() : nlohmann::json::object();
  for (const auto& [key, value] : flat_current.items()) {
    const std::string old = flat_saved.contains(key) ? flat_saved.at(key).dump() : "(absent)";
    if (old != value.dump()) changed.push_back(fmt::format("train{}: {} -> {}", key, old, value.dump()));
  }
  return changed;
}

TrainProgress resume_or_start(checkpoints::Store& store, bool resume, uint64_t seed, torch::nn::Module& model,
                              torch::optim::Optimizer& optimizer, sharding::EpochSampler& sampler, int rank,
                              int world_size, const ExtraTensors& extras, const std::string& config_json,
                              const std::string& from_step_dir, bool accept_changes) {
  TrainProgress progress;
  progress.seed = seed;
  if (resume) {
    std::optional<checkpoints::LoadedCheckpoint> loaded;
    if (from_step_dir.empty()) {
      loaded = store.load_latest();
    } else {
      loaded = checkpoints::load_step(from_step_dir, rank, world_size, /*model_only_on_other_world_size=*/true);
    }
    if (loaded) {
      if (!config_json.empty()) {
        const auto changed = check_resume_config(loaded->config_json, config_json, loaded->dir, accept_changes);
        if (rank == 0 && !changed.empty())
          log::get("train")->warn("resuming {} with changed settings: {}", loaded->dir, fmt::join(changed, "; "));
      }
      progress = restore(*loaded, model, optimizer, rank, world_size, extras);
      sampler.set_position(progress.position);
      if (rank == 0)
        log::get("train")->info("resumed from {} (step {}, epoch {}, step {} of the epoch; written by {} ranks)",
                                loaded->dir, progress.step, progress.position.epoch, progress.position.step_in_epoch,
                                loaded->world_size);
    }
  }
  if (progress.step == 0) seed_rank_rng(seed, rank, 0);
  return progress;
}

}  // namespace dgr::trainer
