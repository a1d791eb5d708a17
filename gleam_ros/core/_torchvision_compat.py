"""Make ``torchvision`` (and so ``timm``) importable when its compiled ops do not load.

A torchvision wheel built for another torch (e.g. the CUDA wheel from PyPI next to a CPU-only
torch) ships a ``_C`` extension that fails to load, and ``import torchvision`` then dies in
``torchvision/_meta_registrations.py`` with ``operator torchvision::nms does not exist``. timm
imports torchvision, so the whole encoder stack goes with it.

:func:`ensure_torchvision` must run before the first import of torchvision or timm. On a normal
machine (desktop GPU, Jetson, matching CPU wheels) the extension loads and nothing else
happens. Only when it fails, the op schemas are declared here, ``nms`` and ``deform_conv2d`` get pure-torch
implementations (same semantics as torchvision's kernels) and every other op raises a
clear :class:`RuntimeError` when called. The encoder itself uses none of these ops.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import threading

import torch

__all__ = ["ensure_torchvision"]

_LOG = logging.getLogger(__name__)

# Schemas of torchvision 0.28's compiled library (``torchvision/csrc/ops/*.cpp``).
_SCHEMAS: dict[str, str] = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align": (
        "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor"
    ),
    "_roi_align_backward": (
        "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
        "int sampling_ratio, bool aligned) -> Tensor"
    ),
    "qroi_align": (
        "qroi_align(Tensor input, Tensor rois, float input_scale, int input_zero_point, float rois_scale, "
        "int rois_zero_point, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
        "int sampling_ratio, bool aligned) -> Tensor"
    ),
    "ps_roi_align": (
        "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width, int sampling_ratio) -> (Tensor, Tensor)"
    ),
    "_ps_roi_align_backward": (
        "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
        "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, SymInt batch_size, "
        "SymInt channels, SymInt height, SymInt width) -> Tensor"
    ),
    "roi_pool": (
        "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width) -> (Tensor, Tensor)"
    ),
    "_roi_pool_backward": (
        "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, "
        "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, "
        "SymInt height, SymInt width) -> Tensor"
    ),
    "ps_roi_pool": (
        "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width) -> (Tensor, Tensor)"
    ),
    "_ps_roi_pool_backward": (
        "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
        "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, "
        "SymInt height, SymInt width) -> Tensor"
    ),
    "deform_conv2d": (
        "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, "
        "SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, "
        "SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) -> Tensor"
    ),
    "_deform_conv2d_backward": (
        "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, Tensor mask, "
        "Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, "
        "SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
    "box_iou_rotated": "box_iou_rotated(Tensor boxes1, Tensor boxes2) -> Tensor",
    "_cuda_version": "_cuda_version() -> int",
}

_UNAVAILABLE_MSG = "torchvision::{op} is unavailable: torchvision's compiled ops do not load next to this torch build"

_LOCK = threading.Lock()
_DONE = False
_SHIM_ACTIVE = False
# torch.library.Library objects must stay alive, or their registrations are dropped.
_LIBS: list = []


def _find_extension() -> str | None:
    """Path of torchvision's ``_C`` extension, found without importing torchvision."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    finder_details = (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES)
    for location in spec.submodule_search_locations:
        ext = importlib.machinery.FileFinder(location, finder_details).find_spec("_C")
        if ext is not None and ext.origin and os.path.isfile(ext.origin):
            return ext.origin
    return None


