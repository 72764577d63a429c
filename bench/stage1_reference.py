#!/usr/bin/env python3
"""Stage-1 training throughput of the model of method.md section 10, written the way the probe was: plain
PyTorch (nn.TransformerEncoderLayer/DecoderLayer, norm_first, batch_first), learned positions, tied token
embedding and output projection over every target position, F.cross_entropy with ignore_index and label
smoothing, AdamW. Synthetic pairs shaped like the real ones. Prints one key=value line with examples/s.
Usage: stage1_reference.py [--threads 1] [--steps 30] [--warmup 5] [--batch 64] [--seed 0]
                           [--sync-dir DIR --sync-count N]
--sync-dir/--sync-count: N processes started together wait for each other (files in DIR) before their
first step, so their timed steps run at the same time (bench/stage1_throughput_bench.sh, 2 processes)."""
import argparse
import math
import os
import random
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PAD, BOS = 0, 2


class Seq2Seq(nn.Module):
    def __init__(self, vocab=8000, d=192, heads=4, enc=2, dec=2, ffn=768, max_pos=128, dropout=0.1):
        super().__init__()
        self.embed = nn.Embedding(vocab, d, padding_idx=PAD)
        self.enc_pos = nn.Embedding(max_pos, d)
        self.dec_pos = nn.Embedding(max_pos, d)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, heads, ffn, dropout, activation="gelu", batch_first=True, norm_first=True),
            enc, norm=nn.LayerNorm(d))
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(d, heads, ffn, dropout, activation="gelu", batch_first=True, norm_first=True),
            dec, norm=nn.LayerNorm(d))
        self.dropout = nn.Dropout(dropout)
        # BART's N(0, 0.02) as in dgr: nn.Embedding's default N(0, 1) gives tied logits of std ~14, a loss
        # near 30 and denormal-heavy softmax tails, which would slow the reference for no good reason.
        for emb in (self.embed, self.enc_pos, self.dec_pos):
            nn.init.normal_(emb.weight, std=0.02)

    def forward(self, src, dec_in):
        pos_s = torch.arange(src.size(1)).unsqueeze(0)
        pos_t = torch.arange(dec_in.size(1)).unsqueeze(0)
        x = self.dropout(self.embed(src) + self.enc_pos(pos_s))
        memory = self.encoder(x, src_key_padding_mask=src.eq(PAD))
        y = self.dropout(self.embed(dec_in) + self.dec_pos(pos_t))
        causal = torch.triu(torch.full((dec_in.size(1), dec_in.size(1)), float("-inf")), 1)
        h = self.decoder(y, memory, tgt_mask=causal, tgt_key_padding_mask=dec_in.eq(PAD),
                         memory_key_padding_mask=src.eq(PAD))
        return h @ self.embed.weight.t()


def synthetic_batch(rng, batch, vocab):
    """Sources of 8-20 tokens, targets of 4-11 tokens, right-padded with PAD; ids from 4 up."""
    srcs = [[rng.randrange(4, vocab) for _ in range(rng.randint(8, 20))] for _ in range(batch)]
    tgts = [[rng.randrange(4, vocab) for _ in range(rng.randint(4, 11))] for _ in range(batch)]
    def pad(rows):
        width = max(len(r) for r in rows)
        return torch.tensor([r + [PAD] * (width - len(r)) for r in rows], dtype=torch.long)
    return pad(srcs), pad(tgts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sync-dir", default="")
    ap.add_argument("--sync-count", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    vocab = 8000
    model = Seq2Seq(vocab)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.98), weight_decay=0.01)
    batches = [synthetic_batch(rng, args.batch, vocab) for _ in range(args.warmup + args.steps)]
    if args.sync_dir:
        open(os.path.join(args.sync_dir, f"ready.{os.getpid()}"), "w").close()
        deadline = time.monotonic() + 600
        while sum(n.startswith("ready.") for n in os.listdir(args.sync_dir)) < args.sync_count:
            if time.monotonic() > deadline:
                raise SystemExit("stage1_reference.py: --sync-dir: the other processes did not come")
            time.sleep(0.001)
    times = []
    for i, (src, tgt) in enumerate(batches):
        t0 = time.perf_counter()
        dec_in = torch.cat([torch.full((tgt.size(0), 1), BOS), tgt[:, :-1]], 1)
        dec_in = dec_in.masked_fill(tgt.eq(PAD), PAD)
        logits = model(src, dec_in)
        loss = F.cross_entropy(logits.reshape(-1, vocab), tgt.reshape(-1), ignore_index=PAD, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    total = sum(times)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"impl=python threads={args.threads} batch={args.batch} steps={args.steps} params={n_params} "
          f"step_ms_median={statistics.median(times) * 1e3:.2f} examples_per_s={args.batch * len(times) / total:.2f} "
          f"loss={loss.item():.4f}")


if __name__ == "__main__":
    main()
