#!/usr/bin/env bash
# dgr's BART tokenizer (retrieval/bart_bpe.h) against transformers' BartTokenizer and BartTokenizerFast: a
# byte-level BPE trained with `tokenizers` on datasets/debian-small (bart_bpe_reference.py), then every
# passage title, passage text and query of that set and a list of awkward strings (accents, CJK, emoji,
# control characters, U+0085, long digit runs, repeated spaces, contractions) must give exactly the
# references' ids, and decode(encode(x)) == x. Usage: bart_bpe_test.sh BART_BPE_COMPARE
# Exit 77 (skipped under CTest) without scripts/install-deps.sh's venv (DGR_VENV, default /opt/dgr-venv) or
# without transformers and tokenizers in it.
set -euo pipefail
compare=$1
here=$(cd "$(dirname "$0")" && pwd)
python=${DGR_VENV:-/opt/dgr-venv}/bin/python
if [[ ! -x $python ]] || ! "$python" -I -c 'import transformers, tokenizers' 2>/dev/null; then
  echo "SKIP: $python cannot import transformers and tokenizers: run scripts/install-deps.sh (it pip-installs them into a venv)"
  exit 77
fi
work=$(mktemp -d /tmp/dgr_bart_bpe.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$python" -I "$here/bart_bpe_reference.py" "$here/../datasets/debian-small" "$work" 2>&1 | grep -v "PyTorch was not found" || true
test -s "$work/cases.jsonl"
"$compare" "$work" "$work/cases.jsonl"
