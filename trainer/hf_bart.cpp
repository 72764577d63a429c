#include "trainer/hf_bart.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "checkpoints/export.h"
#include "common/error.h"
#include "common/files.h"
#include "data/safetensors.h"
#include "retrieval/bart_bpe.h"
#include "retrieval/views.h"
#include "trainer/exported_model.h"
#include "trainer/model.h"
#include "trainer/train_state.h"

#include <torch/serialize.h>

namespace fs = std::filesystem;

namespace dgr::trainer {
namespace {

// config.json -> ModelConfig (Note [BART exactly]); every key that would change the computation is checked.
ModelConfig bart_config(const nlohmann::json& hf, const std::string& path) {
  auto need = [&](const char* key) -> const nlohmann::json& {
    DGR_CHECK_AS(ConfigError, hf.contains(key), "{}: no '{}' (not a BART config.json)", path, key);
    return hf.at(key);
  };
  DGR_CHECK_AS(ConfigError, need("model_type") == "bart", "{}: model_type {} (dgr imports BART: model_type \"bart\")",
               path, hf.at("model_type").dump());
  DGR_CHECK_AS(ConfigError, hf.value("activation_function", "gelu") == "gelu",
               "{}: activation_function {} (dgr's FFN is GELU, as BART's)", path, hf.at("activation_function").dump());
  for (const char* key : {"normalize_before", "add_final_layer_norm", "normalize_embedding"}) {
    const bool expected = std::string(key) == "normalize_embedding";  // BART: layernorm_embedding, post-norm
    DGR_CHECK_AS(ConfigError, !hf.contains(key) || hf.at(key).get<bool>() == expected,
                 "{}: {} {} (dgr imports BART's post-norm layers: mBART-style configs are not supported)", path, key,
                 hf.contains(key) ? hf.at(key).dump() : "");
  }
  for (const auto& [a, b] : {std::pair{"encoder_attention_heads", "decoder_attention_heads"},
                             std::pair{"encoder_ffn_dim", "decoder_ffn_dim"}})
    DGR_CHECK_AS(ConfigError, need(a) == need(b), "{}: {} {} differs from {} {} (dgr's encoder and decoder share "
                 "these)", path, a, hf.at(a).dump(), b, hf.at(b).dump());
  ModelConfig c;
  c.vocab_size = need("vocab_size").get<int>();
  c.d_model = need("d_model").get<int>();
  c.heads = need("encoder_attention_heads").get<int>();
  c.encoder_layers = need("encoder_layers").get<int>();
  c.decoder_layers = need("decoder_layers").get<int>();
  c.ffn = need("encoder_ffn_dim").get<int>();
  c.max_positions = need("max_position_embeddings").get<int>();
  c.dropout = hf.value("dropout", 0.1);
  c.attention_dropout = hf.value("attention_dropout", 0.0);
  c.activation_dropout = hf.value("activation_dropout", 0.0);
  c.pre_norm = false;
  c.scale_embedding = hf.value("scale_embedding", false);
  c.pad_id = hf.value("pad_token_id", 1);
  c.decoder_start_id = hf.value("decoder_start_token_id", 2);
  c.position_offset = 2;
  c.final_logits_bias = true;
  try {
    c.validate();
  } catch (const ConfigError& e) {
    throw ConfigError(fmt::format("{}: {}", path, e.what()));
  }
  return c;
}

// "model.encoder.layers.3.self_attn.k_proj.weight" -> where its rows go in dgr's arrays: the dgr name and,
// for fused projections, the part (0, 1, 2 of q/k/v, or 0, 1 of k/v) and the number of parts.
struct Target {
  std::string name;
  int part = 0, parts = 1;
};

bool map_name(const std::string& hf, Target& t) {
  std::string n = hf;
  if (n.rfind("model.", 0) == 0) n = n.substr(6);
  if (n == "shared.weight") return t = {"embed_tokens.weight"}, true;
  if (n == "final_logits_bias") return t = {"final_logits_bias"}, true;
  for (const char* stack : {"encoder.", "decoder."}) {
    if (n.rfind(stack, 0) != 0) continue;
    const std::string rest = n.substr(std::string(stack).size());
    if (rest == "embed_positions.weight" || rest.rfind("layernorm_embedding.", 0) == 0) return t = {n}, true;
    if (rest.rfind("layers.", 0) != 0) return false;
    const size_t dot = rest.find('.', 7);
    if (dot == std::string::npos) return false;
    const std::string layer = std::string(stack) + rest.substr(0, dot + 1), sub = rest.substr(dot + 1);
    for (const char* attn : {"self_attn.", "encoder_attn."}) {
      if (sub.rfind(attn, 0) != 0) continue;
      const std::string proj = sub.substr(std::string(attn).size());  // q_proj.weight, out_proj.bias, ...
      const std::string suffix = proj.substr(proj.find('.'));
      const std::string kind = proj.substr(0, proj.find('.'));
      const bool self = std::string(attn) == "self_attn.";
      if (kind == "out_proj") return t = {layer + attn + proj}, true;
      if (self && (kind == "q_proj" || kind == "k_proj" || kind == "v_proj"))
        return t = {layer + attn + "qkv_proj" + suffix, kind == "q_proj" ? 0 : kind == "k_proj" ? 1 : 2, 3}, true;
      if (!self && kind == "q_proj") return t = {layer + attn + proj}, true;
      if (!self && (kind == "k_proj" || kind == "v_proj"))
        return t = {layer + attn + "kv_proj" + suffix, kind == "k_proj" ? 0 : 1, 2}, true;
      return false;
    }
    if (sub.rfind("fc1.", 0) == 0 || sub.rfind("fc2.", 0) == 0) return t = {layer + "ffn." + sub}, true;
    if (sub.rfind("self_attn_layer_norm.", 0) == 0 || sub.rfind("encoder_attn_layer_norm.", 0) == 0 ||
        sub.rfind("final_layer_norm.", 0) == 0)
      return t = {n}, true;
    return false;
  }
  return false;
}

// A file of torch.save (zip or legacy format) through LibTorch's own unpickler; `what_to_do` ends the message
// when LibTorch cannot read it.
c10::IValue read_pickle(const std::string& path, const char* what_to_do) {
  std::ifstream in(path, std::ios::binary);
  DGR_CHECK_AS(CheckpointError, in.good(), "{}: cannot be opened", path);
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  try {
    return torch::pickle_load(bytes);
  } catch (const c10::Error& e) {
    throw CheckpointError(fmt::format("{}: LibTorch cannot read it ({}): {}", path, e.what_without_backtrace(),
                                      what_to_do));
  }
}

// pytorch_model.bin (torch.save of a state dict); every tensor becomes a contiguous CPU float32 array (other
// dtypes: a CheckpointError naming it).
data::SafetensorsContents read_pickled_state_dict(const std::string& path) {
  const c10::IValue value = read_pickle(path, "re-save the model with save_pretrained (safetensors)");
  DGR_CHECK_AS(CheckpointError, value.isGenericDict(), "{}: holds a {}, not a state dict (name -> tensor)", path,
               value.tagKind());
  data::SafetensorsContents out;
  for (const auto& item : value.toGenericDict()) {
    DGR_CHECK_AS(CheckpointError, item.key().isString() && item.value().isTensor(), "{}: an entry that is not "
                 "name -> tensor", path);
    const std::string name = item.key().toStringRef();
    const torch::Tensor t = item.value().toTensor().contiguous().cpu();
    DGR_CHECK_AS(CheckpointError, t.scalar_type() == torch::kFloat, "{}: tensor '{}' is {}; dgr imports float32 weights",
                 path, name, c10::toString(t.scalar_type()));
    out.arrays.push_back(data::NamedArray::copy_of(name, std::vector<int64_t>(t.sizes().begin(), t.sizes().end()),
                                                   data::DType::kFloat32, t.data_ptr()));
  }
  return out;
}

// The inverse of map_name: the Hugging Face tensor(s) a dgr array comes from (q, k, v of a fused one, in order).
std::vector<std::string> hf_names(const std::string& dgr) {
  if (dgr == "embed_tokens.weight") return {"model.shared.weight"};
  if (dgr == "final_logits_bias") return {dgr};
  std::string n = "model." + dgr;
  if (const size_t at = n.find(".ffn."); at != std::string::npos) n.erase(at, 4);
  for (const auto& [fused, parts] : {std::pair{std::string("qkv_proj"), std::vector<std::string>{"q_proj", "k_proj", "v_proj"}},
                                     std::pair{std::string("kv_proj"), std::vector<std::string>{"k_proj", "v_proj"}}}) {
    const size_t at = n.find("." + fused + ".");
    if (at == std::string::npos) continue;
    std::vector<std::string> out;
    for (const auto& part : parts) out.push_back(n.substr(0, at + 1) + part + n.substr(at + 1 + fused.size()));
    return out;
  }
  return {n};
}

// The same for messages: "a, b, c".
std::string hf_name(const std::string& dgr) { return fmt::format("{}", fmt::join(hf_names(dgr), ", ")); }

HfImportReport convert_and_write(const ModelConfig& config, const data::SafetensorsContents& contents,
                                 const std::string& weights_path, const std::string& source,
                                 const std::string& tokenizer_dir, const std::string& out);

}  // namespace

HfImportReport import_hf_bart(const std::string& dir, const std::string& out) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  const std::string safetensors_path = (fs::path(dir) / "model.safetensors").string();
  const std::string pickle_path = (fs::path(dir) / "pytorch_model.bin").string();
  DGR_CHECK_AS(ConfigError, fs::exists(config_path), "{}: missing (a Hugging Face model directory has config.json)",
               config_path);
  DGR_CHECK_AS(CheckpointError, fs::exists(safetensors_path) || fs::exists(pickle_path), "{}: neither "
               "model.safetensors nor pytorch_model.bin (save the model with save_pretrained; sharded checkpoints, "
               "*.index.json, are not read)", dir);
  const std::string weights_path = fs::exists(safetensors_path) ? safetensors_path : pickle_path;
  const auto hf = nlohmann::json::parse(files::read_all(config_path), nullptr, false);
  DGR_CHECK_AS(ConfigError, !hf.is_discarded() && hf.is_object(), "{}: not a JSON object", config_path);
  const ModelConfig config = bart_config(hf, config_path);
  const data::SafetensorsContents contents =
      weights_path == safetensors_path ? data::read_safetensors(weights_path) : read_pickled_state_dict(weights_path);
  return convert_and_write(config, contents, weights_path, dir, dir, out);
}

