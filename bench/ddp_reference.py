#!/usr/bin/python3
"""PyTorch DDP reference for bench/train_step_bench.cpp: the same nn.Transformer (d_model 256, 8 heads,
2+2 layers, ffn 2048), batch 16, source 32, target 16, Adam, one thread per process, DDP over gloo,
started with torch.multiprocessing.spawn (torchrun crashes on Debian's Python 3.11).
Usage: /usr/bin/python3 bench/ddp_reference.py --ranks 2 --steps 30
Prints one key=value line like the C++ benchmark."""
import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, world_size, steps, warmup, threads, port, queue):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.manual_seed(0)
    model = torch.nn.Transformer(256, 8, 2, 2, 2048, dropout=0.1)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=1e-4)
    torch.manual_seed(1 + rank)
    src, tgt, target = torch.randn(32, 16, 256), torch.randn(16, 16, 256), torch.randn(16, 16, 256)
    times = []
    for step in range(warmup + steps):
        dist.barrier()
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(ddp(src, tgt), target)
        loss.backward()
        optimizer.step()
        ms = torch.tensor([(time.perf_counter() - start) * 1000.0])
        dist.all_reduce(ms, op=dist.ReduceOp.MAX)
        if step >= warmup:
            times.append(ms.item())
    if rank == 0:
        queue.put(times)
    dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--port", type=int, default=29533)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.spawn(worker, args=(args.ranks, args.steps, args.warmup, args.threads, args.port, queue), nprocs=args.ranks)
    times = queue.get()
    params = sum(p.numel() for p in torch.nn.Transformer(256, 8, 2, 2, 2048).parameters())
    print(f"impl=pytorch_ddp_gloo ranks={args.ranks} threads={args.threads} params={params} steps={args.steps} "
          f"step_ms_min={min(times):.1f} step_ms_median={statistics.median(times):.1f}")


if __name__ == "__main__":
    main()
