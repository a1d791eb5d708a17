"""GLEAM-C trainer: ``torchrun --nproc_per_node=N -m training.gleam_c --config <yaml>`` (or one plain process).

What a run does, per phase of the config (phase 1 from ``model``: ImageNet EfficientNet-Lite0, a fresh
timm backbone or ``init_checkpoint``; every later phase from the previous phase's final weights):

* every epoch, an :class:`~training.sampling.EpochPlanner` plan: modalities resampled to equal shares,
  places unique within a batch, batches grown around hard negatives found with the current weights
  (dynamic similarity sampling, refreshed each epoch);
* each optimizer step: ``accumulate`` micro-batches; per micro-batch every rank embeds its queries and
  references (one shared :class:`gleam_ros.core.encoder.GleamEncoder`, AMP on GPU), features are
  all-gathered across ranks with gradient (:func:`training.losses.gather_with_grad`) and the symmetric
  InfoNCE with learnable temperature is computed over the global batch; DDP sums gradients
  (:func:`training.distributed.sum_allreduce_hook`); AdamW, warm-up + cosine learning rate;
* bookkeeping: ``<out_dir>/log.csv`` (one row per logged step; TensorBoard events too when the
  ``tensorboard`` package is installed), a tqdm bar, a resumable checkpoint ``<out_dir>/<phase>/last``
  at every epoch end and every ``runtime.checkpoint_every`` steps, ``<out_dir>/<phase>/final`` at the end
  of a phase and ``<out_dir>/final`` after the last one (model.safetensors + model.json, loadable with
  :func:`gleam_ros.core.encoder.load_checkpoint` and exportable with ``gleam export onnx --model``).

Re-running the same command resumes exactly where the last checkpoint left off (model, optimizer,
scheduler, grad scaler, epoch plan, position, every RNG), so the next step is the one an uninterrupted
run would have taken. ``--stop-after-steps N`` stops (with a checkpoint) after N optimizer steps of this
invocation; SIGINT / SIGTERM stop at the next step boundary with a checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from gleam_ros.core.encoder import (
    GleamEncoder,
    ModelCard,
    build_encoder,
    fingerprint,
    load_checkpoint,
    save_checkpoint,
)
from gleam_ros.core.errors import ConfigError, GleamError

from .config import PhaseConfig, TrainConfig, load_config
from .datasets import Pair, PairDataset, SourceData, build_source, collate_pairs
from .distributed import (
    DistContext,
    all_gather_rows,
    allreduce_mean_,
    barrier,
    broadcast_,
    cleanup_distributed,
    setup_distributed,
    sum_allreduce_hook,
)
from .losses import SymmetricInfoNCE, gather_labels, gather_with_grad
from .sampling import EpochPlan, EpochPlanner, neighbour_table
from .state import (
    STATE_JSON,
    load_train_state,
    optimizer_from_state,
    optimizer_state,
    python_rng_state,
    save_resumable,
    set_python_rng_state,
)

__all__ = ["LOG_FIELDS", "MultiView", "Trainer", "WarmupCosine", "forward_features", "freeze_backbone_stages", "main",
           "run_training", "set_train_mode"]

_LOG = logging.getLogger("training.gleam_c")
STATE_FORMAT = 1
LOG_FIELDS = ["phase", "epoch", "step", "global_step", "loss", "lr", "logit_scale", "grad_norm", "samples_per_s",
              "elapsed_s"]


class MultiView(nn.Module):
    """Runs one shared encoder over a list of input batches (one DDP forward per training step)."""

    def __init__(self, encoder: GleamEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Embed each ``(n_i, 3, H_i, W_i)`` batch of ``xs``."""
        return [self.encoder(x) for x in xs]


