#!/usr/bin/env bash
# An export file read from Python with Debian's h5py (python3-h5py, under /usr/bin/python3; the `python3`
# on PATH may be another interpreter without h5py): every dataset under /weights is named by a state-dict
# key of the model (dots kept), has its shape, is float32, and its values equal the C++ ones bit for bit.
# Usage: export_h5py_test.sh DRIVER   (DRIVER: export_h5py_driver OUT.h5 DUMP.txt)
# Exit 77 (skipped under CTest) when /usr/bin/python3 cannot import h5py and numpy.
set -euo pipefail
driver=$1
python=/usr/bin/python3

# -I: isolated mode, so PYTHONPATH/PYTHONHOME of another Python (pyenv) cannot interfere.
if [[ ! -x $python ]] || ! "$python" -I -c 'import h5py, numpy' 2>/dev/null; then
  echo "SKIP: $python cannot import h5py and numpy: install Debian's python3-h5py (apt-get install python3-h5py)"
  exit 77
fi

work=$(mktemp -d /tmp/dgr_export_h5py.XXXXXX)
trap 'rm -rf "$work"' EXIT

"$driver" "$work/model.h5" "$work/dump.txt"

"$python" -I - "$work/model.h5" "$work/dump.txt" <<'EOF'
import json
import sys

import h5py
import numpy as np

path, dump_path = sys.argv[1], sys.argv[2]
errors = []

# The dump: KEY \t SHAPE (comma separated) \t hex float32 bit patterns.
expected = {}
with open(dump_path) as f:
    for number, line in enumerate(f, 1):
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 3:
            sys.exit(f"FAIL: {dump_path}:{number}: expected 3 tab-separated fields, got {len(parts)}")
        key, shape_text, values_text = parts
        if key in expected:
            sys.exit(f"FAIL: {dump_path}:{number}: key '{key}' appears twice")
        shape = tuple(int(d) for d in shape_text.split(",")) if shape_text else ()
        bits = np.array([int(v, 16) for v in values_text.split()], dtype=np.uint32)
        if bits.size != int(np.prod(shape, dtype=np.int64)):
            sys.exit(f"FAIL: {dump_path}:{number}: '{key}' has {bits.size} values for shape {shape}")
        expected[key] = (shape, bits)
if not expected:
    sys.exit(f"FAIL: {dump_path} is empty")

with h5py.File(path, "r") as f:
    fmt = f.attrs.get("dgr_format")
    fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
    if fmt != "dgr-export":
        errors.append(f"root attribute dgr_format is {fmt!r}, expected 'dgr-export'")
    config = f.attrs.get("model_config")
    try:
        json.loads(config)
    except Exception as e:  # noqa: BLE001
        errors.append(f"root attribute model_config is not JSON: {e}")
    if "weights" not in f or not isinstance(f["weights"], h5py.Group):
        sys.exit(f"FAIL: {path} has no group /weights")

    datasets = {}
    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            datasets[name] = obj
    f["weights"].visititems(visit)

    found, wanted = set(datasets), set(expected)
    for name in sorted(found - wanted):
        errors.append(f"/weights/{name} is in the file but is not a state-dict key of the model")
    for name in sorted(wanted - found):
        errors.append(f"state-dict key '{name}' has no dataset /weights/{name}")

    arrays = values = 0
    for name in sorted(found & wanted):
        ds = datasets[name]
        shape, bits = expected[name]
        if ds.shape != shape:
            errors.append(f"/weights/{name}: shape {ds.shape}, the model has {shape}")
            continue
        if ds.dtype != np.dtype("<f4"):
            errors.append(f"/weights/{name}: dtype {ds.dtype}, expected float32 (little-endian)")
            continue
        attr = ds.attrs.get("dtype")
        attr = attr.decode() if isinstance(attr, bytes) else attr
        if attr != "float32":
            errors.append(f"/weights/{name}: attribute dtype is {attr!r}, expected 'float32'")
        got = np.ascontiguousarray(ds[()], dtype=np.dtype("<f4")).view(np.uint32).reshape(-1)
        differ = np.flatnonzero(got != bits)
        if differ.size:
            i = int(differ[0])
            errors.append(f"/weights/{name}: {differ.size} of {bits.size} values differ; first at flat index {i}: "
                          f"file 0x{int(got[i]):08x}, C++ 0x{int(bits[i]):08x}")
            continue
        arrays += 1
        values += bits.size

if errors:
    for e in errors:
        print("FAIL:", e)
    sys.exit(1)
print(f"ok: {arrays} arrays, {values} values equal bit for bit (h5py {h5py.__version__}, numpy {np.__version__})")
EOF
