"""Training throughput: W-process DDP + cross-rank all-gather vs one process, same global batch, on CPU.

``python -m training.bench_throughput [--world 2] [--threads 2] [--global-batch 16] [--size 128] [--steps 8]``

Both runs execute the trainer's step (:func:`training.gleam_c.forward_features`, the all-gathered symmetric
InfoNCE, DDP with the summing gradient hook, AdamW) on the same in-memory random images, each in fresh
processes: one process with ``--threads`` intra-op threads and the whole global batch, then ``--world``
gloo ranks with ``threads / world`` threads and ``global_batch / world`` pairs each (the same CPU budget).
Data loading is left out, so the ratio isolates the cost and benefit of splitting the step across
processes. Reported: median step time, pairs per second, and the ratio (DDP / single).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["main", "measure"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, args: dict, out: str) -> None:
    from gleam_ros.core.encoder import GleamEncoder, ModelCard

    from .distributed import DistContext, allreduce_mean_, sum_allreduce_hook
    from .gleam_c import MultiView, forward_features
    from .losses import SymmetricInfoNCE, gather_labels, gather_with_grad

    torch.set_num_threads(max(1, args["threads"] // world))
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        card = ModelCard(backbone=args["backbone"], input_size=args["size"], pretrained="none", name="bench")
        model = GleamEncoder(card).train()
        net = MultiView(model)
        ctx = DistContext(rank, world, rank, torch.device("cpu"), "gloo" if world > 1 else None)
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            net = DDP(net)
            net.register_comm_hook(None, sum_allreduce_hook)
        loss_fn = SymmetricInfoNCE()
        opt = torch.optim.AdamW([*model.parameters(), loss_fn.logit_scale], lr=1e-4)
        b = args["global_batch"] // world
        g = torch.Generator().manual_seed(1 + rank)
        q = torch.randn(b, 3, args["size"], args["size"], generator=g)
        r = torch.randn(b, 3, args["size"], args["size"], generator=g)
        labels = torch.arange(rank * b, (rank + 1) * b)
        times = []
        for i in range(args["warmup"] + args["steps"]):
            if world > 1:
                dist.barrier()
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            feats = forward_features(net, list(q) + list(r), ["q"] * b + ["r"] * b, torch.device("cpu"))
            loss = loss_fn(gather_with_grad(feats[:b]), gather_with_grad(feats[b:]), gather_labels(labels))
            loss.backward()
            allreduce_mean_(loss_fn.logit_scale.grad, ctx)
            opt.step()
            if world > 1:
                dist.barrier()
            if i >= args["warmup"]:
                times.append(time.perf_counter() - t0)
        if rank == 0:
            Path(out).write_text(json.dumps({"step_s": times}))
    finally:
        if world > 1:
            dist.destroy_process_group()


def measure(world: int, args: dict) -> dict:
    """Median step time and pairs/s of one configuration, run in ``world`` fresh processes."""
    with tempfile.TemporaryDirectory() as d:
        out = str(Path(d) / "t.json")
        mp.spawn(_worker, args=(world, _free_port(), args, out), nprocs=world, join=True)
        times = json.loads(Path(out).read_text())["step_s"]
    med = statistics.median(times)
    return {"world": world, "threads_per_process": max(1, args["threads"] // world), "per_rank_batch":
            args["global_batch"] // world, "median_step_s": med, "pairs_per_s": args["global_batch"] / med,
            "step_s": times}


def main(argv: list[str] | None = None) -> int:
    """``python -m training.bench_throughput``."""
    ap = argparse.ArgumentParser(prog="python -m training.bench_throughput", description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="total intra-op threads (split over the ranks)")
    ap.add_argument("--global-batch", type=int, default=16, help="pairs per step over all ranks")
    ap.add_argument("--backbone", default="tf_efficientnet_lite0")
    ap.add_argument("--size", type=int, default=128, help="input size (px)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    a = ap.parse_args(argv)
    if a.global_batch % a.world:
        print("bench_throughput: --global-batch must be divisible by --world", file=sys.stderr)
        return 2
    args = {"threads": a.threads, "global_batch": a.global_batch, "backbone": a.backbone, "size": a.size,
            "steps": a.steps, "warmup": a.warmup}
    single = measure(1, args)
    multi = measure(a.world, args)
    res = {"config": args, "single": single, "ddp": multi, "ratio_ddp_over_single": multi["pairs_per_s"] / single["pairs_per_s"],
           "cpu_count": os.cpu_count(), "torch": torch.__version__}
    print(f"| run | processes x threads | pairs/step | median step (s) | pairs/s |\n|---|---|---|---|---|\n"
          f"| single | 1 x {single['threads_per_process']} | {a.global_batch} | {single['median_step_s']:.3f} | "
          f"{single['pairs_per_s']:.1f} |\n"
          f"| DDP + all-gather | {a.world} x {multi['threads_per_process']} | {a.global_batch} | "
          f"{multi['median_step_s']:.3f} | {multi['pairs_per_s']:.1f} |\n\n"
          f"throughput ratio DDP / single: {res['ratio_ddp_over_single']:.2f}")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
