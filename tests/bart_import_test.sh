#!/usr/bin/env bash
# BART imported from Hugging Face (trainer/hf_bart.h) against transformers' BartForConditionalGeneration:
# a randomly initialised model of a tiny shape and of the bart-base shape, written with save_pretrained
# (bart_reference.py), imported into a dgr export file; the encoder output, the teacher-forced logits and
# three steps of cached decoding must equal transformers' within 1e-5 (of max(1, |reference|)). Malformed
# directories (a missing tensor, a wrong shape, a truncated safetensors header, a tokenizer whose vocabulary
# size disagrees with the embedding) must fail naming the problem, leaving no export file.
# The tiny model is imported from pytorch_model.bin and from a fairseq-layout model.pt as well, and makes the round trip back to Hugging Face's
# layout (trainer/hf_bart.h export_hf_bart), where from_pretrained must give dgr's logits. Usage: bart_import_test.sh BART_IMPORT_DRIVER [DGR] (with DGR, also through dgr import / export). Exit 77 (skipped) without Debian's python3-torch or without
# transformers and safetensors in scripts/install-deps.sh's venv.
set -euo pipefail
driver=$1
dgr=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
venv=${DGR_VENV:-/opt/dgr-venv}
if ! DGR_VENV=$venv /usr/bin/python3 -c "import glob, sys; sys.path += glob.glob('$venv/lib/python3*/site-packages'); import torch, transformers, safetensors" 2>/dev/null; then
  echo "SKIP: /usr/bin/python3 cannot import torch (python3-torch) and transformers/safetensors (venv $venv): run scripts/install-deps.sh"
  exit 77
fi
work=$(mktemp -d /tmp/dgr_bart_import.XXXXXX)
trap 'rm -rf "$work"' EXIT
for shape in tiny base; do
  mkdir "$work/$shape"
  DGR_VENV=$venv /usr/bin/python3 "$here/bart_reference.py" "$work/$shape" "$shape"
  "$driver" "$work/$shape" "$work/$shape.h5"
done
# The same tiny weights as pytorch_model.bin (torch.save of the state dict, tied copies included).
cp -r "$work/tiny" "$work/tiny-bin"
/usr/bin/python3 - "$work/tiny-bin" <<'PY'
import glob, os, sys
sys.path += glob.glob(os.environ.get("DGR_VENV", "/opt/dgr-venv") + "/lib/python3*/site-packages")
from transformers import BartForConditionalGeneration
d = sys.argv[1]
BartForConditionalGeneration.from_pretrained(d).save_pretrained(d, safe_serialization=False)
os.remove(d + "/model.safetensors")
PY
DGR_VENV=$venv "$driver" "$work/tiny-bin" "$work/tiny-bin.h5"
rm -rf "$work/base" "$work/base.h5"

# The same tiny weights as a fairseq checkpoint: fairseq's key names (encoder.embed_tokens, the decoder's tied copy
# and output_projection, version counters), no final_logits_bias (so the reference is recomputed without it), the
# settings as an argparse.Namespace and an object of a class the reader cannot import (as omegaconf's are);
# scripts/fairseq-extract.py, then dgr's import with the tiny directory as tokenizer.
/usr/bin/python3 - "$work" <<'PY'
import argparse, glob, os, sys
sys.path += glob.glob(os.environ.get("DGR_VENV", "/opt/dgr-venv") + "/lib/python3*/site-packages")
import torch
from safetensors.torch import load_file, save_file
from transformers import BartForConditionalGeneration
work = sys.argv[1]
model = BartForConditionalGeneration.from_pretrained(work + "/tiny").eval()
with torch.no_grad():
    model.final_logits_bias.zero_()
state = {}
for k, v in model.state_dict().items():
    if k == "final_logits_bias":
        continue
    k = k[len("model."):] if k.startswith("model.") else k
    if k == "shared.weight":
        state["encoder.embed_tokens.weight"] = v.clone()
        state["decoder.embed_tokens.weight"] = v.clone()
        state["decoder.output_projection.weight"] = v.clone()
    elif k not in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"):
        state[k] = v.clone()
