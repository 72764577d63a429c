#!/usr/bin/env python3
"""Extract the weights of a fairseq BART checkpoint (model.pt, e.g. MINDER's or LTRGR's released ones) for dgr.

fairseq pickles its configuration as Python objects (argparse.Namespace, or omegaconf's DictConfig), which
LibTorch's unpickler cannot read. This step, run once with Debian's python3-torch (no fairseq needed), writes a
file dgr reads: {"model": {fairseq name: float32 tensor}, "args": JSON text of the architecture's settings}.
Classes it cannot import are read as empty stand-ins; the settings are then taken from "cfg"["model"] or "args".
Usage: python3 scripts/fairseq-extract.py model.pt extracted.pt
Then:  dgr's import of fairseq BART (trainer/hf_bart.h import_fairseq_bart) with the tokenizer directory.
"""
import json, pickle, sys

import torch

KEYS = ["encoder_attention_heads", "decoder_attention_heads", "encoder_layers", "decoder_layers", "encoder_embed_dim",
        "encoder_ffn_embed_dim", "decoder_ffn_embed_dim", "max_source_positions", "max_target_positions", "dropout",
        "attention_dropout", "activation_dropout", "activation_fn", "no_scale_embedding", "layernorm_embedding",
        "encoder_normalize_before", "decoder_normalize_before", "share_all_embeddings",
        "share_decoder_input_output_embed", "arch"]


class Stand_in:
    """An object of a class that cannot be imported here: keeps its state as a plain dict."""
    def __init__(self, *args, **kwargs):
        self.state = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {"state": state}


ORIGINAL_UNPICKLER = pickle.Unpickler


class Unpickler(ORIGINAL_UNPICKLER):
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return Stand_in


def settings(checkpoint):
    found = {}
    for source in (checkpoint.get("args"), (checkpoint.get("cfg") or {}).get("model") if isinstance(checkpoint.get("cfg"), dict) else None):
        if source is None:
            continue
        if isinstance(source, Stand_in):
            source = source.state.get("_content", source.state)
        items = vars(source) if hasattr(source, "__dict__") and not isinstance(source, dict) else dict(source)
        for key in KEYS:
            value = items.get(key)
            if isinstance(value, Stand_in):  # omegaconf nodes keep the value in "_val"
                value = value.state.get("_val")
            if key not in found and isinstance(value, (int, float, str, bool)):
                found[key] = value
    return found


def main():
    source, target = sys.argv[1], sys.argv[2]
    # torch.load unpickles with pickle.Unpickler (some builds ignore a pickle_module argument): swap it meanwhile.
    pickle.Unpickler = Unpickler
    try:
        checkpoint = torch.load(source, map_location="cpu")
    finally:
        pickle.Unpickler = ORIGINAL_UNPICKLER
    model = {k: v.float().contiguous() for k, v in checkpoint["model"].items() if torch.is_tensor(v) and v.is_floating_point()}
    args = settings(checkpoint)
    torch.save({"model": model, "args": json.dumps(args)}, target)
    print(f"fairseq-extract: {len(model)} tensors, settings {sorted(args)} -> {target}")


if __name__ == "__main__":
    main()
