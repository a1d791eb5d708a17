"""Two identical places: does the vehicle localizer's map search ever trust the wrong copy?

Builds ``test/test_vehicle.py``'s twin world (the 300 m procedural world of seed 3 whose west half is pasted over
its east half, imagery and roads, indexed with the ImageNet encoder), drives the car in the west half (autumn,
90 deg 240x180 camera at 2 fps, no GPS: a cold start) and runs the filter for several filter seeds. Per seed it
prints the trusted fixes at the car and at the copy 150 m away (false fixes, > 25 m), the first false one, the
look-alike places planted and the last frame's reason; then the totals. ``--lookalikes 0`` turns the look-alike
search off (``VehicleConfig.lookalikes``) for the comparison.

Usage (from the repository root):
    python tools/vehicle_twins.py [--duration 12] [--seeds 0-7] [--lookalikes 2]
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gleam_ros.core.bench_vehicle import seed_list  # noqa: E402
from gleam_ros.core.camera import CameraIntrinsics  # noqa: E402
from gleam_ros.core.encoder import TorchBackend  # noqa: E402
from gleam_ros.core.geo import distance_m  # noqa: E402
from gleam_ros.core.index import TileIndex  # noqa: E402
from gleam_ros.core.maps import map_from_array  # noqa: E402
from gleam_ros.core.sim.drive import simulate_drive  # noqa: E402
from gleam_ros.core.sim.world import WorldConfig, make_world  # noqa: E402
from gleam_ros.core.tiles import TileSpec, iter_tiles  # noqa: E402
from gleam_ros.core.vehicle import RoadLayer, VehicleConfig, VehicleLocalizer  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run the twin drive for each filter seed; prints one line per seed and the totals."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=12.0, help="drive length, s (the route depends on it)")
    ap.add_argument("--seeds", default="0-7", help="filter seeds, e.g. 0-7 or 0,2")
    ap.add_argument("--lookalikes", type=int, default=VehicleConfig.lookalikes,
                    help="VehicleConfig.lookalikes (0 = no look-alike search)")
    a = ap.parse_args(argv)
    intr = CameraIntrinsics.from_fov(240, 180, 90.0)
    cfg = replace(VehicleConfig(n_particles=500, n_particles_global=2500), lookalikes=a.lookalikes)
    world = make_world(WorldConfig(seed=3, size_m=300.0, gsd_m=0.5, season="summer"))
    backend = TorchBackend(threads=1)
    half = world.shape[1] // 2
    sat = world.satellite.copy()
    sat[:, half:2 * half] = sat[:, :half]
    road = RoadLayer.from_world(world).mask.copy()
    road[:, half:2 * half] = road[:, :half]
    twins = TileIndex.build(iter_tiles(map_from_array(sat, world.crs, world.transform, name="twins"),
                                       TileSpec(size_m=100.0, overlap=0.5, gsd_m=0.5)), backend, progress=False)
    x0 = world.transform.c
    region = (x0 + 25.0, world.bounds()[1] + 25.0, x0 + half * 0.5 - 30.0, world.bounds()[3] - 25.0)
    frames, odom = simulate_drive(world, duration_s=a.duration, fps=2.0, modality="ground", intr=intr, rng=2,
                                  region=region, season="autumn")
    runs_false = 0
    for seed in seed_list(a.seeds):
        loc = VehicleLocalizer(backend, twins, cfg, roads=RoadLayer(road, world.crs, world.transform), seed=seed)
        k, good, false, first_false, reason = 0, 0, 0, math.nan, ""
        for f in frames:
            while k < len(odom) and odom[k].t <= f.t:
                loc.on_odometry(odom[k])
                k += 1
            res = loc.localize(f.image, f.t, intrinsics=intr)
            reason = res.filter.reason or "trusted"
            if res.fix is not None:
                if float(distance_m(res.fix.lat, res.fix.lon, f.lat, f.lon)) > 25.0:
                    false += 1
                    first_false = f.t if math.isnan(first_false) else first_false
                else:
                    good += 1
        runs_false += false > 0
        print(f"filter seed {seed}: trusted at the car {good}, at the copy {false}"
              + (f" (first at {first_false:.1f} s)" if false else "")
              + f"; look-alikes planted {loc.lookalike_plants}; last frame: {reason[:80]}", flush=True)
    print(f"runs with a false fix: {runs_false} of {len(seed_list(a.seeds))} ({len(frames)} frames each, "
          f"lookalikes={a.lookalikes})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