state["encoder.version"] = torch.Tensor([3])
state["decoder.version"] = torch.Tensor([3])
class NotImportable:  # pickled as __main__.NotImportable: the extraction step cannot import it
    pass
args = argparse.Namespace(arch="bart_base", encoder_attention_heads=4, decoder_attention_heads=4, dropout=0.1,
                          attention_dropout=0.1, activation_dropout=0.1, activation_fn="gelu", no_scale_embedding=True,
                          layernorm_embedding=True, encoder_normalize_before=False, decoder_normalize_before=False)
torch.save({"model": state, "args": args, "extra_state": NotImportable()}, work + "/fairseq-model.pt")
ref = load_file(work + "/tiny/reference.safetensors")
src, tgt = ref["src"], ref["tgt"]
dec_in = torch.cat([torch.full((2, 1), 2), tgt[:, :-1]], 1)
with torch.no_grad():
    mask = (src != 1).long()
    ref["encoder_out"] = model.model.encoder(input_ids=src, attention_mask=mask).last_hidden_state.contiguous()
    ref["logits"] = model(input_ids=src, attention_mask=mask, decoder_input_ids=dec_in).logits.contiguous()
    steps, past = [], None
    for token in [2, int(tgt[0, 0]), int(tgt[0, 1])]:
        r = model(input_ids=src[:1], attention_mask=mask[:1], decoder_input_ids=torch.tensor([[token]]),
                  past_key_values=past, use_cache=True)
        past = r.past_key_values
        steps.append(torch.log_softmax(r.logits[0, -1].double(), -1).float())
    ref["step_log_probs"] = torch.stack(steps)
os.makedirs(work + "/tiny-fairseq")
for f in ("vocab.json", "merges.txt"):
    open(work + "/tiny-fairseq/" + f, "wb").write(open(work + "/tiny/" + f, "rb").read())
save_file(ref, work + "/tiny-fairseq/reference.safetensors")
PY
/usr/bin/python3 "$here/../scripts/fairseq-extract.py" "$work/fairseq-model.pt" "$work/fairseq-extracted.pt"
"$driver" "$work/tiny-fairseq" "$work/tiny-fairseq.h5" --fairseq "$work/fairseq-extracted.pt"
if "$driver" "$work/tiny-fairseq" "$work/raw.h5" --fairseq "$work/fairseq-model.pt" > "$work/raw.out" 2>&1; then
  echo "FAIL: a fairseq model.pt was read without the extraction step"; exit 1
fi
grep -q "fairseq-extract.py" "$work/raw.out" || { echo "FAIL: no hint at the extraction step: $(cat "$work/raw.out")"; exit 1; }

# Round trip: import -> (weights changed as by training) -> export to Hugging Face's layout -> import gives the
# same arrays; transformers' from_pretrained of the exported directory gives dgr's logits; the tokenizer files
# come along unchanged.
mkdir "$work/rt"
"$driver" --roundtrip "$work/tiny" "$work/rt"
cmp "$work/tiny/vocab.json" "$work/rt/hf/vocab.json"
cmp "$work/tiny/merges.txt" "$work/rt/hf/merges.txt"
/usr/bin/python3 - "$work" <<'PY'
import glob, os, sys
sys.path += glob.glob(os.environ.get("DGR_VENV", "/opt/dgr-venv") + "/lib/python3*/site-packages")
import torch
from safetensors.torch import load_file
from transformers import BartForConditionalGeneration, BartTokenizer
work = sys.argv[1]
model = BartForConditionalGeneration.from_pretrained(work + "/rt/hf").eval()
BartTokenizer.from_pretrained(work + "/rt/hf")  # the copied tokenizer loads
ref = load_file(work + "/tiny/reference.safetensors")
src, tgt = ref["src"], ref["tgt"]
dec_in = torch.cat([torch.full((2, 1), 2), tgt[:, :-1]], 1)
with torch.no_grad():
    logits = model(input_ids=src, attention_mask=(src != 1).long(), decoder_input_ids=dec_in).logits
