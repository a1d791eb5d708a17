"""How reliably the vehicle localizer re-acquires after a real kidnap: one drive, several filter seeds.

Replays the drive of ``test/test_vehicle_node.py``'s kidnap test through the core (no DDS): a 300 m procedural
world (seed 3), the summer index (100 m tiles, ImageNet encoder), an autumn drive at 1 fps with a 60 deg
320x240 camera (or a panorama), GPS (10 m) for the first 8 s, the car teleported at 20 s while the odometry
carries on. For each filter seed it reports when the kidnap was declared, the first trusted fix after the
kidnap (time, error) within ``--until`` seconds, and the false fixes (trusted, > 25 m). The node test gives the
recovery until 56 s with seed 0; this tool says whether that is a margin or one lucky seed.

Usage (from the repository root):
    python tools/vehicle_kidnap_seeds.py [--modality ground|panorama] [--seeds 0-6] [--until 56]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gleam_ros.core.camera import CameraIntrinsics  # noqa: E402
from gleam_ros.core.encoder import TorchBackend  # noqa: E402
from gleam_ros.core.geo import distance_m  # noqa: E402
from gleam_ros.core.index import TileIndex  # noqa: E402
from gleam_ros.core.localizer import PositionPrior  # noqa: E402
from gleam_ros.core.sim.drive import simulate_drive  # noqa: E402
from gleam_ros.core.sim.world import WorldConfig, make_world  # noqa: E402
from gleam_ros.core.tiles import TileSpec, iter_tiles  # noqa: E402
from gleam_ros.core.vehicle import RoadLayer, VehicleConfig, VehicleLocalizer  # noqa: E402

GPS_UNTIL_S, KIDNAP_S = 8.0, 20.0


def _seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi) + 1)) if hi else [int(v) for v in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    """Run the replay for every seed and print one line per seed plus the share that re-acquired."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modality", choices=("ground", "panorama"), default="ground")
    ap.add_argument("--seeds", default="0-6", help="filter seeds: 'a-b' or 'a,b,c' (default 0-6)")
    ap.add_argument("--until", type=float, default=56.0, help="recovery window end, s (the node test's: 56)")
    a = ap.parse_args(argv)
    intr = CameraIntrinsics.from_fov(320, 240, 60.0)
    world = make_world(WorldConfig(seed=3, size_m=300.0))
    backend = TorchBackend(threads=1)
    index = TileIndex.build(iter_tiles(world.satellite_map(), TileSpec(size_m=100.0, overlap=0.5, gsd_m=0.25)),
                            backend, progress=False)
    frames, odom = simulate_drive(world, duration_s=a.until + 12.0, fps=1.0, odom_hz=20.0, modality=a.modality,
                                  intr=intr, season="autumn", rng=5, kidnap_at_s=KIDNAP_S)
    odom = [replace(o, v_std=0.1, yaw_rate_std=0.01) for o in odom]  # about the node's defaults for unreported std
    roads = RoadLayer.from_world(world)
    recovered = 0
    seeds = _seeds(a.seeds)
    for seed in seeds:
        loc = VehicleLocalizer(backend, index, VehicleConfig(modality=a.modality), roads=roads, seed=seed)
        k, kidnap_t, first, false = 0, None, None, 0
        for f in (f for f in frames if f.t < a.until):
            while k < len(odom) and odom[k].t <= f.t:
                loc.on_odometry(odom[k])
                k += 1
            kidnaps = loc.kidnaps
            prior = PositionPrior(f.lat, f.lon, 10.0) if f.t < GPS_UNTIL_S else None
            res = loc.localize(f.image, f.t, intrinsics=intr, gps_prior=prior)
            if loc.kidnaps > kidnaps and kidnap_t is None:
                kidnap_t = f.t
            if res.fix is not None:
                err = float(distance_m(res.fix.lat, res.fix.lon, f.lat, f.lon))
                false += err > 25.0
                if f.t > KIDNAP_S and first is None:
                    first = (f.t, err)
        recovered += first is not None and first[1] <= 5.0
        kid = "none" if kidnap_t is None else f"{kidnap_t:.0f} s"
        rec = "none" if first is None else f"{first[0]:.0f} s ({first[1]:.1f} m)"
        print(f"{a.modality} seed {seed}: kidnap declared {kid}, first trusted fix after the kidnap {rec}, "
              f"false fixes {false}", flush=True)
    print(f"{a.modality}: re-acquired within {a.until:g} s for {recovered} of {len(seeds)} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
