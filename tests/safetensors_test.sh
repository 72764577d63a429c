#!/usr/bin/env bash
# dgr's safetensors reader and writer (data/safetensors.h) against Hugging Face's `safetensors` package: a file
# the reference writes (F32, F16, BF16 bits, F64, I64, I32, U8, I8, scalars, empty tensors, metadata) is read by
# dgr and written again; the reference loads dgr's file and every element must equal the original (F16 widened
# to float32, exactly), metadata included; a truncated copy must be refused. Usage: safetensors_test.sh COPY
# Exit 77 (skipped under CTest) without scripts/install-deps.sh's venv or without safetensors in it.
set -euo pipefail
copy=$1
python=${DGR_VENV:-/opt/dgr-venv}/bin/python
if [[ ! -x $python ]] || ! "$python" -I -c 'import safetensors.numpy, numpy' 2>/dev/null; then
  echo "SKIP: $python cannot import safetensors and numpy: run scripts/install-deps.sh (it pip-installs them into a venv)"
  exit 77
fi
work=$(mktemp -d /tmp/dgr_safetensors.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$python" -I - "$work" write <<'PY'
import sys, numpy as np
from safetensors.numpy import save_file
rng = np.random.default_rng(20)
t = {
    "model.encoder.layers.0.fc1.weight": rng.standard_normal((7, 5)).astype(np.float32),
    "model.shared.weight": rng.standard_normal((11, 3)).astype(np.float32),
    "half": np.array([1.0, -2.0, 65504.0, 2.0 ** -24, 0.0, -0.0, np.inf, 0.333], dtype=np.float16),
    "bf16_bits": rng.integers(0, 2 ** 16, size=(2, 3), dtype=np.uint16).view(np.uint16),
    "double": rng.standard_normal((4,)),
    "ids": np.arange(-3, 3, dtype=np.int64).reshape(2, 3),
    "i32": np.array([7, -8], dtype=np.int32),
    "u8": np.arange(5, dtype=np.uint8), "i8": np.array([-128, 127], dtype=np.int8),
    "scalar": np.array(3.5, dtype=np.float32), "empty": np.zeros((0, 4), dtype=np.float32),
}
save_file(t, sys.argv[1] + "/in.safetensors", metadata={"format": "pt", "note": "dgr test"})
PY
# BF16 is not a numpy type: rewrite the header's dtype of bf16_bits from U16 to BF16 (same bytes, same size).
"$python" -I - "$work" <<'PY'
import json, struct, sys
path = sys.argv[1] + "/in.safetensors"
raw = open(path, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
header["bf16_bits"]["dtype"] = "BF16"
text = json.dumps(header).encode()
text += b" " * ((8 - len(text) % 8) % 8)
open(path, "wb").write(struct.pack("<Q", len(text)) + text + raw[8 + n:])
PY
"$copy" "$work/in.safetensors" "$work/out.safetensors"
"$python" -I - "$work" <<'PY'
import json, struct, sys, numpy as np
from safetensors import safe_open
work = sys.argv[1]
def tensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, h in header.items():
        b, e = h["data_offsets"]
        dt = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "F64": "<f8", "I64": "<i8", "I32": "<i4", "U8": "u1", "I8": "i1"}[h["dtype"]]
        out[name] = (h["dtype"], np.frombuffer(raw[8 + n + b:8 + n + e], dtype=dt).reshape(h["shape"]))
    return out, meta
a, meta_a = tensors(work + "/in.safetensors")
b, meta_b = tensors(work + "/out.safetensors")
with safe_open(work + "/out.safetensors", framework="numpy") as f:  # the reference reader accepts dgr's file
    assert sorted(f.keys()) == sorted(a.keys()), (sorted(f.keys()), sorted(a.keys()))
    assert f.metadata() == meta_a == {"format": "pt", "note": "dgr test"}, f.metadata()
bad = 0
for name, (dtype, x) in a.items():
    dtype_b, y = b[name]
    want = ("F32" if dtype == "F16" else dtype)
    if dtype_b != want or x.shape != y.shape:
        print(f"{name}: {dtype} {x.shape} came back as {dtype_b} {y.shape}"); bad += 1; continue
    xs = x.astype(np.float32) if dtype == "F16" else x
    same = np.array_equal(xs, y, equal_nan=False) or (xs.size == 0)
    if not same or (xs.size and not np.array_equal(np.signbit(xs.astype(np.float64)), np.signbit(y.astype(np.float64)))):
        print(f"{name}: values differ"); bad += 1
print(f"safetensors: {len(a)} tensors read by dgr and written back; {bad} differ from the reference's")
sys.exit(1 if bad else 0)
PY
head -c 200 "$work/in.safetensors" > "$work/short.safetensors"
if "$copy" "$work/short.safetensors" "$work/x.safetensors" 2> "$work/err"; then echo "FAIL: a truncated file was read"; exit 1; fi
grep -q "short.safetensors" "$work/err" || { echo "FAIL: the error does not name the file: $(cat "$work/err")"; exit 1; }
test ! -e "$work/x.safetensors"
echo ok