def _op_defined(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _nms_reference(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS as torchvision's kernel: keep indices sorted by decreasing score.

    A box is dropped when its IoU with an already kept, higher-scoring box is > ``iou_threshold``.
    """
    if dets.dim() != 2 or dets.size(1) != 4:
        raise RuntimeError(f"boxes should be a 2d tensor with 4 columns, got shape {tuple(dets.shape)}")
    if scores.dim() != 1 or scores.size(0) != dets.size(0):
        raise RuntimeError(f"scores should be a 1d tensor of {dets.size(0)} elements, got {tuple(scores.shape)}")
    device = dets.device
    n = dets.size(0)
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=device)
    work_dtype = torch.float64 if dets.dtype == torch.float64 else torch.float32
    boxes = dets.detach().to("cpu", work_dtype)
    order = torch.argsort(scores.detach().to("cpu"), descending=True, stable=True)
    boxes = boxes[order]
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    suppressed = torch.zeros(n, dtype=torch.bool)
    keep: list[int] = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        if i + 1 == n:
            break
        xx1 = torch.maximum(x1[i], x1[i + 1 :])
        yy1 = torch.maximum(y1[i], y1[i + 1 :])
        xx2 = torch.minimum(x2[i], x2[i + 1 :])
        yy2 = torch.minimum(y2[i], y2[i + 1 :])
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        iou = inter / (areas[i] + areas[i + 1 :] - inter)
        suppressed[i + 1 :] |= iou > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long)].to(device)


def _qnms_reference(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    return _nms_reference(dets.to(torch.float32), scores.to(torch.float32), iou_threshold)


def _deform_conv2d_reference(
    inp: torch.Tensor, weight: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor,
    stride_h: int, stride_w: int, pad_h: int, pad_w: int, dil_h: int, dil_w: int,
    groups: int, offset_groups: int, use_mask: bool,
) -> torch.Tensor:
    """Deformable convolution v1/v2 as torchvision's kernel (forward only), with ``grid_sample``.

    Kernel tap ``k = i * kw + j`` of offset group ``g`` samples the input at
    ``(y, x) = (oy * stride_h - pad_h + i * dil_h + offset[2 (g K + k)], ox * stride_w - pad_w + j * dil_w
    + offset[2 (g K + k) + 1])`` bilinearly, zero outside the image (torchvision's
    ``bilinear_interpolate``), times ``mask[g K + k]`` when ``use_mask``. Used by ALIKED's descriptor
    blocks (the learned verifier features) when the compiled op is missing.
    """
    b, cin, h, w = inp.shape
    cout, cin_g, kh, kw = weight.shape
    ho, wo = offset.shape[-2:]
    taps = kh * kw
    og = int(offset_groups)
    dev, dt = inp.device, inp.dtype
    oy = torch.arange(ho, device=dev, dtype=dt) * stride_h - pad_h
    ox = torch.arange(wo, device=dev, dtype=dt) * stride_w - pad_w
    ki = torch.arange(kh, device=dev, dtype=dt).repeat_interleave(kw) * dil_h  # (K,)
    kj = torch.arange(kw, device=dev, dtype=dt).repeat(kh) * dil_w
    off = offset.reshape(b, og, taps, 2, ho, wo)
    ys = oy.view(1, 1, 1, ho, 1) + ki.view(1, 1, taps, 1, 1) + off[:, :, :, 0]  # (B, G, K, Ho, Wo)
    xs = ox.view(1, 1, 1, 1, wo) + kj.view(1, 1, taps, 1, 1) + off[:, :, :, 1]
    # align_corners=True: pixel centre i sits at -1 + 2 i / (n - 1); zeros padding = torchvision's rule
    grid = torch.stack((xs * (2.0 / max(w - 1, 1)) - 1.0, ys * (2.0 / max(h - 1, 1)) - 1.0), dim=-1)
    grid = grid.reshape(b * og, taps * ho, wo, 2)
    src = inp.reshape(b * og, cin // og, h, w)
    cols = torch.nn.functional.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    cols = cols.reshape(b, og, cin // og, taps, ho, wo)
    if use_mask:
        cols = cols * mask.reshape(b, og, 1, taps, ho, wo)
    cols = cols.reshape(b, groups, cin_g * taps, ho * wo)
    wmat = weight.reshape(groups, cout // groups, cin_g * taps)
    out = torch.einsum("gok,bgkp->bgop", wmat, cols).reshape(b, cout, ho, wo)
    if bias is not None and bias.numel():
        out = out + bias.view(1, -1, 1, 1)
    return out


def _no_cuda_version() -> int:
    return -1  # what torchvision's own op answers when built without CUDA


def _unavailable(op: str):
    def kernel(*args, **kwargs):
        raise RuntimeError(_UNAVAILABLE_MSG.format(op=op))

    kernel.__name__ = f"unavailable_{op.lstrip('_')}"
    return kernel


class _HasOpsPatcher(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import hook: once ``torchvision.extension`` has run, make its ``_has_ops()`` answer True.

    torchvision gates ``torchvision.ops.nms`` and its meta/autograd registrations on
    ``_has_ops()``; the ops now exist (declared and implemented here), so the gate must open.
    """

    _TARGET = "torchvision.extension"

    def __init__(self) -> None:
        self._inner: importlib.abc.Loader | None = None

    def find_spec(self, fullname, path, target=None):
        if fullname != self._TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        self._inner = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._inner.create_module(spec) if hasattr(self._inner, "create_module") else None

    def exec_module(self, module):
        try:
            self._inner.exec_module(module)
            module._has_ops = lambda: True
        finally:
            if self in sys.meta_path:
                sys.meta_path.remove(self)


def _install_shim() -> None:
    missing = {name: schema for name, schema in _SCHEMAS.items() if not _op_defined(name)}
    if missing:
        lib_def = torch.library.Library("torchvision", "DEF")
        _LIBS.append(lib_def)
        for schema in missing.values():
            lib_def.define(schema)
        impls = {}
        for dispatch_key in ("CPU", "CUDA"):
            try:
                impls[dispatch_key] = torch.library.Library("torchvision", "IMPL", dispatch_key)
            except RuntimeError:  # pragma: no cover - a build without this key
                continue
            _LIBS.append(impls[dispatch_key])
        for name in missing:
            if name == "_cuda_version":
                lib_cev = torch.library.Library("torchvision", "IMPL", "CompositeExplicitAutograd")
                _LIBS.append(lib_cev)
                lib_cev.impl(name, _no_cuda_version)
                continue
            kernel = {"nms": _nms_reference, "qnms": _qnms_reference,
                      "deform_conv2d": _deform_conv2d_reference}.get(name) or _unavailable(name)
            for lib in impls.values():
                lib.impl(name, kernel)
    extension = sys.modules.get("torchvision.extension")
    if extension is not None:  # left behind by an earlier, failed ``import torchvision``
        extension._has_ops = lambda: True
    elif not any(isinstance(f, _HasOpsPatcher) for f in sys.meta_path):
        sys.meta_path.insert(0, _HasOpsPatcher())


def ensure_torchvision() -> bool:
    """Make ``import torchvision`` / ``import timm`` work; call before either is imported.

    Returns True when the compatibility shim is active (torchvision's compiled ops could not be
    loaded and are replaced: ``nms``/``qnms``/``deform_conv2d`` by pure-torch implementations, the others by
    stubs raising :class:`RuntimeError`), False when nothing had to be done (the extension loads,
    torchvision was already imported, or torchvision is not installed). Idempotent and
    thread-safe; later calls return the first call's answer.
    """
    global _DONE, _SHIM_ACTIVE
    with _LOCK:
        if _DONE:
            return _SHIM_ACTIVE
        _DONE = True
        if "torchvision" in sys.modules:
            return False
        try:
            if importlib.util.find_spec("torchvision") is None:
                return False
            path = _find_extension()
        except (ImportError, ValueError):
            return False
        if path is None:
            reason = "no _C extension next to torchvision"
        else:
            try:
                torch.ops.load_library(path)
                return False
            except (OSError, RuntimeError, ImportError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
        _install_shim()
        _SHIM_ACTIVE = True
        _LOG.debug("torchvision compiled ops unavailable (%s); using pure-torch nms and stub ops", reason)
        return True
