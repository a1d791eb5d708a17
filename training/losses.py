"""Symmetric InfoNCE with a learnable temperature and a differentiable cross-rank all-gather.

Loss (Sample4Geo / CLIP style): for L2-normalised query features ``q`` and reference features ``r``
of one *global* batch (every rank's samples), logits ``s * q @ r.T`` with ``s = exp(logit_scale)``
(initially ``1 / 0.07``, clamped at ``max_logit_scale``), the loss is the mean of the cross entropy
over rows (query -> reference) and over columns (reference -> query), with label smoothing 0.1.
Pairs that share a label (the same place) are all positives of each other: the target of a row is
uniform over its positives (one-hot when labels are unique, which the sampler arranges).

All-gather: :func:`gather_with_grad` concatenates every rank's features in rank order. Every rank
then computes the identical global loss. Its backward averages the incoming gradient over ranks
(identical on every rank, so the average only removes floating-point drift) and returns the slice
of this rank's rows. So the gradient of a rank's features is exactly the single-process gradient of
those rows, and a rank's parameter gradients are its share of the global gradient: DDP must sum
them (:func:`training.distributed.sum_allreduce_hook`). The temperature, computed in full on every
rank, is averaged instead.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from gleam_ros.core.errors import ConfigError

__all__ = ["SymmetricInfoNCE", "gather_labels", "gather_with_grad"]


def _dist_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward averages the gradient over ranks and keeps this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        x = x.contiguous()
        n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.int64)
        sizes = [torch.zeros_like(n) for _ in range(world)]
        dist.all_gather(sizes, n)
        if any(int(s.item()) != x.shape[0] for s in sizes):
            raise RuntimeError(f"gather_with_grad needs equal row counts on every rank, got {[int(s) for s in sizes]}")
        out = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(out, x)
        ctx.rank, ctx.world, ctx.n = dist.get_rank(), world, x.shape[0]
        return torch.cat(out, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        g = grad.contiguous().clone()
        dist.all_reduce(g, op=dist.ReduceOp.SUM)
        g.div_(ctx.world)
        return g[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` concatenated in rank order, differentiable w.r.t. this rank's rows.

    Without an initialised multi-rank process group it returns ``x`` unchanged.
    """
    if not _dist_active():
        return x
    return _GatherWithGrad.apply(x)


def gather_labels(labels: torch.Tensor) -> torch.Tensor:
    """Every rank's integer labels concatenated in rank order (no gradient)."""
    if not _dist_active():
        return labels
    labels = labels.contiguous()
    out = [torch.empty_like(labels) for _ in range(dist.get_world_size())]
    dist.all_gather(out, labels)
    return torch.cat(out, 0)


class SymmetricInfoNCE(nn.Module):
    """Symmetric InfoNCE over a global batch with a learnable logit scale (log of the inverse temperature).

    Args:
        init_temperature: initial temperature (logit scale ``1 / init_temperature``; 0.07 as in CLIP/Sample4Geo).
        learn_temperature: whether the logit scale is trained.
        label_smoothing: cross-entropy label smoothing (0.1).
        max_logit_scale: upper clamp of ``exp(logit_scale)`` (100 as in CLIP).
    """

    def __init__(
        self,
        init_temperature: float = 0.07,
        learn_temperature: bool = True,
        label_smoothing: float = 0.1,
        max_logit_scale: float = 100.0,
    ) -> None:
        super().__init__()
        if not (0.0 < float(init_temperature) < 10.0):
            raise ConfigError(f"loss.init_temperature must be in (0, 10), got {init_temperature!r}")
        if not (0.0 <= float(label_smoothing) < 1.0):
            raise ConfigError(f"loss.label_smoothing must be in [0, 1), got {label_smoothing!r}")
        if not float(max_logit_scale) > 0:
            raise ConfigError(f"loss.max_logit_scale must be > 0, got {max_logit_scale!r}")
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / float(init_temperature)), dtype=torch.float32), requires_grad=learn_temperature
        )
        self.label_smoothing = float(label_smoothing)
        self.max_logit_scale = float(max_logit_scale)

    @property
    def scale(self) -> float:
        """Current (clamped) ``exp(logit_scale)``."""
        return float(self.logit_scale.detach().exp().clamp(max=self.max_logit_scale))

    def forward(self, q: torch.Tensor, r: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of one global batch: ``q`` and ``r`` are ``(N, D)`` features of the N pairs, ``labels`` ``(N,)`` ints."""
        if q.shape != r.shape or q.ndim != 2:
            raise ValueError(f"query and reference features must both be (N, D), got {tuple(q.shape)} and {tuple(r.shape)}")
        q = q.float()
        r = r.float()
        scale = self.logit_scale.exp().clamp(max=self.max_logit_scale)
        logits = scale * (q @ r.t())
        n = q.shape[0]
        if labels is None:
            target = torch.arange(n, device=q.device)
            rows = F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
            cols = F.cross_entropy(logits.t(), target, label_smoothing=self.label_smoothing)
        else:
            same = (labels.view(-1, 1) == labels.view(1, -1)).float()
            target = same / same.sum(1, keepdim=True)
            rows = F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
            cols = F.cross_entropy(logits.t(), target, label_smoothing=self.label_smoothing)  # `same` is symmetric
        return 0.5 * (rows + cols)
