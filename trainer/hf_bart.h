// Hugging Face BART checkpoints <-> dgr export files (issue 20, Builds 2 and 4; no LibTorch in this header). A BART
// directory as save_pretrained writes it: config.json (model_type "bart") and model.safetensors (or
// pytorch_model.bin, read with LibTorch's unpickler); the export
// file it becomes is the one `dgr export` writes, with the model config of Note [BART exactly] (model.cpp)
// and the weights under dgr's names (q/k/v projections fused). `dgr import` / `dgr export --format hf` run them;
// docs/bart.md says how an imported model is indexed and trained.
#pragma once

#include <string>

namespace dgr::trainer {

struct HfImportReport {
  std::string model_config_json;  // the export's {"model": ..., "view_limits": ...}
  size_t hf_tensors = 0;          // tensors read (tied copies included)
  size_t weights = 0;             // arrays written
};

// Reads DIR/config.json and DIR/model.safetensors (else DIR/pytorch_model.bin), checks every name and shape (a missing, unexpected or
// mis-shaped tensor, or a tied copy that differs from model.shared.weight, is a CheckpointError naming it;
// a config that is not BART's post-norm GELU transformer is a ConfigError naming the key), rebuilds the model
// once to prove the weights fit, and writes `out` atomically. DIR/vocab.json and DIR/merges.txt, when
// present, must be a BART tokenizer whose vocabulary size equals the embedding's; the export records
// their SHA-256 as its tokenizer.
HfImportReport import_hf_bart(const std::string& dir, const std::string& out);

// A fairseq BART checkpoint (the authors' MINDER/LTRGR model.pt), after scripts/fairseq-extract.py has turned its
// pickle into {"model": {fairseq name: tensor}, "args": JSON settings}: fairseq's names are mapped to Hugging
// Face's (encoder.embed_tokens = the shared embedding, decoder.embed_tokens and output_projection tied copies),
// the config is the one BART's fairseq architecture implies (heads from the settings, or from arch bart_large /
// bart_base; sizes from the shapes), final_logits_bias is zero (fairseq has none), and TOKENIZER_DIR's
// vocab.json / merges.txt (whose ids must be the model's: its size is checked) become the export's tokenizer.
HfImportReport import_fairseq_bart(const std::string& extracted, const std::string& tokenizer_dir,
                                   const std::string& out);

// The way back: writes OUT_DIR/config.json (BartConfig) and OUT_DIR/model.safetensors (Hugging Face's names,
// q/k/v unfused, tied copies left out as save_pretrained leaves them out), and copies vocab.json and merges.txt
// when the export's tokenizer is a BART tokenizer directory whose files still have the recorded SHA-256.
// Only a model in BART's form exports (post-norm, position offset 2, final_logits_bias: an imported one or
// one trained from it); any other is a ConfigError saying so. OUT_DIR is made atomically (replaced only when
// `replace`). Returns the number of tensors written.
size_t export_hf_bart(const std::string& model_h5, const std::string& out_dir, bool replace = false);

}  // namespace dgr::trainer
