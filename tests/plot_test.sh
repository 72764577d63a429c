#!/usr/bin/env bash
# `dgr plot` as a user meets it: a PNG (checked by its signature and size) from small train.jsonl files of
# one and of two runs, the default output path, and the errors: a malformed line names file:line, a missing
# file, gnuplot not installed (the apt-get hint) or failing, no data points, an unknown metric. Exits 77 (skipped)
# when gnuplot is not installed.
# Usage: plot_test.sh DGR
set -uo pipefail
dgr=$1
if ! command -v gnuplot >/dev/null; then
  echo "SKIP: gnuplot is not installed (apt-get install gnuplot-nox)"
  exit 77
fi
work=$(mktemp -d /tmp/dgr_plot_test.XXXXXX)
trap 'rm -rf "$work"' EXIT
export TMPDIR=$work/tmp  # dgr plot keeps its script and data there when gnuplot fails
mkdir -p "$TMPDIR"
fail() { echo "FAIL: $*"; exit 1; }

# Like `dgr train` writes it: "train" events (window loss, lr) and "eval" events with a metrics object; a
# resumed run repeats step 30 (the later line wins), one event the plot does not know is skipped.
mkdir -p "$work/runs/a" "$work/runs/b"
python3 - "$work/runs/a/train.jsonl" "$work/runs/b/train.jsonl" <<'PY'
import json, math, sys
for path, scale in ((sys.argv[1], 1.0), (sys.argv[2], 0.8)):
    with open(path, "w") as f:
        for step in range(10, 101, 10):
            f.write(json.dumps({"event": "train", "step": step, "epoch": step / 20, "loss": scale * 5 * math.exp(-step / 40),
                                "lr": 1e-3 * min(1, step / 20), "examples_per_s": 120.5, "elapsed_s": step * 0.5}) + "\n")
            if step % 20 == 0:
                for split in ("dev", "test"):
                    f.write(json.dumps({"event": "eval", "split": split, "step": step, "epoch": step / 20,
                                        "metrics": {"R@1": step / 200 * scale, "R@10": step / 110 * scale,
                                                    "MRR@10": step / 150 * scale}}) + "\n")
        f.write("\n")
        f.write(json.dumps({"event": "train", "step": 30, "loss": 9.0, "lr": 1e-3}) + "\n")
        f.write(json.dumps({"event": "checkpoint", "step": 100}) + "\n")
PY

is_png() {  # a PNG signature and more than a few hundred bytes
  [[ -s $1 ]] || return 1
  [[ $(head -c 8 "$1" | od -An -tx1 | tr -d ' \n') == "89504e470d0a1a0a" ]] || return 1
  [[ $(stat -c %s "$1") -gt 2000 ]]
}

# One run, default output: plot.png next to the file.
out=$("$dgr" plot "$work/runs/a/train.jsonl" 2>"$work/err.txt") || { cat "$work/err.txt"; fail "plot of one run failed"; }
echo "$out"
is_png "$work/runs/a/plot.png" || fail "runs/a/plot.png is not a PNG"
grep -q "5 panels: training loss, learning rate, R@1 (evaluation), R@10 (evaluation), MRR@10 (evaluation)" <<<"$out" ||
  fail "unexpected panels: $out"

# Two runs overlaid, chosen metrics, explicit output in a new directory.
out=$("$dgr" plot "$work/runs/a/train.jsonl" "$work/runs/b/train.jsonl" --metrics R@10,MRR@10 \
      --out "$work/plots/ab.png" 2>"$work/err.txt") || { cat "$work/err.txt"; fail "plot of two runs failed"; }
echo "$out"
is_png "$work/plots/ab.png" || fail "plots/ab.png is not a PNG"
grep -q "4 panels: training loss, learning rate, R@10 (evaluation), MRR@10 (evaluation)" <<<"$out" ||
  fail "unexpected panels: $out"
[[ -z $(ls "$work/plots" | grep -v '^ab.png$') ]] || fail "left temporary files in plots/: $(ls "$work/plots")"