def forward_features(net: nn.Module, tensors: list[torch.Tensor], roles: list[str], device: torch.device,
                     amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Embed images of mixed shapes in their original order: one sub-batch per (role, shape), one ``net`` call."""
    groups: dict[tuple, list[int]] = {}
    for i, (t, role) in enumerate(zip(tensors, roles)):
        groups.setdefault((role, tuple(t.shape)), []).append(i)
    keys = list(groups)
    xs = [torch.stack([tensors[i] for i in groups[k]]).to(device, non_blocking=True) for k in keys]
    ctx = torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    with ctx:
        outs = net(xs)
    order = torch.tensor([i for k in keys for i in groups[k]], device=device)
    feats = torch.cat([o.float() for o in outs], 0)
    return feats[torch.argsort(order)]


class WarmupCosine:
    """Learning rate of optimizer step ``t`` (0-based): linear warm-up over ``warmup`` steps, then cosine to
    ``min_ratio * base``. Stateless apart from the step counter (its whole state)."""

    def __init__(self, base_lr: float, total: int, warmup: int, min_ratio: float = 0.0) -> None:
        self.base = float(base_lr)
        self.total = max(int(total), 1)
        self.warmup = max(0, min(int(warmup), self.total - 1))
        self.min_ratio = float(min_ratio)
        self.step_count = 0

    def lr_at(self, t: int) -> float:
        """Learning rate of step ``t``."""
        if t < self.warmup:
            return self.base * (t + 1) / self.warmup
        p = (t - self.warmup) / max(1, self.total - self.warmup)
        p = min(max(p, 0.0), 1.0)
        return self.base * (self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p)))

    def apply(self, opt: torch.optim.Optimizer) -> float:
        """Set every param group's lr for the next step (times the group's ``lr_scale``, default 1); returns it."""
        lr = self.lr_at(self.step_count)
        for g in opt.param_groups:
            g["lr"] = lr * float(g.get("lr_scale", 1.0))
        return lr

    def state_dict(self) -> dict:
        """JSON-ready state."""
        return {"base": self.base, "total": self.total, "warmup": self.warmup, "min_ratio": self.min_ratio,
                "step_count": self.step_count}

    def load_state_dict(self, d: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.base, self.total, self.warmup = float(d["base"]), int(d["total"]), int(d["warmup"])
        self.min_ratio, self.step_count = float(d["min_ratio"]), int(d["step_count"])


class _CsvLog:
    """Rank-0 CSV log (plus TensorBoard when importable)."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

                self.tb = SummaryWriter(str(path.parent / "tb"))
            except ImportError:
                self.tb = None

    def truncate(self, phases_before: list[str], phase: str, step: int) -> None:
        """Drop rows a resumed run will write again (this phase after ``step``, later phases)."""
        if not self.enabled or not self.path.is_file():
            return
        with self.path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        keep = [r for r in rows if r["phase"] in phases_before or (r["phase"] == phase and int(r["step"]) <= step)]
        self._write(keep, "w")

    def _write(self, rows: list[dict], mode: str) -> None:
        new = mode == "w" or not self.path.is_file()
        with self.path.open(mode, newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
            if new:
                w.writeheader()
            w.writerows(rows)

    def row(self, r: dict) -> None:
        """Append one row."""
        if not self.enabled:
            return
        self._write([r], "a")
        if self.tb is not None:
            for k in ("loss", "lr", "logit_scale", "grad_norm", "samples_per_s"):
                self.tb.add_scalar(f"{r['phase']}/{k}", float(r[k]), int(r["global_step"]))

    def close(self) -> None:
        """Flush TensorBoard."""
        if self.tb is not None:
            self.tb.close()


class _Stop:
    """SIGINT / SIGTERM -> stop at the next step boundary (with a checkpoint)."""

    def __init__(self) -> None:
        self.flag = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def _handler(self, signum: int, frame: Any) -> None:
        self.flag = True

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def set_train_mode(model: nn.Module, freeze_bn: bool) -> nn.Module:
    """``model.train()``, with every batch-norm layer back in eval mode when ``freeze_bn`` (fixed statistics)."""
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    return model


def _single_threaded_worker(worker_id: int) -> None:
    """DataLoader workers: one OpenCV / torch thread each (N workers x all-core thread pools thrash the CPU)."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _param_groups(model: nn.Module, loss_fn: SymmetricInfoNCE, wd: float, backbone_lr_scale: float = 1.0) -> list[dict]:
    """AdamW groups: (backbone | rest) x (decay | no decay), plus the temperature; backbone groups carry
    ``lr_scale = backbone_lr_scale`` (see :meth:`WarmupCosine.apply`)."""
    split: dict[tuple[bool, bool], list] = {(b, d): [] for b in (True, False) for d in (True, False)}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        split[(name.startswith("backbone."), not (p.ndim <= 1 or name.endswith(".bias")))].append(p)
    groups = [{"params": ps, "weight_decay": wd if decay else 0.0, "lr_scale": float(backbone_lr_scale) if bb else 1.0}
              for (bb, decay), ps in split.items()]
    if loss_fn.logit_scale.requires_grad:
        groups.append({"params": [loss_fn.logit_scale], "weight_decay": 0.0, "lr_scale": 1.0})
    return [g for g in groups if g["params"]]


def freeze_backbone_stages(model: GleamEncoder, n: int) -> int:
    """Stop gradients into the backbone's stem and its first ``n`` stages (timm ``blocks``); returns the number
    of frozen parameter tensors. ``n = 0`` freezes nothing. A backbone without ``conv_stem`` / ``blocks`` or
    with fewer than ``n`` stages raises :class:`ConfigError`."""
    if n <= 0:
        return 0
    bb = model.backbone
    blocks = getattr(bb, "blocks", None)
    if blocks is None or not hasattr(bb, "conv_stem"):
        raise ConfigError(f"freeze_stages: backbone {model.card.backbone!r} has no conv_stem / blocks stages")
    if n > len(blocks):
        raise ConfigError(f"freeze_stages: {n} > the {len(blocks)} stages of {model.card.backbone!r}")
    mods = [bb.conv_stem, getattr(bb, "bn1", None), *list(blocks[:n])]
    count = 0
    for m in mods:
        if m is None:
            continue
        for p in m.parameters():
            p.requires_grad_(False)
            count += 1
    return count


class Trainer:
    """Runs the phases of a :class:`TrainConfig` in this process (one rank of a DDP group or alone).

    Args:
        cfg: the configuration.
        ctx: distributed context (:func:`training.distributed.setup_distributed`).
        stop_after: stop (with a checkpoint) after this many optimizer steps of this invocation.
        resume: pick up a phase's ``last`` checkpoint when present (default); False refuses to run over one.
    """

    def __init__(self, cfg: TrainConfig, ctx: DistContext, stop_after: int | None = None, resume: bool = True) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.stop_after = stop_after
        self.resume = resume
        self.out = Path(cfg.out_dir)
        self.steps_run = 0
        self._sources: dict[str, SourceData] = {}
        self._freeze_bn = True
        self.log = _CsvLog(self.out / "log.csv", ctx.is_main)
        rt = cfg.runtime
        dev = ctx.device
        self.amp_dtype = None
        if rt.amp is True or (rt.amp == "auto" and dev.type == "cuda"):
            self.amp_dtype = torch.float16 if rt.amp_dtype == "float16" else torch.bfloat16
        self.use_scaler = self.amp_dtype == torch.float16 and dev.type == "cuda"

    # ---------------------------------------------------------------------------------- data

    def source(self, name: str) -> SourceData:
        """Data set ``name`` (read once; rank 0 first, so that generated data sets are generated once)."""
        if name not in self._sources:
            if self.ctx.is_main:
                self._sources[name] = build_source(name, self.cfg.datasets[name])
            barrier(self.ctx)
            if not self.ctx.is_main:
                self._sources[name] = build_source(name, self.cfg.datasets[name])
        return self._sources[name]

    def phase_pairs(self, phase: PhaseConfig) -> list[Pair]:
        """Training pairs of a phase (its data sets, filtered by its modalities)."""
        pairs = [p for n in phase.datasets for p in self.source(n).train]
        if phase.modalities:
            pairs = [p for p in pairs if p.modality in phase.modalities]
        if not pairs:
            raise ConfigError(f"phase {phase.name}: no training pairs in {phase.datasets}"
                              + (f" with modalities {phase.modalities}" if phase.modalities else ""))
        return pairs

    # ---------------------------------------------------------------------------------- model

    def _initial_model(self) -> tuple[GleamEncoder, ModelCard]:
        m = self.cfg.model
        if m.init_checkpoint:
            model, card = load_checkpoint(m.init_checkpoint)
            card.name = m.name
            return model, card
        card = m.card()
        return build_encoder(card, pretrained=m.pretrained), card

    def _loader(self, dataset: PairDataset, batches: list[list[tuple[int, int]]]) -> DataLoader:
        """Batches of ``dataset``; workers (``runtime.num_workers``) are spawned, not forked.

        A forked worker inherits the parent's thread pools mid-state: after an evaluation or mining pass had
        run OpenCV / torch in threads, the second epoch's worker hung on a futex before its first batch
        (seen on CPU, 2026-12-06). A spawned worker starts from a clean interpreter (a few seconds per epoch).
        """
        nw = self.cfg.runtime.num_workers
        return DataLoader(dataset, batch_sampler=batches, collate_fn=collate_pairs, num_workers=nw,
                          pin_memory=self.ctx.device.type == "cuda", generator=torch.Generator().manual_seed(0),
                          persistent_workers=False, worker_init_fn=_single_threaded_worker if nw else None,
                          multiprocessing_context="spawn" if nw else None)

    @torch.no_grad()
    def mine(self, model: GleamEncoder, dataset: PairDataset, pool: np.ndarray, k: int) -> np.ndarray:
        """Neighbour table (over all pairs, -1 = none) from un-augmented embeddings of the pool's pairs."""
        ctx = self.ctx
        uniq = np.unique(pool)
        shard = uniq[ctx.rank::ctx.world_size]
        bs = max(1, self.cfg.eval.batch_size)
        was_training = model.training
        model.eval()
        qs, rs = [], []
        loader = self._loader(dataset, [[(int(i), -1) for i in shard[s:s + bs]] for s in range(0, len(shard), bs)])
        for batch in loader:
            n = len(batch["q"])
            feats = forward_features(MultiView(model), batch["q"] + batch["r"], ["q"] * n + ["r"] * n, ctx.device,
                                     self.amp_dtype)
            qs.append(feats[:n].cpu())
            rs.append(feats[n:].cpu())
        if was_training:
            set_train_mode(model, self._freeze_bn)
        d = model.dim
        q = torch.cat(qs) if qs else torch.zeros((0, d))
        r = torch.cat(rs) if rs else torch.zeros((0, d))
        ids = all_gather_rows(torch.from_numpy(shard.astype(np.int64)), ctx).cpu().numpy()
        q = all_gather_rows(q, ctx).cpu().numpy()
        r = all_gather_rows(r, ctx).cpu().numpy()
        order = np.argsort(ids)
        ids, q, r = ids[order], q[order], r[order]
        local = neighbour_table(q, r, dataset.labels[ids], k)
        table = np.full((len(dataset), local.shape[1]), -1, dtype=np.int64)
        table[ids] = np.where(local >= 0, ids[np.maximum(local, 0)], -1)
        return table

    # ---------------------------------------------------------------------------------- state

    def _gather_rng(self) -> dict[str, torch.Tensor]:
        ctx = self.ctx
        out = {"rng.torch": all_gather_rows(torch.get_rng_state().view(1, -1), ctx).cpu()}
        if ctx.device.type == "cuda":
            out["rng.cuda"] = all_gather_rows(torch.cuda.get_rng_state(ctx.device).view(1, -1), ctx).cpu()
        return out

    def _save(self, path: Path, model: GleamEncoder, card: ModelCard, meta: dict, tensors: dict) -> None:
        tensors = {**tensors, **self._gather_rng()}  # collective: every rank takes part
        if self.ctx.is_main:
            meta = {**meta, "rng_python": python_rng_state(), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
            save_resumable(path, model, card, meta, tensors)
        barrier(self.ctx)

    def _should_stop(self) -> bool:
        """Collective: stop requested by a signal on any rank, or ``stop_after`` steps done."""
        flag = torch.tensor([float(self._stop.flag)])
        allreduce_mean_(flag, self.ctx)
        return bool(flag.item() > 0) or (self.stop_after is not None and self.steps_run >= self.stop_after)

    # ---------------------------------------------------------------------------------- run

    def run(self) -> dict:
        """Run (or resume) every phase; returns ``{"status": "done" | "stopped", "final": path, ...}``."""
        cfg, ctx = self.cfg, self.ctx
        if cfg.runtime.threads:
            torch.set_num_threads(cfg.runtime.threads)
        if ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
        barrier(ctx)
        prev_final: Path | None = None
        prev_scale: float | None = None
        offset = 0
        with _Stop() as stop:
            self._stop = stop
            for pi, phase in enumerate(cfg.phases):
                pdir = self.out / phase.name
                done_file = pdir / "phase_done.json"
                if done_file.is_file() and (pdir / "final" / "model.json").is_file():
                    done = json.loads(done_file.read_text(encoding="utf-8"))
                    prev_final, prev_scale, offset = pdir / "final", done.get("logit_scale"), offset + int(done["steps"])
                    continue
                if not self.resume and (pdir / "last" / STATE_JSON).is_file():
                    raise ConfigError(f"{pdir / 'last'} exists: resume it (default) or choose another out_dir")
                res = self._run_phase(pi, phase, pdir, prev_final, prev_scale, offset)
                if res["status"] != "done":
                    self.log.close()
                    return res
                prev_final, prev_scale, offset = pdir / "final", res["logit_scale"], offset + res["steps"]
        final = self.out / "final"
        if ctx.is_main and prev_final is not None:
            final.mkdir(parents=True, exist_ok=True)
            for f in prev_final.iterdir():
                if f.is_file():
                    shutil.copy2(f, final / f.name)
        barrier(ctx)
        self.log.close()
        return {"status": "done", "final": str(final), "global_steps": offset}

    def _run_phase(self, pi: int, phase: PhaseConfig, pdir: Path, prev_final: Path | None, prev_scale: float | None,
                   offset: int) -> dict:
        cfg, ctx = self.cfg, self.ctx
        dev = ctx.device
        seed = cfg.seed * 1000 + pi
        resume_state = None
        last = pdir / "last"
        if self.resume and (last / STATE_JSON).is_file():
            model, card = load_checkpoint(last)
            resume_state = load_train_state(last)
            init_fp = resume_state[0]["init_fingerprint"]
        else:
            torch.manual_seed(seed)  # a fresh backbone's random init is part of the run's determinism
            model, card = self._initial_model() if prev_final is None else load_checkpoint(prev_final)
            init_fp = fingerprint(model, card)
        torch.manual_seed(seed * 7919 + ctx.rank)
        pairs = self.phase_pairs(phase)
        dataset = PairDataset(pairs, card.preprocess_config(), phase.augment)
        gb = phase.batch_size * ctx.world_size
        hn = phase.hard_negatives
        groups = ([f"{p.modality}@{p.dataset}" for p in pairs] if phase.balance_datasets else dataset.modalities)
        planner = EpochPlanner(groups, dataset.labels, gb, seed, phase.samples_per_epoch,
                               phase.modality_balance, hn.neighbours, hn.pool)
        acc = phase.accumulate
        steps_per_epoch = planner.n_batches // acc
        if steps_per_epoch < 1:
            raise ConfigError(f"phase {phase.name}: {planner.n_batches} global batches of {gb} per epoch cannot make one "
                              f"optimizer step of {acc} micro-batches (lower batch_size / accumulate or add data)")
        total = steps_per_epoch * phase.epochs
        warm = int(phase.warmup) if phase.warmup >= 1 else int(round(phase.warmup * total))
        self._freeze_bn = phase.freeze_bn
        set_train_mode(model.to(dev), phase.freeze_bn)
        for p in model.parameters():
            p.requires_grad_(True)
        freeze_backbone_stages(model, phase.freeze_stages)
        lc = cfg.loss
        loss_fn = SymmetricInfoNCE(lc.init_temperature, lc.learn_temperature, lc.label_smoothing, lc.max_logit_scale).to(dev)
        if prev_scale is not None:
            with torch.no_grad():
                loss_fn.logit_scale.fill_(math.log(prev_scale))
        net: nn.Module = MultiView(model)
        if ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            net = DDP(net, device_ids=[dev.index] if dev.type == "cuda" else None)
            net.register_comm_hook(None, sum_allreduce_hook)
        opt = torch.optim.AdamW(_param_groups(model, loss_fn, phase.weight_decay, phase.backbone_lr_scale), lr=phase.lr)
        sched = WarmupCosine(phase.lr, total, warm, phase.min_lr_ratio)
        scaler = torch.amp.GradScaler("cuda", enabled=self.use_scaler)
        epoch, pos, step = 0, 0, 0
        plan: EpochPlan | None = None
        phase_hash = cfg.phase_hash(pi)
        if resume_state is not None:
            meta, tens = resume_state
            if meta.get("world_size") != ctx.world_size or meta.get("global_batch") != gb:
                raise ConfigError(f"{last}: saved with {meta.get('world_size')} ranks and global batch "
                                  f"{meta.get('global_batch')}, now {ctx.world_size} and {gb}: resume with the same layout")
            if meta.get("phase_hash") != phase_hash:
                _LOG.warning("%s: the phase's configuration changed since this checkpoint was saved", last)
            optimizer_from_state(opt, meta["optimizer"], tens)
            sched.load_state_dict(meta["scheduler"])
            if meta.get("scaler"):
                scaler.load_state_dict(meta["scaler"])
            with torch.no_grad():
                loss_fn.logit_scale.copy_(tens["loss.logit_scale"].to(dev))
            epoch, pos, step = int(meta["epoch"]), int(meta["pos"]), int(meta["step"])
            if "plan.batches" in tens:
                plan = EpochPlan(tens["plan.batches"].numpy().copy(), tens["plan.seeds"].numpy().copy())
            torch.set_rng_state(tens["rng.torch"][ctx.rank].clone())
            if dev.type == "cuda" and "rng.cuda" in tens:
                torch.cuda.set_rng_state(tens["rng.cuda"][ctx.rank].clone(), dev)
            set_python_rng_state(meta["rng_python"])
            self.log.truncate([p.name for p in cfg.phases[:pi]], phase.name, step)
            if ctx.is_main:
                _LOG.info("phase %s: resuming at epoch %d, step %d/%d from %s", phase.name, epoch, step, total, last)
        else:
            self.log.truncate([p.name for p in cfg.phases[:pi]], phase.name, 0)
            if ctx.is_main:
                _LOG.info("phase %s: %d pairs (%s), %d steps of %d x %d pairs, init %s", phase.name, len(pairs),
                          ", ".join(f"{m}: {dataset.modalities.count(m)}" for m in sorted(set(dataset.modalities))),
                          total, acc, gb, init_fp)

        def state(epoch_: int, pos_: int, plan_: EpochPlan | None) -> tuple[dict, dict]:
            om, ot = optimizer_state(opt)
            meta = {
                "format": STATE_FORMAT, "phase": phase.name, "phase_index": pi, "phase_hash": phase_hash,
                "epoch": epoch_, "pos": pos_, "step": step, "global_step": offset + step, "total_steps": total,
                "steps_per_epoch": steps_per_epoch, "world_size": ctx.world_size, "global_batch": gb, "accumulate": acc,
                "optimizer": om, "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                "init_fingerprint": init_fp, "logit_scale": loss_fn.scale, "config": cfg.source,
            }
            tens = {**ot, "loss.logit_scale": loss_fn.logit_scale.detach().cpu().clone()}
            if plan_ is not None:
                tens["plan.batches"] = torch.from_numpy(plan_.batches)
                tens["plan.seeds"] = torch.from_numpy(plan_.seeds)
            return meta, tens

        def trained_card() -> ModelCard:
            c = ModelCard.from_dict(card.to_dict())
            c.training = {**c.training, "method": "GLEAM-C symmetric InfoNCE, cross-rank all-gather",
                          "phases": [p.name for p in cfg.phases[:pi + 1]], "last_phase": phase.name,
                          "datasets": list(phase.datasets), "steps": step, "global_batch": gb,
                          "logit_scale": round(loss_fn.scale, 4), "config": cfg.source,
                          "modalities": sorted({p.modality for p in pairs}
                                               | set((card.training or {}).get("modalities") or []))}
            return c

        params = [p for g in opt.param_groups for p in g["params"]]
        n_micro = steps_per_epoch * acc
        t_start = time.perf_counter()
        while epoch < phase.epochs:
            if plan is None:
                table = None
                if hn.enabled and hn.neighbours > 0 and epoch >= hn.start_epoch:
                    table = self.mine(model, dataset, planner.draw_pool(epoch), hn.pool)
                plan = planner.plan(epoch, table)
                plan = EpochPlan(broadcast_(torch.from_numpy(plan.batches), ctx).numpy(),
                                 broadcast_(torch.from_numpy(plan.seeds), ctx).numpy())
                pos = 0
            rb, rs = plan.rank_slice(ctx.rank, ctx.world_size)
            batches = [[(int(i), int(s)) for i, s in zip(rb[k], rs[k])] for k in range(pos, n_micro)]
            it = iter(self._loader(dataset, batches))
            bar = None
            if ctx.is_main and cfg.runtime.progress:
                from tqdm import tqdm

                bar = tqdm(total=steps_per_epoch, initial=pos // acc, desc=f"{phase.name} epoch {epoch + 1}/{phase.epochs}",
                           unit="step", dynamic_ncols=True)
            while pos < n_micro:
                if self._should_stop():
                    self._save(last, model, trained_card(), *state(epoch, pos, plan))
                    if bar is not None:
                        bar.close()
                    return {"status": "stopped", "phase": phase.name, "step": step, "checkpoint": str(last)}
                t0 = time.perf_counter()
                lr = sched.apply(opt)
                opt.zero_grad(set_to_none=True)
                loss_val = 0.0
                for micro in range(acc):
                    batch = next(it)
                    sync = micro == acc - 1 or not ctx.distributed
                    with (contextlib.nullcontext() if sync else net.no_sync()):
                        n = len(batch["q"])
                        feats = forward_features(net, batch["q"] + batch["r"], ["q"] * n + ["r"] * n, dev, self.amp_dtype)
                        labels = batch["label"].to(dev)
                        loss = loss_fn(gather_with_grad(feats[:n]), gather_with_grad(feats[n:]), gather_labels(labels))
                        scaler.scale(loss / acc).backward()
                    loss_val += float(loss.detach()) / acc
                    pos += 1
                if loss_fn.logit_scale.grad is not None:
                    allreduce_mean_(loss_fn.logit_scale.grad, ctx)
                scaler.unscale_(opt)
                max_norm = phase.clip_grad_norm if phase.clip_grad_norm > 0 else float("inf")
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
                scaler.step(opt)
                scaler.update()
                sched.step_count += 1
                step += 1
                self.steps_run += 1
                dt = time.perf_counter() - t0
                if step % cfg.runtime.log_every == 0 or step == total:
                    self.log.row({"phase": phase.name, "epoch": epoch, "step": step, "global_step": offset + step,
                                  "loss": f"{loss_val:.6f}", "lr": f"{lr:.6g}", "logit_scale": f"{loss_fn.scale:.4f}",
                                  "grad_norm": f"{grad_norm:.4f}", "samples_per_s": f"{gb * acc / max(dt, 1e-9):.2f}",
                                  "elapsed_s": f"{time.perf_counter() - t_start:.2f}"})
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_val:.4f}", lr=f"{lr:.2e}", T=f"{1 / loss_fn.scale:.4f}")
                    bar.update(1)
                ce = cfg.runtime.checkpoint_every
                if ce and step % ce == 0 and pos < n_micro:
                    self._save(last, model, trained_card(), *state(epoch, pos, plan))
            if bar is not None:
                bar.close()
            epoch += 1
            plan = None
            self._save(last, model, trained_card(), *state(epoch, 0, None))
            if phase.eval_every_epochs and epoch % phase.eval_every_epochs == 0:
                self._evaluate(model, card, phase, epoch, offset + step)
        if ctx.is_main:
            final_card = trained_card()
            save_checkpoint(model, final_card, pdir / "final")
            done = {"phase": phase.name, "steps": step, "fingerprint": fingerprint(model, final_card),
                    "init_fingerprint": init_fp, "logit_scale": loss_fn.scale, "init_from": str(prev_final or "model")}
            (pdir / "phase_done.json").write_text(json.dumps(done, indent=2) + "\n", encoding="utf-8")
            _LOG.info("phase %s done: %d steps -> %s", phase.name, step, pdir / "final")
        barrier(ctx)
        return {"status": "done", "steps": step, "logit_scale": loss_fn.scale}

    def _evaluate(self, model: GleamEncoder, card: ModelCard, phase: PhaseConfig, epoch: int, gstep: int) -> None:
        if self.ctx.is_main:
            from .evaluate import evaluate_sets, format_table

            names = self.cfg.eval.datasets or phase.datasets  # e.g. only the real-map validation set
            sets = [s for n in names for s in self.source(n).eval]
            if sets:
                res = evaluate_sets(model, card, sets, device=str(self.ctx.device), n_rot=self.cfg.eval.n_rot,
                                    batch_size=self.cfg.eval.batch_size, max_queries=self.cfg.eval.max_queries)
                with (self.out / "eval.jsonl").open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"phase": phase.name, "epoch": epoch, "global_step": gstep, "results": res}) + "\n")
                _LOG.info("%s", format_table(res, f"{phase.name} epoch {epoch}"))
            set_train_mode(model, phase.freeze_bn)
        barrier(self.ctx)