namespace {

// Hugging Face-named weights (`contents`) -> dgr's arrays, checked against `config`, written to `out` with the
// tokenizer of `tokenizer_dir` (when it holds vocab.json / merges.txt) recorded.
HfImportReport convert_and_write(const ModelConfig& config, const data::SafetensorsContents& contents,
                                 const std::string& weights_path, const std::string& source,
                                 const std::string& tokenizer_dir, const std::string& out) {
  // Rows of every fused array, part by part; other arrays once. Tied copies of the embedding are compared.
  std::map<std::string, std::vector<const data::NamedArray*>> parts;
  std::map<std::string, const data::NamedArray*> whole;
  std::vector<const data::NamedArray*> tied;
  for (const auto& a : contents.arrays) {
    if (a.name == "model.encoder.embed_tokens.weight" || a.name == "model.decoder.embed_tokens.weight" ||
        a.name == "lm_head.weight") {
      tied.push_back(&a);
      continue;
    }
    Target t;
    DGR_CHECK_AS(CheckpointError, map_name(a.name, t), "{}: unexpected tensor '{}' (not part of BART's "
                 "BartForConditionalGeneration)", weights_path, a.name);
    DGR_CHECK_AS(CheckpointError, a.dtype == data::DType::kFloat32, "{}: tensor '{}' is {}; dgr imports float32 "
                 "weights (F16 is widened on read; convert BF16 with save_pretrained after .float())", weights_path,
                 a.name, data::dtype_name(a.dtype));
    if (t.parts == 1) {
      DGR_CHECK_AS(CheckpointError, whole.emplace(t.name, &a).second, "{}: tensor '{}' given twice", weights_path, a.name);
    } else {
      auto& slot = parts[t.name];
      slot.resize(static_cast<size_t>(t.parts), nullptr);
      slot[static_cast<size_t>(t.part)] = &a;
    }
  }
  std::vector<data::NamedArray> weights;
  for (const auto& [name, a] : whole) {
    data::NamedArray w = *a;
    w.name = name;
    weights.push_back(std::move(w));
  }
  for (const auto& [name, slots] : parts) {
    std::vector<int64_t> shape;
    size_t bytes = 0;
    for (size_t i = 0; i < slots.size(); ++i) {
      DGR_CHECK_AS(CheckpointError, slots[i] != nullptr, "{}: '{}' lacks its {} projection", weights_path, name,
                   slots.size() == 3 ? std::vector<const char*>{"q", "k", "v"}[i] : std::vector<const char*>{"k", "v"}[i]);
      if (i == 0) shape = slots[0]->shape;
      DGR_CHECK_AS(CheckpointError, slots[i]->shape == slots[0]->shape, "{}: '{}' has shape {} but '{}' {}",
                   weights_path, slots[i]->name, data::shape_string(slots[i]->shape), slots[0]->name,
                   data::shape_string(slots[0]->shape));
      bytes += slots[i]->bytes.size();
    }
    shape[0] *= static_cast<int64_t>(slots.size());
    data::NamedArray fused = data::NamedArray::allocate(name, shape, data::DType::kFloat32);
    size_t at = 0;
    for (const auto* s : slots) {
      std::memcpy(fused.bytes.data() + at, s->bytes.data(), s->bytes.size());
      at += s->bytes.size();
    }
    DGR_CHECK(at == bytes, "fused {} bytes of {}", at, name);
    weights.push_back(std::move(fused));
  }
  const auto embedding = whole.find("embed_tokens.weight");
  DGR_CHECK_AS(CheckpointError, embedding != whole.end(), "{}: no 'model.shared.weight' (the token embedding)",
               weights_path);
  for (const auto* t : tied)
    DGR_CHECK_AS(CheckpointError, t->shape == embedding->second->shape && t->bytes == embedding->second->bytes,
                 "{}: '{}' differs from model.shared.weight, but BART ties them (dgr has one embedding)", weights_path,
                 t->name);
  std::sort(weights.begin(), weights.end(), [](const auto& a, const auto& b) { return a.name < b.name; });

  checkpoints::ExportInfo info;
  const nlohmann::json view_limits = nlohmann::json::parse(view_limits_json(retrieval::ViewLimits{}));
  info.model_config_json = nlohmann::json{{"model", nlohmann::json::parse(config.to_json_string())},
                                          {"view_limits", view_limits},
                                          {"trained_views", nlohmann::json::array()},
                                          {"imported_from", source}}.dump();
  const std::string vocab = (fs::path(tokenizer_dir) / "vocab.json").string();
  const std::string merges = (fs::path(tokenizer_dir) / "merges.txt").string();
  if (fs::exists(vocab) || fs::exists(merges)) {
    const auto bpe = retrieval::BartBpe::load(tokenizer_dir);
    DGR_CHECK_AS(CheckpointError, bpe.vocab_size() == config.vocab_size, "{}: the tokenizer has {} tokens but the "
                 "embedding {} rows (tokenizer files from another model?)", vocab, bpe.vocab_size(), config.vocab_size);
    info.tokenizer_id = tokenizer_dir;
    info.tokenizer_sha256 = files::sha256_file(vocab) + "+" + files::sha256_file(merges);
    info.tokenizer_files = checkpoints::tokenizer_file_arrays(tokenizer_dir);
  }
  // Prove the weights fit the config (every name and shape, nothing missing or extra) before writing; a
  // missing or mis-shaped tensor is named as the Hugging Face file names it.
  auto model = std::make_shared<Seq2Seq>(config);
  std::map<std::string, const data::NamedArray*> have;
  for (const auto& w : weights) have[w.name] = &w;
  auto check = [&](const std::string& name, const torch::Tensor& t) {
    const auto it = have.find(name);
    DGR_CHECK_AS(CheckpointError, it != have.end(), "{}: no tensor '{}' (BART's weights for the model's shape "
                 "include it)", weights_path, hf_name(name));
    const std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
    DGR_CHECK_AS(CheckpointError, it->second->shape == shape, "{}: '{}' has shape {} where the model's config needs {}",
                 weights_path, hf_name(name), data::shape_string(it->second->shape), data::shape_string(shape));
  };
  for (const auto& p : model->named_parameters()) check(p.key(), p.value());
  for (const auto& b : model->named_buffers()) check(b.key(), b.value());
  load_model_arrays(weights, *model, weights_path);
  checkpoints::write_export(out, weights, info);
  return {info.model_config_json, contents.arrays.size(), weights.size()};
}

// fairseq's BART names -> Hugging Face's ("encoder.embed_tokens.weight" is the shared embedding; the decoder's
// copy and output_projection are tied copies; version counters and sinusoidal scratch tensors are dropped).
std::string hf_name_of_fairseq(const std::string& name) {
  if (name == "encoder.embed_tokens.weight") return "model.shared.weight";
  if (name == "decoder.output_projection.weight") return "lm_head.weight";
  return "model." + name;
}

}  // namespace

