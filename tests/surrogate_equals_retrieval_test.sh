#!/usr/bin/env bash
# DGR's surrogate equals the retrieval score (method.md section 7) in exactly the settings the main command
# trains with: a short stage 1 and `dgr mine` with configs/stage1-tiny.toml and configs/distill-tiny.toml
# (title and body views: complete title keys, body prefixes, query n-gram keys; no unigram keys, which the
# surrogate cannot tell apart), `dgr prepare`, then every prepared candidate's surrogate score, computed as
# `dgr train --stage distill` computes it (without gradient), against the score the retriever gave it
# (surrogate_check_driver). Then the same with the title view alone, where no body-view key (n-gram,
# unigram) may appear. Also: the run's config.json, the mined manifest and the run sidecar name the keys
# that took effect, and searching a view the model never learnt is an error.
# Usage: surrogate_equals_retrieval_test.sh DGR CHECK_DRIVER SOURCE_DIR MPIEXEC [MPIEXEC_FLAGS...]
set -euo pipefail
dgr=$1; check=$2; src=$3; shift 3
mpiexec=("$@")
work=$(mktemp -d /tmp/dgr_surrogate.XXXXXX)
trap 'rm -rf "$work"' EXIT
data=$work/data
mkdir -p "$data"
python3 "$src/tests/synthetic_data.py" "$data"
fail() { echo "FAIL: $*"; exit 1; }

"$dgr" index --data "$data" --out "$data/index" --vocab-size 200 > /dev/null
# The tiny recipe's settings, made short: the test preset, 6 epochs, both views trained (the second check
# searches the body view too).
"$dgr" --config "$src/configs/stage1-tiny.toml" train --stage generate --data "$data" --out "$work/run" \
    --preset test --epochs 150 --batch 16 --views title,body --eval-every 0 --eval-split dev --eval-max-queries 2 \
    > "$work/train.log" 2>&1 || { cat "$work/train.log"; fail "stage 1"; }
python3 - "$work/run/config.json" <<'PY' || fail "config.json does not name the evaluation's keys"
import json, sys
r = json.load(open(sys.argv[1]))["train"]["eval"]["retrieval"]
assert r["views"] == ["title", "body"] and r["ngram_keys"] is True and r["unigram_keys"] is False, r
assert r["keys"]["title"].startswith("complete"), r
PY

for setting in config title; do
  if [[ $setting == config ]]; then
    args=(--config "$src/configs/distill-tiny.toml"); max_keys=40
  else
    args=(--views title --beam 5 --max-keys 12); max_keys=12
  fi
  "${mpiexec[@]}" -n 2 "$dgr" mine --data "$data" --model "$work/run/model.h5" --split train \
      --out "$work/mined-$setting" "${args[@]}" > "$work/mine-$setting.log" 2>&1 \
      || { cat "$work/mine-$setting.log"; fail "mine ($setting)"; }
  "$dgr" teacher bm25 --mined "$work/mined-$setting" --data "$data" --out "$work/teacher-$setting.trec" > /dev/null
  "$dgr" prepare --mined "$work/mined-$setting" --teacher "$work/teacher-$setting.trec" --out "$work/prep-$setting" \
      --min-negatives 1 --max-score-gap 1e9 > /dev/null
  "$check" "$work/run/model.h5" "$data/index" "$work/prep-$setting" "$max_keys" | tee "$work/check-$setting.log" \
      || fail "surrogate differs from the retrieval score ($setting)"
  python3 - "$work/mined-$setting/manifest.json" "$work/check-$setting.log" "$setting" <<'PY' || fail "keys ($setting)"
import json, re, sys
manifest, log, setting = sys.argv[1:]
r = json.load(open(manifest))["retrieval"]
m = re.search(r"\((\d+) keys: title (\d+), body (\d+), pq (\d+)\)", open(log).read())
title, body = int(m.group(2)), int(m.group(3))
if setting == "config":
    assert r["views"] == ["title", "body"] and r["ngram_keys"] and not r["unigram_keys"], r
    assert title > 0 and body > 0, (title, body)
else:
    # Title only: complete title keys and nothing else (no hidden n-gram channel), although the n-gram and
    # unigram switches are on.
    assert r["views"] == ["title"] and not r["ngram_keys"] and not r["unigram_keys"], r
    assert title > 0 and body == 0, (title, body)
PY
done
# Title keys of the mined candidates are complete titles: their text ends with the end marker.
python3 - "$work/mined-config/candidates.jsonl" <<'PY' || fail "a mined title key is not a complete title"
import json, sys
n = 0
for line in open(sys.argv[1]):
    for c in json.loads(line)["candidates"]:
        for k in c["keys"]:
            if k["view"] != "title":
                continue
            assert k["text"].rstrip().endswith("@@"), k
            n += 1
assert n > 0
print(f"{n} mined title keys, every one a complete title")
PY

# The retrieve sidecar names the keys, and `dgr report` lists them.
"$dgr" --config "$src/configs/stage1-tiny.toml" retrieve --data "$data" --model "$work/run/model.h5" --split dev \
    --out "$work/ret" --threads 1 > /dev/null
python3 - "$work/ret/run.dev.json" <<'PY' || fail "run sidecar"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["retrieval"]["views"] == ["title", "body"] and j["retrieval"]["ngram_keys"] is True, j
assert "complete titles, body prefixes" in j["description"] and "query n-gram keys" in j["description"], j
PY
"$dgr" report --data "$data" --split dev --system "s1=$work/ret/run.{split}.trec" > "$work/report.txt"
grep -q "^- s1: views title,body, beam 10, depth 100; keys: complete titles, body prefixes; query n-gram keys, no unigram keys" "$work/report.txt" \
    || { cat "$work/report.txt"; fail "report does not name the keys"; }
# Searching a view the model never learnt is an error naming the way out.
"$dgr" train --stage generate --data "$data" --out "$work/title-only" --preset test --epochs 1 --batch 16 --views title \
    --eval-every 0 --eval-split dev --eval-max-queries 1 --threads 1 > /dev/null 2>&1 || fail "title-only stage 1"
set +e
"$dgr" retrieve --data "$data" --model "$work/title-only/model.h5" --split dev --views title,body --out "$work/x" \
    --threads 1 > "$work/untrained.log" 2>&1
rc=$?
set -e
[[ $rc -ne 0 ]] || fail "retrieving with an untrained view succeeded"
grep -q "learnt to generate the views title only, but this search uses the body view" "$work/untrained.log" \
    || { cat "$work/untrained.log"; fail "no message for an untrained view"; }
[[ ! -e $work/x/run.dev.trec ]] || fail "a run was written for an untrained view"
echo "PASS"