def run_training(cfg: TrainConfig, stop_after: int | None = None, resume: bool = True) -> dict:
    """Set up (or join) the process group from the environment, train, leave the group; returns the run summary."""
    import torch.distributed as dist

    preexisting = dist.is_available() and dist.is_initialized()
    ctx = setup_distributed(cfg.runtime.device)
    try:
        return Trainer(cfg, ctx, stop_after=stop_after, resume=resume).run()
    finally:
        if not preexisting:
            cleanup_distributed(ctx)


def main(argv: list[str] | None = None) -> int:
    """``python -m training.gleam_c`` / ``torchrun ... -m training.gleam_c``."""
    ap = argparse.ArgumentParser(prog="python -m training.gleam_c", description="Train the GLEAM-C encoder.")
    ap.add_argument("--config", required=True, help="training YAML (see config/train/)")
    ap.add_argument("--out", default=None, help="override out_dir")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="override key.path=value (YAML value)")
    ap.add_argument("--stop-after-steps", type=int, default=None, help="stop with a checkpoint after N optimizer steps")
    ap.add_argument("--no-resume", action="store_true", help="refuse to continue an existing run in out_dir")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        overrides = list(a.overrides) + ([f"out_dir={a.out}"] if a.out else [])
        cfg = load_config(a.config, overrides)
        res = run_training(cfg, stop_after=a.stop_after_steps, resume=not a.no_resume)
    except GleamError as exc:
        print(f"gleam_c: error: {exc}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