HfImportReport import_fairseq_bart(const std::string& extracted, const std::string& tokenizer_dir,
                                   const std::string& out) {
  const c10::IValue value =
      read_pickle(extracted, "a fairseq model.pt must first go through scripts/fairseq-extract.py");
  DGR_CHECK_AS(CheckpointError, value.isGenericDict(), "{}: not the output of scripts/fairseq-extract.py", extracted);
  const auto top = value.toGenericDict();
  DGR_CHECK_AS(CheckpointError, top.contains("model") && top.contains("args") && top.at("args").isString() &&
               top.at("model").isGenericDict(), "{}: lacks 'model' (name -> tensor) or 'args' (JSON): not the output "
               "of scripts/fairseq-extract.py", extracted);
  const auto args = nlohmann::json::parse(top.at("args").toStringRef(), nullptr, false);
  DGR_CHECK_AS(CheckpointError, args.is_object(), "{}: 'args' is not a JSON object", extracted);

  data::SafetensorsContents contents;
  int encoder_layers = 0, decoder_layers = 0;
  for (const auto& item : top.at("model").toGenericDict()) {
    const std::string name = item.key().toStringRef();
    if (name == "encoder.version" || name == "decoder.version" || name.ends_with("._float_tensor")) continue;
    const torch::Tensor t = item.value().toTensor().contiguous().to(torch::kFloat);
    contents.arrays.push_back(data::NamedArray::copy_of(hf_name_of_fairseq(name),
                                                        std::vector<int64_t>(t.sizes().begin(), t.sizes().end()),
                                                        data::DType::kFloat32, t.data_ptr()));
    for (auto [prefix, count] : {std::pair{"encoder.layers.", &encoder_layers}, std::pair{"decoder.layers.", &decoder_layers}})
      if (name.rfind(prefix, 0) == 0) *count = std::max(*count, std::stoi(name.substr(std::strlen(prefix))) + 1);
  }
  auto shape_of = [&](const std::string& hf) -> std::vector<int64_t> {
    for (const auto& a : contents.arrays)
      if (a.name == hf) return a.shape;
    DGR_CHECK_AS(CheckpointError, false, "{}: no tensor '{}'", extracted, hf);
    return {};
  };
  // The Hugging Face config.json the same model would have (BART's fairseq architectures: post-norm with
  // layernorm_embedding, GELU, learned positions with offset 2, embeddings unscaled unless the args say so).
  auto setting = [&](const char* key, const nlohmann::json& fallback) { return args.contains(key) ? args.at(key) : fallback; };
  const std::string arch = setting("arch", "").get<std::string>();
  const int preset_heads = arch == "bart_large" ? 16 : arch == "bart_base" ? 12 : 0;
  DGR_CHECK_AS(ConfigError, args.contains("encoder_attention_heads") || preset_heads > 0, "{}: the number of attention "
               "heads is not in its settings (no encoder_attention_heads, arch '{}'): extract it from a model.pt whose "
               "args/cfg name them", extracted, arch);
  DGR_CHECK_AS(ConfigError, !setting("encoder_normalize_before", false).get<bool>() &&
               !setting("decoder_normalize_before", false).get<bool>() && setting("layernorm_embedding", true).get<bool>(),
               "{}: a pre-norm or embedding-norm-free fairseq transformer: dgr imports BART's post-norm layout", extracted);
  const auto embedding = shape_of("model.shared.weight");
  const int heads = setting("encoder_attention_heads", preset_heads).get<int>();
  nlohmann::json hf = {
      {"model_type", "bart"}, {"vocab_size", embedding[0]}, {"d_model", embedding[1]},
      {"encoder_attention_heads", heads}, {"decoder_attention_heads", setting("decoder_attention_heads", heads)},
      {"encoder_layers", encoder_layers}, {"decoder_layers", decoder_layers},
      {"encoder_ffn_dim", shape_of("model.encoder.layers.0.fc1.weight")[0]},
      {"decoder_ffn_dim", shape_of("model.decoder.layers.0.fc1.weight")[0]},
      {"max_position_embeddings", shape_of("model.encoder.embed_positions.weight")[0] - 2},
      {"dropout", setting("dropout", 0.1)}, {"attention_dropout", setting("attention_dropout", 0.0)},
      {"activation_dropout", setting("activation_dropout", 0.0)},
      {"activation_function", setting("activation_fn", "gelu")},
      {"scale_embedding", !setting("no_scale_embedding", true).get<bool>()},
      {"pad_token_id", 1}, {"decoder_start_token_id", 2}};
  const ModelConfig config = bart_config(hf, extracted);
  contents.arrays.push_back(data::NamedArray::allocate("final_logits_bias", {1, config.vocab_size}, data::DType::kFloat32));
  DGR_CHECK_AS(ConfigError, fs::exists(fs::path(tokenizer_dir) / "vocab.json"), "{}: no vocab.json: give the BART "
               "tokenizer directory the model was trained with (its vocab.json ids are the model's ids)", tokenizer_dir);
  return convert_and_write(config, contents, extracted, extracted, tokenizer_dir, out);
}