theirs = logits[tgt != 1]
ours = load_file(work + "/rt/dgr_logits.safetensors")["logits"]
diff = (theirs - ours).abs().max().item() / max(1.0, theirs.abs().max().item())
print(f"from_pretrained(exported) logits vs dgr's: max scaled difference {diff:.3g} over {tuple(ours.shape)}")
sys.exit(0 if diff <= 1e-5 else 1)
PY

# The same through the command line: dgr import, dgr export --format hf, dgr import again: identical weights.
if [[ -n $dgr ]]; then
  "$dgr" import --format hf --from "$work/tiny" --out "$work/cli.h5"
  "$dgr" export --model "$work/cli.h5" --format hf --out "$work/cli-hf"
  if "$dgr" export --model "$work/cli.h5" --format hf --out "$work/cli-hf" 2> "$work/exists.err"; then
    echo "FAIL: dgr export --format hf replaced a directory without --force"; exit 1
  fi
  "$dgr" import --format hf --from "$work/cli-hf" --out "$work/cli2.h5"
  h5diff "$work/cli.h5" "$work/cli2.h5" /weights /weights
  "$dgr" import --format fairseq --from "$work/fairseq-extracted.pt" --tokenizer-dir "$work/tiny" --out "$work/cli3.h5"
  echo "command line: import, export --format hf, import: identical weights"
fi

# Malformed copies of the tiny directory: each must fail with its message and leave no export.
refuse() {  # refuse NAME NEEDLE PYTHON-EDIT
  local name=$1 needle=$2 edit=$3
  cp -r "$work/tiny" "$work/$name"
  DGR_VENV=$venv /usr/bin/python3 - "$work/$name" <<PY
import glob, json, os, struct, sys
sys.path += glob.glob(os.environ["DGR_VENV"] + "/lib/python3*/site-packages")
from safetensors.numpy import load_file, save_file
d = sys.argv[1]
t = load_file(d + "/model.safetensors")
$edit
PY
  if "$driver" "$work/$name" "$work/$name.h5" > "$work/$name.out" 2>&1; then
    echo "FAIL ($name): imported"; cat "$work/$name.out"; exit 1
  fi
  grep -q -- "$needle" "$work/$name.out" || { echo "FAIL ($name): no '$needle' in: $(cat "$work/$name.out")"; exit 1; }
  test ! -e "$work/$name.h5" || { echo "FAIL ($name): an export file was left"; exit 1; }
  echo "refused ($name): $(tail -n 1 "$work/$name.out")"
}
refuse missing "model.decoder.layers.1.fc2.weight" \
  'del t["model.decoder.layers.1.fc2.weight"]; save_file(t, d + "/model.safetensors", metadata={"format": "pt"})'
refuse shape "model.encoder.layers.0.self_attn.k_proj.weight" \
  't["model.encoder.layers.0.self_attn.k_proj.weight"] = t["model.encoder.layers.0.self_attn.k_proj.weight"][:16]; save_file(t, d + "/model.safetensors", metadata={"format": "pt"})'
refuse truncated "the header says" \
  'raw = open(d + "/model.safetensors", "rb").read(); open(d + "/model.safetensors", "wb").write(raw[:40])'
refuse unexpected "unexpected tensor 'model.encoder.extra.weight'" \
  't["model.encoder.extra.weight"] = t["model.shared.weight"][:2].copy(); save_file(t, d + "/model.safetensors", metadata={"format": "pt"})'
refuse vocab "the tokenizer has 261 tokens but the embedding 320 rows" \
  'from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode
tokens = ["<s>", "<pad>", "</s>", "<unk>"] + list(bytes_to_unicode().values()) + ["<mask>"]
json.dump({s: i for i, s in enumerate(tokens)}, open(d + "/vocab.json", "w")); open(d + "/merges.txt", "w").write("#version: 0.2\\n")'
echo ok
