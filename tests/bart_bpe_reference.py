#!/usr/bin/env python3
"""Reference ids for tests/bart_bpe_test.sh, from Hugging Face's own code (never used by dgr itself).

Trains a byte-level BPE with `tokenizers` on a data set's passages and queries, writes it as a BART tokenizer
directory (vocab.json with <s>=0, <pad>=1, </s>=2, <unk>=3 and <mask> last, as facebook/bart-* have them;
merges.txt), loads that directory with `transformers`' BartTokenizer (Python, GPT-2's original algorithm) and
BartTokenizerFast (Rust `tokenizers`) and writes, for every passage title, passage text and query of the data
set and for a list of awkward strings, the ids each gives with add_special_tokens=False.
Usage: bart_bpe_reference.py DATA_DIR OUT_DIR  ->  OUT_DIR/vocab.json, merges.txt, cases.jsonl
"""
import csv, glob, json, os, sys

from tokenizers import ByteLevelBPETokenizer
from transformers import BartTokenizer, BartTokenizerFast

AWKWARD = [
    "café naïve Ångström façade", "e\u0301 versus \u00e9", "東京は日本の首都です", "한국어 텍스트", "ภาษาไทย",
    "العربية من اليمين", "עברית", "Привет, мир!", "👍🏽 family: 👨\u200d👩\u200d👧 🇩🇪", "\u0000\u0001\u001c\u001f\u007f",
    "a\u0085b", "a\u00a0b", "line\u2028sep\u2029para", "ideographic\u3000space", "\ufeffBOM first",
    "12345678901234567890 3.14159 1,000,000", "a    b", "trailing   ", "   leading", "\t\ttabs\n\nnewlines\r\n",
    "I'm don't we'll they've she'd it's O'Neil 'S 'LL DON'T", "C++/C# -> x86_64 && a||b @@ title @@",
    "https://example.org/a?b=c&d=e#f", "∑x² ≤ ∞ ½ ⅓", "zero\u200bwidth\u200djoiner", "Ġ Ċ ĉ literal",
    "x" * 300, " ", "  ", "\n", "'", "''s", "'s'", "?!...,;:", "ǅungla ǈ ǋ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛", "٣٤٥ ١٢",
    "mixed123abc 123abc abc123", "tab\tafter", "end with space ", "w \u0085x", "w \u00a0x", "w \u2028x",
]
# Trained on as well: a run of white space at the end of a text is one pre-token, so the BPE learns merges of a
# space with U+0085 / U+00A0 / U+2028; "w \u0085x" above then gives other ids when a tokenizer does not count
# the character as white space (PCRE2's \s leaves U+0085 out: retrieval/bart_bpe.cpp, kWhite).
WHITE_RUNS = ["w \u0085", "w \u00a0", "w \u2028"] * 20


def texts_of(data_dir):
    out = []
    with open(os.path.join(data_dir, "corpus.tsv"), newline="", encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(rows)
        for row in rows:
            out += [row[1], row[2]]
    for path in sorted(glob.glob(os.path.join(data_dir, "queries.*.tsv"))):
        with open(path, newline="", encoding="utf-8") as f:
            rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            next(rows)
            out += [row[1] for row in rows]
    return [t for t in out if t]


def main():
    data_dir, out_dir = sys.argv[1], sys.argv[2]
    texts = texts_of(data_dir)
    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(texts + WHITE_RUNS, vocab_size=6000, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>"], show_progress=False)
    bpe.save_model(out_dir)
    with open(os.path.join(out_dir, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    assert [vocab[t] for t in ["<s>", "<pad>", "</s>", "<unk>"]] == [0, 1, 2, 3], vocab
    vocab["<mask>"] = len(vocab)
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    files = dict(vocab_file=os.path.join(out_dir, "vocab.json"), merges_file=os.path.join(out_dir, "merges.txt"))
    slow, fast = BartTokenizer(**files), BartTokenizerFast(**files)
    for tok in (slow, fast):
        assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.mask_token_id) == \
            (0, 1, 2, 3, len(vocab) - 1)
    with open(os.path.join(out_dir, "cases.jsonl"), "w", encoding="utf-8") as f:
        for kind, items in (("data", texts), ("awkward", AWKWARD)):
            for text in items:
                f.write(json.dumps({"kind": kind, "text": text,
                                    "slow": slow(text, add_special_tokens=False)["input_ids"],
                                    "fast": fast(text, add_special_tokens=False)["input_ids"]},
                                   ensure_ascii=False) + "\n")
    print(f"bart_bpe_reference: {len(vocab)} tokens; {len(texts)} data texts and {len(AWKWARD)} awkward strings")


if __name__ == "__main__":
    main()