size_t export_hf_bart(const std::string& model_h5, const std::string& out_dir, bool replace) {
  const checkpoints::ExportedModel exported = checkpoints::read_export(model_h5);
  const auto meta = nlohmann::json::parse(exported.info.model_config_json, nullptr, false);
  DGR_CHECK_AS(CheckpointError, !meta.is_discarded() && meta.contains("model"), "{}: model_config lacks 'model': "
               "not an export of this dgr", model_h5);
  const ModelConfig c = ModelConfig::from_json_string(meta.at("model").dump());
  DGR_CHECK_AS(ConfigError, !c.pre_norm && c.position_offset == 2 && c.final_logits_bias,
               "{}: a {} model with position offset {}{} has no Hugging Face BART equivalent; only models in BART's "
               "form (imported from Hugging Face, or trained from one) export to it", model_h5,
               c.pre_norm ? "pre-norm" : "post-norm", c.position_offset,
               c.final_logits_bias ? "" : " and no final_logits_bias");
  nlohmann::ordered_json config = {
      {"model_type", "bart"}, {"architectures", {"BartForConditionalGeneration"}}, {"vocab_size", c.vocab_size},
      {"d_model", c.d_model}, {"encoder_layers", c.encoder_layers}, {"decoder_layers", c.decoder_layers},
      {"encoder_attention_heads", c.heads}, {"decoder_attention_heads", c.heads}, {"encoder_ffn_dim", c.ffn},
      {"decoder_ffn_dim", c.ffn}, {"max_position_embeddings", c.max_positions}, {"dropout", c.dropout},
      {"attention_dropout", c.attention_dropout}, {"activation_dropout", c.activation_dropout},
      {"activation_function", "gelu"}, {"scale_embedding", c.scale_embedding}, {"pad_token_id", c.pad_id},
      {"bos_token_id", 0}, {"eos_token_id", 2}, {"forced_eos_token_id", 2},
      {"decoder_start_token_id", c.decoder_start_id}, {"is_encoder_decoder", true}, {"tie_word_embeddings", true},
      {"init_std", 0.02}, {"torch_dtype", "float32"}, {"exported_by", "dgr"}};

  // dgr name -> Hugging Face name(s); fused arrays are cut into their parts by rows.
  std::vector<data::NamedArray> tensors;
  for (const auto& w : exported.weights) {
    DGR_CHECK_AS(CheckpointError, w.dtype == data::DType::kFloat32, "{}: weight '{}' is {}; export float32 weights",
                 model_h5, w.name, data::dtype_name(w.dtype));
    const std::vector<std::string> parts = hf_names(w.name);
    std::vector<int64_t> shape = w.shape;
    DGR_CHECK_AS(CheckpointError, !shape.empty() && shape[0] % static_cast<int64_t>(parts.size()) == 0,
                 "{}: weight '{}' of shape {} cannot be cut into {} projections", model_h5, w.name,
                 data::shape_string(shape), parts.size());
    shape[0] /= static_cast<int64_t>(parts.size());
    const size_t part_bytes = w.bytes.size() / parts.size();
    for (size_t i = 0; i < parts.size(); ++i)
      tensors.push_back(data::NamedArray::copy_of(parts[i], shape, data::DType::kFloat32, w.bytes.data() + i * part_bytes));
  }

  files::AtomicDir out(out_dir, replace);
  const fs::path tmp(out.tmp_dir());
  files::AtomicFile config_file((tmp / "config.json").string());
  config_file.write(config.dump(2) + "\n");
  config_file.commit();
  data::write_safetensors((tmp / "model.safetensors").string(), tensors, {{"format", "pt"}});
  const std::string& tok = exported.info.tokenizer_id;
  bool carried = false;  // the export's own copy of BART's tokenizer files
  for (const auto& f : exported.info.tokenizer_files) {
    if (f.name != "vocab.json" && f.name != "merges.txt") continue;
    files::AtomicFile file((tmp / f.name).string());
    file.write(std::string(f.bytes.begin(), f.bytes.end()));
    file.commit();
    carried = true;
  }
  if (!carried && !tok.empty() && fs::exists(fs::path(tok) / "vocab.json") && fs::exists(fs::path(tok) / "merges.txt")) {
    const std::string vocab = (fs::path(tok) / "vocab.json").string(), merges = (fs::path(tok) / "merges.txt").string();
    DGR_CHECK_AS(CheckpointError, files::sha256_file(vocab) + "+" + files::sha256_file(merges) ==
                 exported.info.tokenizer_sha256, "{}: the tokenizer files in {} changed since the model was imported "
                 "(restore them)", model_h5, tok);
    fs::copy_file(vocab, tmp / "vocab.json");
    fs::copy_file(merges, tmp / "merges.txt");
  }
  out.commit();
  return tensors.size();
}

}  // namespace dgr::trainer