# A stage-2 run: per-step diagnostics ("step" events: violated pairs, gradient norms and shares) get their
# own panels beside the losses.
mkdir -p "$work/runs/d"
python3 - "$work/runs/d/train.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for step in range(1, 31):
        f.write(json.dumps({"event": "step", "step": step, "epoch": step / 10, "loss": 20 - step / 3, "rank_loss": 10 - step / 6,
                            "gen_loss": 0.2, "head_first": 0.9, "viol_head": 0.3 - step / 200, "viol_neg": 0.6,
                            "misordered_neg": 0.4, "grad_norm": 3.0, "rank_grad_norm": 2.5, "gen_grad_norm": 1.0,
                            "rank_grad_share": 2.5 / 3.5, "lr": 1e-4}) + "\n")
    f.write(json.dumps({"event": "eval", "split": "dev", "step": 30, "epoch": 3, "metrics": {"R@5": 0.7}}) + "\n")
PY
out=$("$dgr" plot "$work/runs/d/train.jsonl" 2>"$work/err.txt") || { cat "$work/err.txt"; fail "plot of a stage-2 run failed"; }
echo "$out"
is_png "$work/runs/d/plot.png" || fail "runs/d/plot.png is not a PNG"
grep -q "6 panels: training loss, learning rate, pairs per step (fraction), gradient norm per step (before clipping), share of the gradient norm, R@5 (evaluation)" <<<"$out" ||
  fail "unexpected panels for stage-2 diagnostics: $out"

# expect_error EXIT_CODE TEXT ARGS...: fails unless dgr plot exits EXIT_CODE with TEXT on stderr.
expect_error() {
  local code=$1 text=$2; shift 2
  "$dgr" plot "$@" >"$work/out.txt" 2>"$work/err.txt"
  local rc=$?
  [[ $rc -eq $code ]] || { cat "$work/err.txt"; fail "dgr plot $* exited $rc, expected $code"; }
  grep -qF -- "$text" "$work/err.txt" || { cat "$work/err.txt"; fail "dgr plot $*: expected '$text' in the error"; }
  echo "ok (exit $rc): $(tail -n1 "$work/err.txt" | sed 's/^.*\[dgr\] //')"
}

bad=$work/bad/train.jsonl
mkdir -p "$work/bad"
head -n 2 "$work/runs/a/train.jsonl" > "$bad"
echo '{"event": "train", "step": 30, "loss": 1.2' >> "$bad"  # cut off
expect_error 1 "$bad:3: not valid JSON" "$bad" --out "$work/bad/plot.png"
[[ ! -e $work/bad/plot.png ]] || fail "a failed plot left $work/bad/plot.png"
printf '{"event": "train", "step": 10, "loss": 1.0}\n[1, 2]\n' > "$bad"
expect_error 1 "$bad:2: found a JSON array" "$bad"
printf '{"pid": "p1", "keys": []}\n' > "$bad"
expect_error 1 "$bad:1: no \"event\" string" "$bad"
printf '{"event": "eval", "split": "dev", "metrics": {"R@10": 0.5}}\n' > "$bad"
expect_error 1 "$bad:1: event 'eval' has no \"step\" field" "$bad"
printf '{"event": "train", "step": 10, "loss": 1.0}\n{"event": "train", "step": 20, "loss": 0.9}\n' > "$bad"
expect_error 2 "--metrics R@10: no eval event of $bad has this metric" "$bad" --metrics R@10
printf '{"event": "checkpoint", "step": 10}\n' > "$bad"
expect_error 1 "$bad: no data points" "$bad"
: > "$bad"
expect_error 1 "$bad: no data points" "$bad"
expect_error 1 "$work/none/train.jsonl: cannot open" "$work/none/train.jsonl"
expect_error 1 "apt-get install gnuplot-nox" "$work/runs/a/train.jsonl" --gnuplot dgr-no-such-gnuplot --out "$work/x.png"
expect_error 1 "'dgr-no-such-gnuplot': not found in PATH" "$work/runs/a/train.jsonl" --gnuplot dgr-no-such-gnuplot \
  --out "$work/x.png"
expect_error 1 "gnuplot failed (exit code 1) on $TMPDIR/dgr_plot." "$work/runs/a/train.jsonl" --gnuplot false --out "$work/x.png"
expect_error 1 "without error but wrote no PNG" "$work/runs/a/train.jsonl" --gnuplot true --out "$work/x.png"
[[ ! -e $work/x.png ]] || fail "a failed plot left $work/x.png"
expect_error 2 "files is required" --out "$work/x.png"
echo "PASS"
