"""Does the ground camera's bird's-eye view depend on the frame's resolution? Similarity and cost, side by side.

Renders street-level frames at random road poses of a procedural world (the vehicle bench's autumn drive season,
the hard drive's sensor effects: :func:`~gleam_ros.core.sim.realism.random_sensor`, the same draw at every size) at
each ``--sizes`` entry (90 deg field of view) and projects each with :func:`~gleam_ros.core.vehicle.birds_eye`
twice: as configured (``bev_focal_px`` 160: the frame is first area-averaged to a 160 px focal length) and at the
frame's own resolution (``bev_focal_px`` 10000, no frame here is resampled: the projection before bev_focal_px
existed). Prints, per size and way, the mean correlation of the view with the first size's (same pose, common
cells) and the median time of one ``birds_eye`` call, with its ratio to the first size's (all timed in this run,
interleaved).

Usage (from the repository root):
    python tools/bev_resolution.py [--world 4242] [--poses 8] [--sizes 320x240,640x480,1920x1080] [--repeat 15]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gleam_ros.core.camera import CameraIntrinsics  # noqa: E402
from gleam_ros.core.sim.drive import RoadGrid  # noqa: E402
from gleam_ros.core.sim.realism import apply_sensor, random_sensor  # noqa: E402
from gleam_ros.core.sim.street import GroundPose, StreetScene, render_ground  # noqa: E402
from gleam_ros.core.sim.world import WorldConfig, make_world  # noqa: E402
from gleam_ros.core.vehicle import RoadLayer, VehicleConfig, bev_corr, birds_eye  # noqa: E402


def _size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    if not sep or not (w.isdigit() and h.isdigit()):
        raise argparse.ArgumentTypeError(f"--sizes: expected WIDTHxHEIGHT, got {text!r}")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> int:
    """Render, project and time; prints one table."""
    from tqdm import tqdm

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=int, default=4242, help="world seed (500 m, 0.3 m, as the vehicle bench's)")
    ap.add_argument("--poses", type=int, default=8)
    ap.add_argument("--sizes", default="320x240,640x480,1920x1080", help="frame sizes, the first is the reference")
    ap.add_argument("--repeat", type=int, default=15, help="timed birds_eye calls per frame and way")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    sizes = [_size(s) for s in a.sizes.split(",")]
    world = make_world(WorldConfig(seed=a.world, size_m=500.0, gsd_m=0.3, season="summer"))
    scene = StreetScene.from_world(world, season="autumn")
    grid, roads = RoadGrid(world), RoadLayer.from_world(world)
    rng = np.random.default_rng(a.seed)
    ways = {"bev_focal_px 160": VehicleConfig(), "native (old)": replace(VehicleConfig(), bev_focal_px=10000.0)}
    corr = {(s, w): [] for s in sizes for w in ways}
    secs = {(s, w): [] for s in sizes for w in ways}
    for _ in tqdm(range(a.poses), desc="poses", unit="pose"):
        x, y = grid.random_start(rng)
        h = float(roads.axis_deg(x, y)) + 180.0 * int(rng.integers(2))
        pitch, roll = rng.normal(0.0, 1.0, 2)
        pose = GroundPose(x, y, h, 1.6, float(pitch), float(roll))
        eff = random_sensor(rng, 1.0)
        noise_seed = int(rng.integers(1 << 31))
        frames = []
        for w, hh in sizes:
            intr = CameraIntrinsics.from_fov(w, hh, 90.0)
            img = apply_sensor(render_ground(scene, pose, intr), eff, np.random.default_rng(noise_seed))
            frames.append((img, intr))
        for way, cfg in ways.items():
            ref = None
            for (img, intr), s in zip(frames, sizes):
                bev = birds_eye(img, cfg, intr, pose.pitch_deg, pose.roll_deg)
                ref = bev if ref is None else ref
                corr[(s, way)].append(bev_corr(ref, bev)[0])
        for _ in range(a.repeat):  # interleaved: every size and way sees the same machine load
            for way, cfg in ways.items():
                for (img, intr), s in zip(frames, sizes):
                    t0 = time.perf_counter()
                    birds_eye(img, cfg, intr, pose.pitch_deg, pose.roll_deg)
                    secs[(s, way)].append(time.perf_counter() - t0)
    print(f"world {a.world}, {a.poses} poses, hard-drive sensor effects; correlation with the {sizes[0][0]}x"
          f"{sizes[0][1]} view of the same way; birds_eye time (median of {a.repeat} x {a.poses} calls)")
    print(f"{'way':18s} {'size':>10s} {'corr mean':>9s} {'corr min':>8s} {'ms':>7s} {'x first':>7s}")
    for way in ways:
        t_ref = float(np.median(secs[(sizes[0], way)]))
        for s in sizes:
            c = np.array(corr[(s, way)])
            t = float(np.median(secs[(s, way)]))
            print(f"{way:18s} {s[0]:>5d}x{s[1]:<4d} {c.mean():9.3f} {c.min():8.3f} {1e3 * t:7.2f} {t / t_ref:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
