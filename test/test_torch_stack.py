"""The torch / torchvision / timm stack imports and works after ensure_torchvision().

The import-order check runs in a fresh interpreter, so nothing imported by other tests (or by
pytest plugins) hides a problem.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from gleam_ros.core import _torchvision_compat as compat

REPO = Path(__file__).resolve().parents[1]

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    assert "torchvision" not in sys.modules and "timm" not in sys.modules
    from gleam_ros.core._torchvision_compat import ensure_torchvision
    active = ensure_torchvision()
    assert ensure_torchvision() is active

    import timm
    import torch
    import torchvision
    from torchvision.transforms import v2 as T

    result = {"shim": active}

    # torchvision.transforms.v2 on a tensor image
    img = torch.randint(0, 256, (3, 80, 100), dtype=torch.uint8)
    tf = T.Compose([T.Resize(48, antialias=True), T.CenterCrop(40), T.ToDtype(torch.float32, scale=True),
                    T.Normalize([0.5] * 3, [0.5] * 3)])
    out = tf(img)
    result["transform_shape"] = list(out.shape)
    result["transform_range"] = [float(out.min()), float(out.max())]

    # a timm model forward
    torch.manual_seed(0)
    m = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0).eval()
    with torch.inference_mode():
        f = m(torch.randn(2, 3, 64, 64))
    result["timm_shape"] = list(f.shape)

    # torchvision.ops.nms against a brute-force greedy reference
    def iou(a, b):
        ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = ix * iy
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union

    def brute(boxes, scores, thr):
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        keep = []
        for i in order:
            if all(iou(boxes[i], boxes[k]) <= thr for k in keep):
                keep.append(i)
        return keep

    g = torch.Generator().manual_seed(1)
    checks = []
    for n, thr in [(0, 0.5), (1, 0.5), (60, 0.3), (200, 0.5), (150, 0.7)]:
        xy = torch.rand(n, 2, generator=g) * 100
        wh = torch.rand(n, 2, generator=g) * 40 + 1
        boxes = torch.cat([xy, xy + wh], 1)
        scores = torch.randperm(max(n, 1), generator=g)[:n].float() / max(n, 1)  # distinct scores
        got = torchvision.ops.nms(boxes, scores, thr).tolist()
        checks.append(got == brute(boxes.tolist(), scores.tolist(), thr))
    # hand case: 0 and 1 overlap (IoU 0.68), 2 is apart, 3 overlaps 2 slightly (IoU 0.11)
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [28, 28, 38, 38]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.95, 0.5, 0.6])
    result["hand"] = torchvision.ops.nms(boxes, scores, 0.5).tolist()
    result["hand_batched"] = torchvision.ops.batched_nms(boxes, scores, torch.tensor([0, 1, 0, 0]), 0.5).tolist()
    result["nms_checks"] = checks
    result["nms_dtype"] = str(torchvision.ops.nms(boxes, scores, 0.5).dtype)

    if active:
        try:
            torchvision.ops.roi_align(torch.zeros(1, 1, 8, 8), torch.zeros(1, 5), 2)
            result["roi_align"] = "ran"
        except RuntimeError as exc:
            result["roi_align"] = str(exc)
    print("RESULT" + json.dumps(result))
    """
)


def test_fresh_interpreter_stack():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "2")
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, cwd=REPO, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    r = json.loads(line[len("RESULT") :])
    assert r["transform_shape"] == [3, 40, 40]
    assert -1.0 <= r["transform_range"][0] <= r["transform_range"][1] <= 1.0
    assert r["timm_shape"] == [2, 1280]
    assert all(r["nms_checks"]), r["nms_checks"]
    assert r["hand"] == [1, 3, 2]
    assert r["hand_batched"] == [1, 0, 3, 2]
    assert r["nms_dtype"] == "torch.int64"
    if r["shim"]:
        assert "torchvision::roi_align is unavailable" in r["roi_align"]


def test_ensure_torchvision_is_idempotent():
    first = compat.ensure_torchvision()
    libs = len(compat._LIBS)
    meta_path = list(sys.meta_path)
    assert compat.ensure_torchvision() is first
    assert compat.ensure_torchvision() is first
    assert len(compat._LIBS) == libs  # nothing registered twice
    assert sys.meta_path == meta_path


def test_no_op_once_torchvision_is_imported(monkeypatch):
    compat.ensure_torchvision()
    import torchvision  # noqa: F401 - importable after the shim (or natively)

    monkeypatch.setattr(compat, "_DONE", False)
    monkeypatch.setattr(compat, "_SHIM_ACTIVE", False)
    libs = len(compat._LIBS)
    assert compat.ensure_torchvision() is False
    assert len(compat._LIBS) == libs


def test_no_op_without_torchvision(monkeypatch):
    monkeypatch.setattr(compat, "_DONE", False)
    monkeypatch.setattr(compat, "_SHIM_ACTIVE", False)
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    real_find_spec = compat.importlib.util.find_spec
    monkeypatch.setattr(
        compat.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "torchvision" else real_find_spec(name, *a),
    )
    libs = len(compat._LIBS)
    assert compat.ensure_torchvision() is False
    assert len(compat._LIBS) == libs


def _brute_nms(boxes, scores, thr):
    def iou(a, b):
        ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = ix * iy
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    keep = []
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):
        if all(iou(boxes[i], boxes[k]) <= thr for k in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", range(4))
def test_pure_torch_nms_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    n = 120
    xy = torch.rand(n, 2, generator=g) * 60
    wh = torch.rand(n, 2, generator=g) * 30 + 0.5
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(n, generator=g)
    for thr in (0.0, 0.2, 0.5, 0.9):
        got = compat._nms_reference(boxes, scores, thr)
        assert got.dtype == torch.int64
        assert got.tolist() == _brute_nms(boxes.tolist(), scores.tolist(), thr)
    assert compat._nms_reference(boxes[:0], scores[:0], 0.5).shape == (0,)
    with pytest.raises(RuntimeError):
        compat._nms_reference(boxes[:, :3], scores, 0.5)


def test_recovers_after_an_early_failed_import():
    """A caller that imported torchvision too early (and caught the error) is repaired too."""
    script = textwrap.dedent(
        """
        import sys
        try:
            import torchvision  # noqa: F401
        except RuntimeError:
            pass
        from gleam_ros.core._torchvision_compat import ensure_torchvision
        ensure_torchvision()
        import timm  # noqa: F401
        import torch
        import torchvision
        keep = torchvision.ops.nms(torch.tensor([[0, 0, 4, 4], [0, 0, 4, 4.0]]), torch.tensor([0.2, 0.7]), 0.5)
        print("KEEP", keep.tolist())
        """
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "KEEP [1]" in proc.stdout
