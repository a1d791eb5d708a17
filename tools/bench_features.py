"""Side-by-side benchmark of the verifier's local features: SIFT vs XFeat+LighterGlue vs ALIKED+LightGlue.

Frames are rendered over a real map (default: the Turku satellite sample) under three conditions,
each against tiles of a reference map:

- ``nadir``: near-nadir survey frames (tilt <= 15 deg) vs the same map;
- ``nadir_other``: the same frames vs a reference "from another source"
  (:func:`gleam_ros.core.sim.realism.other_source_map`: re-coloured, re-textured, shifted 2.0 m east
  and 1.5 m south);
- ``oblique45_other``: oblique frames (off-nadir uniform in [0, 45] deg, ``realism.oblique_poses``)
  with sensor effects (blur, exposure; ``realism.apply_sensor``) vs the other-source reference.

Each frame is verified against its right tile (nearest the ground point of the image centre) and
against the most similar wrong tile (highest encoder cosine among tiles whose centre is > 120 m from
that point). Every backend sees the same pairs and the same priors (barometric altitude with 3 m
noise, heading with 3 deg noise: the learned backends turn the frame north-up with it). All backends
use ``max_tilt_deg=50`` so the oblique rows measure matching rather than the default 25 deg tilt gate.
Times are wall-clock per pair with a cold tile cache (frame + tile features, matching, homography,
pose) on ``--threads`` torch threads, backends interleaved frame by frame.

Also measured, in the same run: the rotation modes of the learned backends (heading prior, rot90
search, none) incl. ALIKED n16 vs n16rot, and the XFeat backbone in ONNX Runtime vs torch.

Usage (from the repository root, in the project venv):
    python tools/bench_features.py --map ../shared/data/turku_satellite --frames 10 --out docs/bench/features_bench.md
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gleam_ros.core import geo  # noqa: E402
from gleam_ros.core.camera import ground_intersection  # noqa: E402
from gleam_ros.core.flight import FlightSpec, make_poses  # noqa: E402
from gleam_ros.core.maps import open_map  # noqa: E402
from gleam_ros.core.sim.camera_sim import apply_photometric, random_photometric, render_view  # noqa: E402
from gleam_ros.core.sim.realism import HardSpec, apply_sensor, oblique_poses, random_sensor  # noqa: E402
from gleam_ros.core.tiles import TileSpec, iter_tiles  # noqa: E402
from gleam_ros.core.verify import Priors, Verifier, VerifyConfig  # noqa: E402

BACKENDS = ("sift", "xfeat", "aliked")
CONDITIONS = ("nadir", "nadir_other", "oblique45_other")
WRONG_MIN_M = 120.0
FALSE_FIX_M = 10.0  # a verified right-tile fix this far from the truth counts as false too


def _look_point(pose, intr) -> tuple[float, float]:
    """lat, lon of the ground point seen at the image centre."""
    e, n, ok = ground_intersection(intr, pose.camera_rotation(), np.array([0.0, 0.0, pose.alt_m]),
                                   np.array([intr.cx]), np.array([intr.cy]))
    if not ok[0]:
        return pose.lat, pose.lon
    return geo.offset_latlon(pose.lat, pose.lon, float(e[0]), float(n[0]))


def _frames(geomap, intr, poses, sensor: float, seed: int) -> list[np.ndarray]:
    out = []
    for i, pose in enumerate(poses):
        rgb, valid = render_view(geomap, pose, intr)
        rng = np.random.default_rng([seed, i, 7])
        img = apply_photometric(rgb, random_photometric(rng, 1.0), rng)
        img[~valid] = 0
        if sensor > 0:
            img = apply_sensor(img, random_sensor(rng, sensor), rng)
        out.append(img)
    return out


def _embed_pick_wrong(backend, tiles, frames, looks) -> list[int]:
    """Index of the most similar tile (encoder cosine) farther than WRONG_MIN_M from each look point."""
    tv = backend.embed([t.image for t in tiles], "satellite")
    fv = backend.embed(frames, "uav")
    clat = np.array([t.center_lat for t in tiles])
    clon = np.array([t.center_lon for t in tiles])
    out = []
    for q, (la, lo) in zip(fv, looks):
        far = geo.distance_m(np.full(len(tiles), la), np.full(len(tiles), lo), clat, clon) > WRONG_MIN_M
        s = np.where(far, tv @ q, -np.inf)
        out.append(int(np.argmax(s)))
    return out


def _nearest_tile(tiles, lat, lon) -> int:
    d = [geo.distance_m(lat, lon, t.center_lat, t.center_lon) for t in tiles]
    return int(np.argmin(d))


def _run_pair(ver: Verifier, frame, tile, intr, priors) -> tuple[object, float]:
    ver.clear_cache()
    t0 = time.perf_counter()
    v = ver.verify(frame, tile, intr, priors)
    return v, (time.perf_counter() - t0) * 1e3


def _onnx_xfeat(frames, threads: int) -> dict:
    """XFeat backbone in ONNX Runtime (features.export_xfeat_onnx) vs torch on the same gray frames, alternating."""
    from gleam_ros.core.features import LearnedFeatures, export_xfeat_onnx, ort_session

    net = LearnedFeatures("xfeat", device="cpu").net.eval()
    h, w = frames[0].shape[:2]
    hh, ww = (h // 32) * 32, (w // 32) * 32
    xs = [torch.from_numpy(cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (ww, hh))).float()[None, None] / 255.0
          for f in frames]
    sess = ort_session(export_xfeat_onnx(net), threads)
    t_torch, t_ort, diff = [], [], 0.0
    with torch.inference_mode():
        net(xs[0])
        sess.run(None, {"image": xs[0].numpy()})
        for i, x in enumerate(xs):
            order = ("torch", "ort") if i % 2 == 0 else ("ort", "torch")
            res = {}
            for name in order:
                t0 = time.perf_counter()
                res[name] = [o.numpy() for o in net(x)] if name == "torch" else sess.run(None, {"image": x.numpy()})
                (t_torch if name == "torch" else t_ort).append((time.perf_counter() - t0) * 1e3)
            diff = max(diff, max(float(np.abs(a - b).max()) for a, b in zip(res["torch"], res["ort"])))
    return {"torch_ms": float(np.median(t_torch)), "ort_ms": float(np.median(t_ort)),
            "ratio_ort_over_torch": float(np.median(t_ort) / np.median(t_torch)), "max_abs_diff": diff,
            "input": f"{ww}x{hh}", "n": len(xs)}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print (and optionally write) a markdown report, JSON and plot next to it."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--map", required=True, help="map any `gleam index build` reads")
    ap.add_argument("--frames", type=int, default=10, help="frames per condition (default 10)")
    ap.add_argument("--rotation-frames", type=int, default=6, help="frames for the rotation-mode table (default 6)")
    ap.add_argument("--threads", type=int, default=2, help="torch / ONNX Runtime threads (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="also write the report to this markdown file (+ .json, .png)")
    ap.add_argument("--onnx-only", action="store_true", help="only time the XFeat backbone, ONNX Runtime vs torch")
    a = ap.parse_args(argv)
    if a.frames < 1 or a.rotation_frames < 0:
        ap.error("--frames must be >= 1 and --rotation-frames >= 0")
    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)
    command = "python tools/bench_features.py " + " ".join(argv if argv is not None else sys.argv[1:])

    geomap = open_map(a.map)
    if a.onnx_only:
        fs = FlightSpec(frames=4, seed=a.seed)
        frames = _frames(geomap, fs.intrinsics(), make_poses(geomap, fs), 0.0, a.seed)
        print(json.dumps(_onnx_xfeat((frames * 2)[:8], a.threads)))
        return 0
    hard = HardSpec()
    other = hard.reference_map(geomap, seed=a.seed)
    spec = TileSpec(size_m=100.0, overlap=0.5, gsd_m=0.25, min_valid=0.9)
    tiles = {"same": list(iter_tiles(geomap, spec)), "other": list(iter_tiles(other, spec))}
    fspec = FlightSpec(frames=a.frames, seed=a.seed)
    intr = fspec.intrinsics()
    nadir = make_poses(geomap, fspec)
    obl = oblique_poses(nadir, hard.max_off_nadir_deg, seed=a.seed + 101)
    conds = {
        "nadir": (nadir, _frames(geomap, intr, nadir, 0.0, a.seed), "same"),
        "nadir_other": (nadir, _frames(geomap, intr, nadir, 0.0, a.seed), "other"),
        "oblique45_other": (obl, _frames(geomap, intr, obl, hard.sensor, a.seed + 1), "other"),
    }
    from gleam_ros.core.encoder import load_backend

    enc = load_backend("torch", None, "cpu")
    pairs = []  # (cond, i, pose, frame, right tile, wrong tile, priors)
    rng = np.random.default_rng(a.seed)
    for c, (poses, frames, ref) in conds.items():
        looks = [_look_point(p, intr) for p in poses]
        wrong = _embed_pick_wrong(enc, tiles[ref], frames, looks)
        for i, (p, f) in enumerate(zip(poses, frames)):
            pri = Priors(alt_m=max(1.0, p.alt_m + float(rng.normal(0, 3.0))),
                         heading_deg=float((p.heading_deg + rng.normal(0, 3.0)) % 360.0))
            pairs.append((c, i, p, f, tiles[ref][_nearest_tile(tiles[ref], *looks[i])], tiles[ref][wrong[i]], pri))
    shift = (hard.shift_e_m, hard.shift_n_m)

    onnx = _onnx_xfeat((conds["nadir"][1] * 4)[:8], a.threads)  # first: cheap, a failure costs little

    base = VerifyConfig(max_tilt_deg=50.0)
    vers = {b: Verifier(replace(base, features=b)) for b in BACKENDS}
    for ver in vers.values():  # warm-up outside the timings
        ver.verify(pairs[0][3], pairs[0][4], intr, pairs[0][6])
    rows = {b: {c: [] for c in CONDITIONS} for b in BACKENDS}
    for k, (c, i, pose, frame, right, wrong, pri) in enumerate(tqdm(pairs, desc="pairs")):
        order = BACKENDS[k % 3:] + BACKENDS[: k % 3]
        for b in order:
            vr, tr = _run_pair(vers[b], frame, right, intr, pri)
            vw, tw = _run_pair(vers[b], frame, wrong, intr, pri)
            err = float(geo.distance_m(pose.lat, pose.lon, vr.lat, vr.lon)) if vr.ok else math.nan
            if conds[c][2] == "other" and vr.ok:  # error against where the shifted reference puts the vehicle
                la, lo = geo.offset_latlon(pose.lat, pose.lon, *shift)
                err_ref = float(geo.distance_m(la, lo, vr.lat, vr.lon))
            else:
                err_ref = err
            rows[b][c].append({"i": i, "right_ok": vr.ok, "right_inliers": vr.inliers, "right_reason": vr.reason,
                               "wrong_ok": vw.ok, "wrong_inliers": vw.inliers, "err_m": err, "err_ref_m": err_ref,
                               "ms_right": tr, "ms_wrong": tw, "tilt": float(math.hypot(pose.pitch_deg, pose.roll_deg))})

    # rotation modes: the nadir_other frames, right tiles only
    rot_rows = {}
    sub = [p for p in pairs if p[0] == "nadir_other"][: a.rotation_frames]
    if sub:
        variants = [("xfeat", "aliked-n16rot"), ("aliked", "aliked-n16rot"), ("aliked", "aliked-n16")]
        rvers = {}
        for feat, model in variants:
            for mode in ("prior", "rot90", "none"):
                cfg = replace(base, features=feat, aliked_model=model, rotation="none" if mode == "none" else "auto")
                key = f"{feat if feat == 'xfeat' else model} / {mode}"
                rvers[key] = (Verifier(cfg) if mode != "rot90" else rvers[key.replace("rot90", "prior")][0], mode)
        for k, (_c, _i, _pose, frame, right, _wrong, pri) in enumerate(tqdm(sub, desc="rotation modes")):
            keys = list(rvers)
            keys = keys[k % len(keys):] + keys[: k % len(keys)]
            for key in keys:
                ver, mode = rvers[key]
                p2 = pri if mode == "prior" else replace(pri, heading_deg=None)
                v, t = _run_pair(ver, frame, right, intr, p2)
                rot_rows.setdefault(key, []).append({"ok": v.ok, "inliers": v.inliers, "ms": t, "rotation": v.rotation})

    report = _report(command, a, rows, rot_rows, onnx, shift)
    print(report)
    if a.out:
        out = Path(a.out)
        out.write_text(report)
        out.with_suffix(".json").write_text(json.dumps({"rows": rows, "rotation": rot_rows, "onnx_xfeat": onnx},
                                                       indent=1, default=float))
        _plot(rows, out.with_suffix(".png"))
    return 0


def _med(v) -> float:
    v = [x for x in v if x is not None and math.isfinite(x)]
    return float(np.median(v)) if v else math.nan


def _report(command: str, a, rows, rot_rows, onnx, shift) -> str:
    lines = [
        f"Command: `{command}`  ",
        f"Date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}; machine: "
        f"{platform.processor() or platform.machine()}, {a.threads} torch threads (shared, loaded 2-core VM: "
        "compare the ratios within this run, not absolute times across runs); OpenCV "
        f"{cv2.__version__}, torch {torch.__version__}",
        "",
        f"{a.frames} frames per condition; each against its right tile and its most similar wrong tile. "
        f"Other-source reference shifted by ({shift[0]:+.1f} E, {shift[1]:+.1f} N) m: its 'error vs reference' "
        "removes that known shift. False = a verified wrong tile, or a verified right tile more than "
        f"{FALSE_FIX_M:g} m off.",
        "",
        "| condition | backend | verified (right) | false | inliers right (median) | inliers wrong (median / max) "
        "| error median m (vs truth / vs reference) | ms per pair p50 (right / wrong) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in CONDITIONS:
        for b in BACKENDS:
            r = rows[b][c]
            n = len(r)
            ok = sum(x["right_ok"] for x in r)
            false = sum(x["wrong_ok"] for x in r) + sum(x["right_ok"] and x["err_ref_m"] > FALSE_FIX_M for x in r)
            lines.append(
                f"| {c} | {b} | {ok}/{n} | {false} | {_med([x['right_inliers'] for x in r]):.0f} "
                f"| {_med([x['wrong_inliers'] for x in r]):.0f} / {max(x['wrong_inliers'] for x in r)} "
                f"| {_med([x['err_m'] for x in r]):.2f} / {_med([x['err_ref_m'] for x in r]):.2f} "
                f"| {_med([x['ms_right'] for x in r]):.0f} / {_med([x['ms_wrong'] for x in r]):.0f} |")
    sift_ms = _med([x["ms_right"] for c in CONDITIONS for x in rows["sift"][c]])
    lines += ["", "Time per right pair relative to SIFT (all conditions): " + ", ".join(
        f"{b} {_med([x['ms_right'] for c in CONDITIONS for x in rows[b][c]]) / sift_ms:.1f}x" for b in BACKENDS), ""]
    if rot_rows:
        lines += ["Rotation handling (nadir_other frames, right tiles; 'prior' = north-up by the heading prior, "
                  "'rot90' = no prior, 4 rotations, best inliers kept, 'none' = frame as is):", "",
                  "| backend / mode | verified | inliers (median) | ms per pair p50 |", "|---|---|---|---|"]
        for key, r in rot_rows.items():
            lines.append(f"| {key} | {sum(x['ok'] for x in r)}/{len(r)} | {_med([x['inliers'] for x in r]):.0f} "
                         f"| {_med([x['ms'] for x in r]):.0f} |")
        lines.append("")
    lines += [f"XFeat backbone on {onnx['n']} frames ({onnx['input']}), {a.threads} threads: torch "
              f"{onnx['torch_ms']:.1f} ms, ONNX Runtime {onnx['ort_ms']:.1f} ms, ratio ORT/torch "
              f"**{onnx['ratio_ort_over_torch']:.2f}** (max abs output difference {onnx['max_abs_diff']:.1e}).", ""]
    return "\n".join(lines)


def _plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CONDITIONS), figsize=(4 * len(CONDITIONS), 3.6), sharey=True)
    for ax, c in zip(axes, CONDITIONS):
        for j, b in enumerate(BACKENDS):
            r = rows[b][c]
            jit = np.linspace(-0.12, 0.12, max(len(r), 1))
            ax.scatter(j - 0.18 + jit, [max(x["right_inliers"], 0.5) for x in r], s=14, c="tab:green",
                       label="right tile" if j == 0 else None)
            ax.scatter(j + 0.18 + jit, [max(x["wrong_inliers"], 0.5) for x in r], s=14, c="tab:red", marker="x",
                       label="wrong tile" if j == 0 else None)
        ax.axhline(30, color="grey", lw=0.8, ls="--")
        ax.set_xticks(range(len(BACKENDS)), BACKENDS)
        ax.set_yscale("log")
        ax.set_title(c)
    axes[0].set_ylabel("homography inliers (30 = min_inliers)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
