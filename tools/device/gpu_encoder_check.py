"""GPU check (run on a machine with CUDA torch): the torchvision shim stays inactive, and encoder latency.

Usage: python3 tools/device/gpu_encoder_check.py   (from the repository root; needs torch, timm, torchvision)
"""

import json
import sys
import time

sys.path.insert(0, ".")

from gleam_ros.core._torchvision_compat import ensure_torchvision  # noqa: E402

shim_active = ensure_torchvision()
import torch  # noqa: E402
import torchvision  # noqa: E402

from gleam_ros.core.encoder import GleamEncoder, default_card  # noqa: E402


def bench(model, x, n=50):
    """Median milliseconds per forward pass of ``x``."""
    times = []
    with torch.inference_mode():
        for _ in range(10):
            model(x)
        for _ in range(n):
            if x.is_cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(x)
            if x.is_cuda:
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


card = default_card()
out = {"torch": torch.__version__, "torchvision": torchvision.__version__, "shim_active": shim_active,
       "nms_cuda": None, "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=torch.float32)
scores = torch.tensor([0.9, 0.8, 0.7])
if torch.cuda.is_available():
    out["nms_cuda"] = torchvision.ops.nms(boxes.cuda(), scores.cuda(), 0.5).cpu().tolist()
for dev in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
    model = GleamEncoder(card).to(dev).eval()
    for batch in (1, 8):
        x = torch.randn(batch, 3, 224, 224, device=dev)
        out[f"{dev}_b{batch}_ms"] = bench(model, x, n=20 if dev == "cpu" else 50)
        if dev == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                out[f"{dev}_b{batch}_fp16_ms"] = bench(model, x)
print(json.dumps(out, indent=2))
