"""A small synthetic retrieval data set for the pipeline tests: 40 passages (pid = title = pkg-WORD-i, a text
of 12-30 random words), queries "WORD RANDOM tool" with their passage as the only relevant one, split
train 30 / dev 6 / test 4. Deterministic (seed 7). Usage: synthetic_data.py OUT_DIR"""
import os
import random
import sys

out = sys.argv[1]
rng = random.Random(7)
words = ["alpha", "beta", "gamma", "delta", "kernel", "driver", "library", "python", "game", "editor", "network",
         "audio", "video", "font", "daemon", "shell", "parser", "compiler", "image", "viewer", "backup", "mail",
         "client", "server", "plugin", "theme", "icon", "debug", "symbols", "docs"]
with open(os.path.join(out, "corpus.tsv"), "w") as f:
    f.write("pid\ttitle\ttext\n")
    for i in range(40):
        title = f"pkg-{words[i % 30]}-{i}"
        text = " ".join(rng.choice(words) for _ in range(rng.randint(12, 30)))
        f.write(f"{title}\t{title}\t{text}\n")
for split, lo, hi in (("train", 0, 30), ("dev", 30, 36), ("test", 36, 40)):
    with open(os.path.join(out, f"queries.{split}.tsv"), "w") as q, open(os.path.join(out, f"qrels.{split}.tsv"), "w") as r:
        q.write("qid\ttext\n"); r.write("qid\tpid\tgrade\n")
        for i in range(lo, hi):
            q.write(f"q{i}\t{words[i % 30]} {rng.choice(words)} tool\n")
            r.write(f"q{i}\tpkg-{words[i % 30]}-{i}\t1\n")
