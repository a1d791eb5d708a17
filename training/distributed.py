"""Process-group setup and the few collectives the trainer needs (gloo on CPU, nccl on GPU).

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`setup_distributed` then joins the group (``env://``). Without them (one plain process) it
returns a single-rank context and every helper here is a no-op.

Gradient convention (see :mod:`training.losses`): every rank computes the *same* global loss on the
all-gathered features, so the gradient a rank gets for its own parameters is its share of the global
gradient; DDP must therefore **sum** gradients over ranks (:func:`sum_allreduce_hook`), not average
them as it does by default. Parameters outside DDP whose gradient every rank computes in full (the
learnable temperature) are averaged with :func:`allreduce_mean_`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from gleam_ros.core.errors import ConfigError

__all__ = [
    "DistContext",
    "all_gather_rows",
    "allreduce_mean_",
    "barrier",
    "broadcast_",
    "cleanup_distributed",
    "resolve_device",
    "setup_distributed",
    "sum_allreduce_hook",
]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size, its device and the backend (None = no group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        """True when a process group with more than one rank is active."""
        return self.backend is not None and self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0 (logging, checkpoints, data generation)."""
        return self.rank == 0


def resolve_device(pref: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available else ``cpu``; ``cpu``/``cuda[:N]`` as given."""
    pref = str(pref or "auto")
    if pref == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(pref)
    except (RuntimeError, TypeError):
        raise ConfigError(f"runtime.device {pref!r} not understood (auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"runtime.device {pref!r} requested but CUDA is not available to torch")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    elif dev.type != "cpu":
        raise ConfigError(f"runtime.device {pref!r} not supported (auto, cpu, cuda or cuda:N)")
    return dev


def setup_distributed(device: str = "auto") -> DistContext:
    """Join the process group described by the torchrun environment, or return a single-rank context.

    The backend is ``nccl`` when the device is CUDA, else ``gloo``. An already initialised default
    group (e.g. a test that called ``init_process_group`` itself) is reused.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
        dev = resolve_device(device, local_rank)
        return DistContext(rank, world, local_rank, dev, dist.get_backend())
    dev = resolve_device(device, local_rank)
    if world <= 1:
        return DistContext(0, 1, 0, dev, None)
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but torch.distributed is not available in this torch build")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend=backend, init_method="env://", world_size=world, rank=rank)
    return DistContext(rank, world, local_rank, dev, backend)


def cleanup_distributed(ctx: DistContext) -> None:
    """Leave the process group if this context joined one."""
    if ctx.backend is not None and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op for one process)."""
    if ctx.distributed:
        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.device.index or 0])
        else:
            dist.barrier()


def broadcast_(t: torch.Tensor, ctx: DistContext, src: int = 0) -> torch.Tensor:
    """Broadcast ``t`` in place from ``src`` (moved through the backend's device); returns ``t``."""
    if not ctx.distributed:
        return t
    buf = t.to(ctx.device) if ctx.backend == "nccl" else t
    dist.broadcast(buf, src)
    if buf is not t:
        t.copy_(buf.cpu())
    return t


def allreduce_mean_(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Average ``t`` over ranks in place (a CPU tensor goes through the GPU under nccl); returns ``t``."""
    if ctx.distributed:
        buf = t.to(ctx.device) if ctx.backend == "nccl" and t.device.type != "cuda" else t
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        buf.div_(ctx.world_size)
        if buf is not t:
            t.copy_(buf.cpu())
    return t


def all_gather_rows(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate every rank's ``x`` along dim 0 in rank order (no autograd; row counts may differ)."""
    if not ctx.distributed:
        return x
    dev = ctx.device if ctx.backend == "nccl" else torch.device("cpu")
    x = x.detach().to(dev).contiguous()
    n = torch.tensor([x.shape[0]], device=dev, dtype=torch.int64)
    sizes = [torch.zeros_like(n) for _ in range(ctx.world_size)]
    dist.all_gather(sizes, n)
    sizes = [int(s.item()) for s in sizes]
    m = max(sizes)
    pad = torch.zeros((m, *x.shape[1:]), dtype=x.dtype, device=dev)
    pad[: x.shape[0]] = x
    out = [torch.zeros_like(pad) for _ in range(ctx.world_size)]
    dist.all_gather(out, pad)
    return torch.cat([o[:s] for o, s in zip(out, sizes)], 0)


def sum_allreduce_hook(state, bucket):  # annotations are set below: DDP checks them against the real types
    """DDP communication hook: all-reduce gradient buckets with SUM (DDP's default divides by the world size).

    Used because each rank back-propagates the full global contrastive loss, so per-rank gradients are
    shares of the global gradient that add up to it.
    """
    group = state if isinstance(state, dist.ProcessGroup) else None
    fut = dist.all_reduce(bucket.buffer(), group=group, async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


# DDP compares the hook's annotations with the real types; this module's postponed (string) annotations would fail.
sum_allreduce_hook.__annotations__ = {"state": object, "bucket": dist.GradBucket, "return": torch.futures.Future[torch.Tensor]}
