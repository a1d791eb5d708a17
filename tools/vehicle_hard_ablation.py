"""Which part of the hard vehicle rows costs what: one world (4242), ``gps_lost``, one hard ingredient at a time.

``python tools/vehicle_hard_ablation.py [ground] [panorama]`` runs the particle filter of
:mod:`gleam_ros.core.bench_vehicle` on the same drive with only (a) the misregistered other-source index,
(b) body pitch / roll, (c) the camera height / pitch mis-calibration, (d) sensor effects + occluders, and
prints one markdown row each (within 10 m, median error, false fixes, covariance inside the 95 % bound).
"""

import sys
from dataclasses import replace

from gleam_ros.core.bench_vehicle import VehicleBenchConfig, hard_reference, run_drive
from gleam_ros.core.encoder import TorchBackend
from gleam_ros.core.index import TileIndex
from gleam_ros.core.sim.drive import DriveRealism
from gleam_ros.core.sim.world import WorldConfig, make_world
from gleam_ros.core.tiles import TileSpec, iter_tiles


def main(modalities: list[str]) -> None:
    """Print the ablation rows for ``modalities``."""
    cfg = VehicleBenchConfig(hard=True)
    backend = TorchBackend(threads=1)
    world = make_world(WorldConfig(seed=4242, size_m=cfg.world_size_m, gsd_m=cfg.world_gsd_m, season="summer"))
    spec = TileSpec(size_m=cfg.tile_size_m, overlap=0.5, gsd_m=cfg.tile_gsd_m)
    easy_idx = TileIndex.build(iter_tiles(world.satellite_map(), spec), backend)
    hard_idx = TileIndex.build(iter_tiles(hard_reference(world, cfg, seed=4242), spec), backend)
    none, full = DriveRealism.none(), cfg.realism
    cases = {
        "index shifted only": (hard_idx, None),
        "body motion only": (easy_idx, replace(none, pitch_std_deg=full.pitch_std_deg, roll_std_deg=full.roll_std_deg,
                                               brake_pitch_deg_per_mps2=full.brake_pitch_deg_per_mps2)),
        "mis-calibration only": (easy_idx, replace(none, height_offset_m=full.height_offset_m,
                                                   pitch_offset_deg=full.pitch_offset_deg)),
        "sensor + occluders only": (easy_idx, replace(none, sensor=full.sensor, occluders=full.occluders)),
    }
    print("| camera | only | within 10 m | median error | false fixes | cov. inside 95 % |\n|---|---|---|---|---|---|")
    for modality in modalities:
        for name, (idx, real) in cases.items():
            r = run_drive(world, idx, backend, cfg, modality, "gps_lost", seed=4242, log=lambda *a: None,
                          realism=real)
            m = r["metrics"]["particle_filter"]
            med = "-" if m["median_error_m"] is None else f"{m['median_error_m']:.2f} m"
            cov = "-" if m["cov_consistency_95"] is None else f"{100 * m['cov_consistency_95']:.1f} %"
            print(f"| {modality} | {name} | {100 * m['within_10m']:.1f} % | {med} | {100 * m['false_fix_rate']:.1f} % "
                  f"| {cov} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["ground"])
