#!/usr/bin/env bash
# `dgr evaluate --answers` (retrieval/answers.h, Note [Answer matching]) against a Python transcription of DPR's
# SimpleTokenizer and has_answer (the `regex` module from scripts/install-deps.sh's venv, unicodedata): top-k
# accuracy on (1) datasets/debian-tiny's dev questions with answers cut from passages (and case-changed) over a
# BM25 run, and (2) awkward passages and answers (composed and decomposed accents, CJK, punctuation runs, digits,
# an answer across a line break, an empty answer); on (2) each question is also checked alone.
# Usage: answers_test.sh DGR DATA_DIR. Exit 77 without the venv's `regex`.
set -euo pipefail
dgr=$1; tiny=$2
venv=${DGR_VENV:-/opt/dgr-venv}
export DGR_VENV=$venv
if ! /usr/bin/python3 -c "import glob, sys; sys.path += glob.glob('$venv/lib/python3*/site-packages'); import regex" 2>/dev/null; then
  echo "SKIP: the venv $venv has no 'regex' module: run scripts/install-deps.sh"; exit 77
fi
work=$(mktemp -d /tmp/dgr_answers.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

mkdir -p "$work/tiny" "$work/odd"
cp "$tiny"/corpus.tsv "$tiny"/queries.* "$tiny"/qrels.* "$work/tiny/"
"$dgr" bm25 --data "$work/tiny" --split dev --depth 100 > /dev/null

/usr/bin/python3 - "$work" <<'PY'
import csv, json, random, sys, unicodedata
work = sys.argv[1]
rng = random.Random(3)
rows = list(csv.reader(open(f"{work}/tiny/corpus.tsv", encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
qids = [r[0] for r in csv.reader(open(f"{work}/tiny/queries.dev.tsv"), delimiter="\t", quoting=csv.QUOTE_NONE)][1:]
with open(f"{work}/tiny/answers.dev.jsonl", "w", encoding="utf-8") as f:
    for qid in qids:
        answers = []
        for _ in range(2):
            words = rng.choice(rows)[2].split()
            i = rng.randrange(len(words)); n = rng.randint(1, 3)
            a = " ".join(words[i:i + n])
            answers.append(a.upper() if rng.random() < 0.3 else a)
        f.write(json.dumps({"qid": qid, "answers": answers}) + "\n")
# Awkward passages: one question per answer list, a run over every passage (scores distinct).
nfc, nfd = "Café Zürich", unicodedata.normalize("NFD", "Café Zürich")
texts = [f"The {nfc} opened in 1900.", f"The {nfd} opened later.", "東京 タワー is tall", "x--y...z!!", "New\nYork City",
         "A B C", "ÅNGSTRÖM unit", "rock-and-roll music", "state-of-the-art", "I.B.M. corp"]
with open(f"{work}/odd/corpus.tsv", "w", encoding="utf-8") as f:
    f.write("pid\ttitle\ttext\n")
    for i, t in enumerate(texts): f.write(f"p{i}\tt{i}\t{t.replace(chr(10), ' ')}\n")
qs = [["café zürich"], [nfd.lower()], ["東京"], ["タワー"], ["y...z"], ["new york"], [""], ["ångström"], ["rock and roll"],
      ["state of the art"], ["IBM"], ["i.b.m."], ["1900"], ["19"], ["b c"], ["c b"]]
with open(f"{work}/odd/answers.test.jsonl", "w", encoding="utf-8") as f, open(f"{work}/odd/run.trec", "w") as r:
    for i, a in enumerate(qs):
        f.write(json.dumps({"qid": f"q{i}", "answers": a}, ensure_ascii=False) + "\n")
        order = list(range(len(texts))); rng.shuffle(order)
        for rank, p in enumerate(order): r.write(f"q{i} Q0 p{p} {rank + 1} {100 - rank} ref\n")
PY

# The reference: DPR's dpr/utils/tokenizers.py SimpleTokenizer and dpr/data/qa_validation.py has_answer ("string").
cat > "$work/reference.py" <<'PY'
import csv, glob, json, os, sys, unicodedata
sys.path += glob.glob(os.environ["DGR_VENV"] + "/lib/python3*/site-packages")
import regex
ALPHA_NUM, NON_WS = r"[\p{L}\p{N}\p{M}]+", r"[^\p{Z}\p{C}]"
PATTERN = regex.compile("(%s)|(%s)" % (ALPHA_NUM, NON_WS), flags=regex.IGNORECASE + regex.UNICODE + regex.MULTILINE)
def tokens(text):
    return [m.group().lower() for m in PATTERN.finditer(unicodedata.normalize("NFD", text))]
def has_answer(answers, text):
    text = tokens(text)
    for a in answers:
        a = tokens(a)
        if not a: continue
        for i in range(0, len(text) - len(a) + 1):
            if a == text[i:i + len(a)]: return True
    return False
corpus_path, run_path, answers_path = sys.argv[1:4]
rows = list(csv.reader(open(corpus_path, encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
text = {r[0]: r[2] for r in rows}
run = {}
for line in open(run_path):
    q, _, p, rank, score, _ = line.split()
    run.setdefault(q, []).append((-float(score), p))
hits, n = {k: 0 for k in (1, 5, 20, 100)}, 0
for line in open(answers_path, encoding="utf-8"):
    j = json.loads(line); n += 1
    ranked = [p for _, p in sorted(run.get(j["qid"], []))]
    first = next((r + 1 for r, p in enumerate(ranked) if has_answer(j["answers"], text[p])), 0)
    for k in hits: hits[k] += 1 if 0 < first <= k else 0
print("  ".join(f"Acc@{k} {hits[k] / n:.4f}" for k in sorted(hits)) + f"  (questions {n}, by answer string)")
PY
for set in "tiny:$work/tiny/bm25.dev.trec:$work/tiny/answers.dev.jsonl" "odd:$work/odd/run.trec:$work/odd/answers.test.jsonl"; do
  IFS=: read -r name run answers <<<"$set"
  ref=$(/usr/bin/python3 "$work/reference.py" "$work/$name/corpus.tsv" "$run" "$answers")
  got=$("$dgr" evaluate --run "$run" --answers "$answers" --corpus "$work/$name/corpus.tsv" | sed 's/^[^:]*: //')
  echo "$name: dgr $got"
  echo "$name: ref $ref"
  [[ "$(tr -s ' ' <<<"$got")" == "$(tr -s ' ' <<<"$ref")" ]] || fail "$name: dgr's answer accuracy differs from DPR's"
done
# (2) question by question: a disagreement cannot hide behind the average.
i=0
while IFS= read -r line; do
  printf '%s\n' "$line" > "$work/one.jsonl"
  ref=$(/usr/bin/python3 "$work/reference.py" "$work/odd/corpus.tsv" "$work/odd/run.trec" "$work/one.jsonl")
  got=$("$dgr" evaluate --run "$work/odd/run.trec" --answers "$work/one.jsonl" --corpus "$work/odd/corpus.tsv" | sed 's/^[^:]*: //')
  [[ "$(tr -s ' ' <<<"$got")" == "$(tr -s ' ' <<<"$ref")" ]] || fail "odd question $i ($line): dgr $got, DPR $ref"
  i=$((i + 1))
done < "$work/odd/answers.test.jsonl"
echo "odd: all $i questions agree one by one"
# Malformed answers files are refused naming the file and line.
echo '{"qid": "q0", "answers": "not a list"}' > "$work/bad.jsonl"
if "$dgr" evaluate --run "$work/odd/run.trec" --answers "$work/bad.jsonl" --corpus "$work/odd/corpus.tsv" > "$work/bad.log" 2>&1; then
  fail "a malformed answers file was accepted"
fi
grep -q "bad.jsonl:1" "$work/bad.log" || { cat "$work/bad.log"; fail "the error does not name the file and line"; }
echo "PASS"
