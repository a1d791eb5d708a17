"""Where the static-ground check's thresholds come from: its agreement and continuity on consecutive views of a
drive against views of unrelated places (a teleport between two frames).

Runs the vehicle bench's hard ground drive (``gps_lost``) of one world through the filter, keeps every pair of
consecutive bird's-eye views with the odometry motion between them, and prints the percentiles of
``GroundCheck.agreement`` and ``GroundCheck.continuity`` for those pairs and for ``--pairs`` random pairs of
views at least 5 s apart; then how often an unrelated pair passes both coasting gates, and how much leaving out
the flagged cells (ungated) raises an unrelated view's correlation with the previous view (the bias the
agreement gate guards against).

Usage (from the repository root):
    python tools/static_ground_null.py [--world 4242] [--pairs 600]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import gleam_ros.core.vehicle as vehicle  # noqa: E402
from gleam_ros.core.bench_vehicle import VehicleBenchConfig, hard_reference, run_drive  # noqa: E402
from gleam_ros.core.encoder import TorchBackend  # noqa: E402
from gleam_ros.core.index import TileIndex  # noqa: E402
from gleam_ros.core.sim.world import WorldConfig, make_world  # noqa: E402
from gleam_ros.core.tiles import TileSpec, iter_tiles  # noqa: E402


def _prev_corr(prev, cur, motion, keep, res_m: float) -> float:
    """Correlation of ``cur``'s cells ``keep`` with ``prev`` at the odometry's alignment."""
    c, s = np.cos(np.radians(motion[2])), np.sin(np.radians(motion[2]))
    f0, s0, ii, jj = vehicle._cell_grid(prev, res_m)
    g = np.full((ii.max() + 1, jj.max() + 1), np.nan)
    g[ii, jj] = prev.values
    r = np.rint((motion[0] + cur.fwd * c - cur.right * s - f0) / res_m).astype(int)
    q = np.rint((motion[1] + cur.fwd * s + cur.right * c - s0) / res_m).astype(int)
    ok = (r >= 0) & (r < g.shape[0]) & (q >= 0) & (q < g.shape[1])
    b = np.full(cur.n, np.nan)
    b[ok] = g[r[ok], q[ok]]
    m = np.isfinite(b) & keep
    return vehicle._corr(cur.values[m], b[m])


def main(argv: list[str] | None = None) -> int:
    """Run the drive and print the statistics."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=int, default=4242)
    ap.add_argument("--pairs", type=int, default=600)
    a = ap.parse_args(argv)
    cfg = VehicleBenchConfig(hard=True)
    vcfg = vehicle.VehicleConfig()
    world = make_world(WorldConfig(seed=a.world, size_m=cfg.world_size_m, gsd_m=cfg.world_gsd_m, season="summer"))
    backend = TorchBackend(threads=1)
    index = TileIndex.build(iter_tiles(hard_reference(world, cfg, seed=a.world),
                                       TileSpec(size_m=cfg.tile_size_m, overlap=0.5, gsd_m=cfg.tile_gsd_m)),
                            backend, progress=False)
    pairs = []
    check = vehicle.static_ground

    def keep_pair(prev, cur, motion, *rest):
        pairs.append((prev, cur, motion))
        return check(prev, cur, motion, *rest)

    vehicle.static_ground = keep_pair  # localize() looks it up in the module at call time
    try:
        run_drive(world, index, backend, cfg, "ground", "gps_lost", seed=a.world, log=lambda *_: None,
                  realism=cfg.realism)
    finally:
        vehicle.static_ground = check

    def gc(prev, cur, motion):
        return check(prev, cur, motion, vcfg.bev_res_m, vcfg.static_ground_sigma, vcfg.static_ground_agreement)

    cons = [gc(*p) for p in pairs]
    rng = np.random.default_rng(0)
    unrel, bias = [], []
    while len(unrel) < a.pairs:
        k, j = (int(v) for v in rng.integers(0, len(pairs), 2))
        if abs(k - j) < 10:  # 5 s apart at 2 fps
            continue
        prev, cur, motion = pairs[j][1], pairs[k][1], pairs[k][2]
        unrel.append(gc(prev, cur, motion))
        flagged = check(prev, cur, motion, vcfg.bev_res_m, vcfg.static_ground_sigma, -1.0).keep  # ungated
        bias.append((_prev_corr(prev, cur, motion, np.ones(cur.n, bool), vcfg.bev_res_m),
                     _prev_corr(prev, cur, motion, flagged, vcfg.bev_res_m)))

    def pct(vals, qs):
        v = np.array([x for x in vals if np.isfinite(x)])
        return ", ".join(f"p{q} {np.percentile(v, q):.2f}" for q in qs) + f", max {v.max():.2f} (n={len(v)})"

    print(f"world {a.world}, hard ground drive: {len(pairs)} consecutive pairs, {len(unrel)} unrelated pairs")
    print("agreement   consecutive: " + pct([c.agreement for c in cons], (10, 50)))
    print("agreement   unrelated:   " + pct([c.agreement for c in unrel], (50, 95, 99)))
    print("continuity  consecutive: " + pct([c.continuity for c in cons], (10, 50)))
    print("continuity  unrelated:   " + pct([c.continuity for c in unrel], (50, 95, 99)))
    both = sum(c.agreement >= vcfg.static_ground_agreement and c.continuity >= vcfg.coast_continuity_z
               for c in unrel)
    print(f"unrelated pairs passing both coasting gates (agreement >= {vcfg.static_ground_agreement}, continuity "
          f">= {vcfg.coast_continuity_z}): {both} of {len(unrel)}")
    b = np.array(bias)
    print(f"unrelated view's correlation with the previous view: whole {b[:, 0].mean():.3f}, flagged cells left out "
          f"(ungated) {b[:, 1].mean():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
