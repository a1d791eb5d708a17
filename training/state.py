"""Training state on disk: safetensors for tensors, JSON for everything else, never pickle.

A resumable checkpoint directory (``<out_dir>/<phase>/last``) holds:

* ``model.safetensors`` + ``model.json``: the encoder, written by
  :func:`gleam_ros.core.encoder.save_checkpoint` (so :func:`~gleam_ros.core.encoder.load_checkpoint`,
  ``gleam export onnx --model`` and the nodes read it as is);
* ``train_state.safetensors``: optimizer moments, the learnable temperature, the current epoch plan,
  every rank's torch (and CUDA) RNG state;
* ``train_state.json``: counters (epoch, position in the epoch, steps), optimizer hyper-parameters,
  scheduler and AMP grad-scaler state, numpy / python RNG states, config hash, world size.

The directory is written next to the old one and swapped in with renames, so an interruption while
saving leaves the previous state intact.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gleam_ros.core.encoder import GleamEncoder, ModelCard, save_checkpoint
from gleam_ros.core.errors import ModelError

__all__ = [
    "STATE_JSON",
    "STATE_TENSORS",
    "load_train_state",
    "optimizer_from_state",
    "optimizer_state",
    "python_rng_state",
    "save_resumable",
    "set_python_rng_state",
]

STATE_JSON = "train_state.json"
STATE_TENSORS = "train_state.safetensors"


def optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict, dict[str, torch.Tensor]]:
    """Split ``opt.state_dict()`` into a JSON part and named tensors (``optim.<param>.<key>``)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v.detach().to("cpu").contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    groups = []
    for g in sd["param_groups"]:
        g = dict(g)
        for k, v in list(g.items()):
            if torch.is_tensor(v):
                g[k] = v.item()
            elif isinstance(v, tuple):
                g[k] = list(v)
        groups.append(g)
    return {"param_groups": groups, "scalars": scalars}, tensors


def optimizer_from_state(opt: torch.optim.Optimizer, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`optimizer_state`: load into an optimizer built over the same parameters."""
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        if not name.startswith("optim."):
            continue
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = t
    for pid, st in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(st)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    opt.load_state_dict({"state": state, "param_groups": groups})


def python_rng_state() -> dict:
    """numpy's and python's global RNG states as JSON-ready data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    v, internal, gauss = random.getstate()
    return {"numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "python": [v, list(internal), gauss]}


def set_python_rng_state(d: dict) -> None:
    """Restore what :func:`python_rng_state` returned."""
    kind, keys, pos, has_gauss, cached = d["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    v, internal, gauss = d["python"]
    random.setstate((v, tuple(internal), gauss))


def save_resumable(path: str | os.PathLike, model: GleamEncoder, card: ModelCard, meta: dict,
                   tensors: dict[str, torch.Tensor]) -> Path:
    """Write a resumable checkpoint directory atomically (see module doc); returns its path."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    save_checkpoint(model, card, tmp)
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp / STATE_TENSORS))
    (tmp / STATE_JSON).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    old = path.with_name(f".{path.name}.old{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old)
    return path


def load_train_state(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read ``train_state.json`` and ``train_state.safetensors`` of a resumable checkpoint directory."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        meta = json.loads((path / STATE_JSON).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path / STATE_JSON}: training state not found") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path / STATE_JSON}: cannot read training state: {exc}") from None
    try:
        tensors = load_file(str(path / STATE_TENSORS), device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ModelError(f"{path / STATE_TENSORS}: cannot read training tensors: {exc}") from None
    return meta, tensors
