"""Street-level renderer speed, side by side with the UAV frame renderer in one run (ratios).

Renders the same road poses of one procedural world as a 640x480 forward frame (hfov 70) and a 1024x512
panorama (:mod:`gleam_ros.core.sim.street`), interleaved with UAV nadir frames of the same size
(:func:`gleam_ros.core.sim.camera_sim.render_view`, the re-projection every UAV training pair uses) as the
yardstick; one thread (OpenCV too). Optionally writes the first frame and panorama as JPEGs.

Usage (from the repository root):
    python tools/bench_street.py [--size 800] [--frames 8] [--out docs/bench]
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from gleam_ros.core.camera import CameraIntrinsics
from gleam_ros.core.sim.street import (
    KIND_WALL,
    StreetScene,
    panorama_layers,
    render_ground,
    render_panorama,
    road_poses,
)


def write_sample(world, scene, poses, intr, path: Path) -> None:
    """One small JPEG: the panorama of the bench pose that sees the most facades, and its forward frame in
    summer and winter (same pose, same geometry)."""
    walls = [int((panorama_layers(scene, p, 256, 128).kind == KIND_WALL).sum()) for p in poses]
    pose = poses[int(np.argmax(walls))]
    winter = StreetScene.from_world(world, season="winter")
    pano = render_panorama(scene, pose, 1024, 512)
    pair = [cv2.resize(render_ground(s, pose, intr), (512, 384), interpolation=cv2.INTER_AREA) for s in (scene, winter)]
    img = np.vstack([pano, np.hstack(pair)])
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 72])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints ms per frame and ratios."""
    import argparse
    import time

    from gleam_ros.core.sim.camera_sim import random_poses, render_view
    from gleam_ros.core.sim.world import WorldConfig, make_world

    p = argparse.ArgumentParser(prog="tools/bench_street.py", description=__doc__.splitlines()[0])
    p.add_argument("--size", type=float, default=800.0, help="world side, m (default 800)")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--out", default=None, help="also write street_views.jpg (a panorama, a summer and a winter "
                                              "forward frame at one pose) into this folder")
    a = p.parse_args(argv)
    cv2.setNumThreads(1)
    world = make_world(WorldConfig(seed=3, size_m=a.size))
    t0 = time.perf_counter()
    scene = StreetScene.from_world(world)
    t_scene = time.perf_counter() - t0
    poses = road_poses(world, a.frames, np.random.default_rng(0))
    intr = CameraIntrinsics.from_fov(640, 480, 70.0)
    geomap = world.satellite_map()
    uav = random_poses(geomap, a.frames, seed=0, intr=CameraIntrinsics.from_fov(640, 480, 60.0))
    uav_intr = CameraIntrinsics.from_fov(640, 480, 60.0)
    render_ground(scene, poses[0], intr)  # warm-up
    render_view(geomap, uav[0], uav_intr)
    times = {"uav": 0.0, "ground": 0.0, "panorama": 0.0}
    for k in range(a.frames):  # interleaved, so that load changes hit all three alike
        t0 = time.perf_counter()
        render_view(geomap, uav[k], uav_intr)
        t1 = time.perf_counter()
        render_ground(scene, poses[k], intr)
        t2 = time.perf_counter()
        render_panorama(scene, poses[k], 1024, 512)
        t3 = time.perf_counter()
        times["uav"] += t1 - t0
        times["ground"] += t2 - t1
        times["panorama"] += t3 - t2
    ms = {k: v / a.frames * 1000 for k, v in times.items()}
    print(f"world {a.size:.0f} m @ {world.cfg.gsd_m} m/px, {a.frames} poses, one thread; scene build {t_scene:.2f} s")
    print(f"UAV nadir frame 640x480 (camera_sim.render_view): {ms['uav']:.0f} ms/frame (1.00)")
    print(f"render_ground 640x480, hfov 70:                  {ms['ground']:.0f} ms/frame "
          f"({ms['ground'] / ms['uav']:.2f} x UAV)")
    print(f"render_panorama 1024x512:                       {ms['panorama']:.0f} ms/frame "
          f"({ms['panorama'] / ms['uav']:.2f} x UAV, {ms['panorama'] / ms['ground']:.2f} x ground)")
    if a.out:
        write_sample(world, scene, poses, intr, Path(a.out) / "street_views.jpg")
        print(f"sample: {Path(a.out) / 'street_views.jpg'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
