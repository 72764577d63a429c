#!/usr/bin/env python3
"""A small randomly initialised BART with a BART tokenizer trained on a data set, in Hugging Face's layout.

For the CPU smoke path of pretrained BART (tests/bart_end_to_end_test.sh, docs/bart.md): what `transformers`
writes for facebook/bart-base, at a size two CPU cores train in a minute. The tokenizer is a byte-level BPE
trained with `tokenizers` on the corpus and queries written as SEAL and MINDER feed BART (" title @@ body",
" query || title || +"), so that " @@" and " ||" are single tokens as they are in GPT-2's vocabulary; <mask>
comes last, as in BART. Never used by dgr itself: a test helper, like tests/bart_reference.py.

Usage: make_tiny_bart.py DATA_DIR OUT_DIR [--shape tiny|base] [--vocab N] [--seed N]
  tiny: d_model 64, 2 + 2 layers, 4 heads; base: facebook/bart-base's shape (d_model 768, 6 + 6 layers, 12 heads,
  ffn 3072, 1024 positions) with the trained vocabulary instead of GPT-2's 50,265 tokens.
(Debian's python3-torch; transformers and tokenizers from scripts/install-deps.sh's venv)
"""
import argparse, csv, glob, json, os, sys

venv = os.environ.get("DGR_VENV", "/opt/dgr-venv")
sys.path += glob.glob(os.path.join(venv, "lib", "python3*", "site-packages"))
import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import BartConfig, BartForConditionalGeneration


def read_tsv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return [row for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--vocab", type=int, default=3000)
    ap.add_argument("--shape", choices=["tiny", "base"], default="tiny")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    texts = []
    corpus = read_tsv(os.path.join(a.data, "corpus.tsv"))
    for row in corpus[1:] if corpus and corpus[0][0] == "pid" else corpus:
        title, text = (row[1], row[2]) if len(row) >= 3 else ("", row[1])
        texts.append(" " + title + " @@ " + text)
    for path in sorted(glob.glob(os.path.join(a.data, "queries.*.tsv"))):
        for row in read_tsv(path):
            if len(row) >= 2:
                for view in ("title", "body", "query"):
                    texts.append(" " + row[1] + " || " + view + " || +")
    os.makedirs(a.out, exist_ok=True)
    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(texts, vocab_size=a.vocab - 1, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>"], show_progress=False)
    bpe.save_model(a.out)
    vocab_path = os.path.join(a.out, "vocab.json")
    vocab = json.load(open(vocab_path, encoding="utf-8"))
    vocab["<mask>"] = len(vocab)
    json.dump(vocab, open(vocab_path, "w", encoding="utf-8"), ensure_ascii=False)
    for marker in ("\u0120@@", "\u0120||"):
        assert marker in vocab, f"the trained BPE lacks {marker!r}"

    torch.manual_seed(a.seed)
    d, layers, heads, ffn, positions = (64, 2, 4, 128, 128) if a.shape == "tiny" else (768, 6, 12, 3072, 1024)
    config = BartConfig(vocab_size=len(vocab), d_model=d, encoder_layers=layers, decoder_layers=layers,
                        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=ffn,
                        decoder_ffn_dim=ffn, max_position_embeddings=positions, dropout=0.1,
                        attention_dropout=0.0, activation_dropout=0.0)
    model = BartForConditionalGeneration(config)
    model.save_pretrained(a.out)
    print(f"make_tiny_bart: {a.out}: {len(vocab)} tokens, {sum(p.numel() for p in model.parameters())} parameters")


if __name__ == "__main__":
    main()
