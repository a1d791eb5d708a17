"""The vehicle bench's drives over more seeds: how often the particle filter publishes a false fix.

The bench (``gleam bench run --vehicle``) drives each held-out world once per camera and scenario (seed offset 0).
This replays the same kind of drive for other seed offsets (the route, the odometry noise, the hard realism's
draws and the filter's seed all change with it) and reports, per drive and in total, the share of frames with a
trusted fix within 10 m and the false fixes (trusted, > 25 m), with the reason of the first false fix.

Usage (from the repository root):
    python tools/vehicle_seeds.py [--modality ground panorama] [--scenario gps_lost] [--worlds 4242 4343]
                                  [--seeds 1-4] [--hard] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gleam_ros.core.bench_vehicle import (  # noqa: E402
    MODALITIES,
    SCENARIOS,
    VehicleBenchConfig,
    hard_reference,
    run_drive,
    seed_list,
)
from gleam_ros.core.encoder import TorchBackend  # noqa: E402
from gleam_ros.core.geo import distance_m  # noqa: E402
from gleam_ros.core.index import TileIndex  # noqa: E402
from gleam_ros.core.sim.world import WorldConfig, make_world  # noqa: E402
from gleam_ros.core.tiles import TileSpec, iter_tiles  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run the drives; prints one line per drive and a total."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modality", nargs="+", choices=MODALITIES, default=list(MODALITIES))
    ap.add_argument("--scenario", nargs="+", choices=SCENARIOS, default=["gps_lost"])
    ap.add_argument("--worlds", nargs="+", type=int, default=[4242, 4343])
    ap.add_argument("--seeds", default="1-4", help="seed offsets, e.g. 1-4 or 1,3 (the bench's is 0)")
    ap.add_argument("--hard", action="store_true", help="the hard drives against the other-source index")
    ap.add_argument("--json", default="", help="also write the per-drive results here")
    a = ap.parse_args(argv)
    seeds = seed_list(a.seeds)
    backend = TorchBackend(threads=1)
    out: list[dict] = []
    for w in a.worlds:
        base = VehicleBenchConfig(hard=a.hard)
        world = make_world(WorldConfig(seed=w, size_m=base.world_size_m, gsd_m=base.world_gsd_m, season="summer"))
        ref = hard_reference(world, base, seed=w) if a.hard else world.satellite_map()
        index = TileIndex.build(iter_tiles(ref, TileSpec(size_m=base.tile_size_m, overlap=0.5,
                                                         gsd_m=base.tile_gsd_m)), backend, progress=False)
        for s in seeds:
            cfg = VehicleBenchConfig(hard=a.hard, seed=s)
            for mod in a.modality:
                for sc in a.scenario:
                    r = run_drive(world, index, backend, cfg, mod, sc, seed=w + s, log=lambda *_: None,
                                  realism=cfg.realism if a.hard else None)
                    lost = [rec for rec in r["pf"] if rec.t >= r["gps_s"]]
                    false = [rec for rec in lost if rec.trusted
                             and float(distance_m(rec.est_lat, rec.est_lon, rec.gt_lat, rec.gt_lon)) > 25.0]
                    m = r["metrics"]["particle_filter"]
                    row = {"world": w, "seed": s, "modality": mod, "scenario": sc, "frames": len(lost),
                           "within_10m": m["within_10m"], "false_fixes": len(false),
                           "first_false_t": false[0].t if false else None}
                    out.append(row)
                    print(f"{'hard' if a.hard else 'easy'} {mod:8s} {sc:10s} world {w} seed {s}: within 10 m "
                          f"{100 * m['within_10m']:5.1f} %, false fixes {len(false)}"
                          + (f" (first at {false[0].t:.1f} s)" if false else ""), flush=True)
    frames = sum(r["frames"] for r in out)
    nfalse = sum(r["false_fixes"] for r in out)
    print(f"total: {len(out)} drives, {frames} frames without GPS, false fixes {nfalse} "
          f"({100 * nfalse / max(frames, 1):.2f} %), drives with any {sum(r['false_fixes'] > 0 for r in out)}")
    for mod in a.modality:
        for sc in a.scenario:
            rows = [r for r in out if r["modality"] == mod and r["scenario"] == sc]
            if rows:
                share = sum(r["within_10m"] * r["frames"] for r in rows) / sum(r["frames"] for r in rows)
                print(f"  {mod} {sc}: within 10 m {100 * share:.1f} % over {len(rows)} drives")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
