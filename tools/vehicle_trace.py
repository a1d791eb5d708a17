"""Per-frame trace of one vehicle-bench drive: why each frame got a trusted fix or not.

Runs :func:`gleam_ros.core.bench_vehicle.run_drive` on one held-out world (the bench's drive, seed and index; the
other-source index and the hard drive with ``--hard``) and prints, per frame: time, trusted or not, the fix's
error, the appearance z-score of the frame and its running mean, locked / suspect / searching, the top mode's
spread and weight, the top mode's error and the weight of the mode within 10 m of the car (0: none is), the
learned road pitch and the filter's reason. Then the share of frames (after the GPS loss)
with a trusted fix within 10 m, and the frames without a fix counted by reason
(:func:`~gleam_ros.core.bench_vehicle.no_fix_reasons`).

Usage (from the repository root):
    python tools/vehicle_trace.py ground gps_lost 4242 --hard [--fps 2] [--width 320] [--set road_pitch=false]
        [--seed 0] [--realism occluders=0] [--json trace.json]

``--set name=value`` overrides a :class:`~gleam_ros.core.vehicle.VehicleConfig` field, ``--realism name=value`` a
:class:`~gleam_ros.core.sim.drive.DriveRealism` field of the hard drive (both repeatable; ablations).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gleam_ros.core.bench_vehicle import (  # noqa: E402
    MODALITIES,
    SCENARIOS,
    VehicleBenchConfig,
    hard_reference,
    no_fix_reasons,
    run_drive,
)
from gleam_ros.core.encoder import TorchBackend  # noqa: E402
from gleam_ros.core.geo import distance_m  # noqa: E402
from gleam_ros.core.index import TileIndex  # noqa: E402
from gleam_ros.core.sim.world import WorldConfig, make_world  # noqa: E402
from gleam_ros.core.tiles import TileSpec, iter_tiles  # noqa: E402


def _value(text: str):
    """A --set value: true / false, an int, a float, else the string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _pairs(ap: argparse.ArgumentParser, flag: str, items: list[str]) -> dict:
    """``NAME=VALUE`` items of a repeatable option as a dict (values through :func:`_value`)."""
    out = {}
    for item in items:
        name, sep, val = item.partition("=")
        if not sep:
            ap.error(f"{flag} {item!r}: expected NAME=VALUE")
        out[name.strip()] = _value(val.strip())
    return out


def main(argv: list[str] | None = None) -> int:
    """Trace one drive; prints one line per frame and a summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modality", choices=MODALITIES)
    ap.add_argument("scenario", choices=SCENARIOS)
    ap.add_argument("world", type=int, help="world seed (the bench's: 4242, 4343)")
    ap.add_argument("--hard", action="store_true", help="the hard drive against the other-source index")
    ap.add_argument("--fps", type=float, default=None, help="camera rate (bench: 2)")
    ap.add_argument("--width", type=int, default=None, help="ground camera width, px (height 3/4 of it; bench: 320)")
    ap.add_argument("--seed", type=int, default=0, help="the bench's seed offset (drive and filter seed = world + it)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a VehicleConfig field for the filter (repeatable)")
    ap.add_argument("--realism", action="append", default=[], metavar="NAME=VALUE",
                    help="a DriveRealism field of the hard drive (repeatable; e.g. occluders=0)")
    ap.add_argument("--json", default="", help="also write the per-frame trace here")
    a = ap.parse_args(argv)
    kw = {"hard": a.hard, "seed": a.seed}
    if a.fps:
        kw["fps"] = a.fps
    if a.width:
        kw.update(image_width=a.width, image_height=a.width * 3 // 4)
    cfg = VehicleBenchConfig(**kw)
    overrides = _pairs(ap, "--set", a.set)
    if a.realism:
        if not a.hard:
            ap.error("--realism changes the hard drive: add --hard")
        try:
            cfg = replace(cfg, realism=replace(cfg.realism, **_pairs(ap, "--realism", a.realism)))
        except TypeError as e:
            ap.error(f"--realism: {e}")
    backend = TorchBackend(threads=1)
    world = make_world(WorldConfig(seed=a.world, size_m=cfg.world_size_m, gsd_m=cfg.world_gsd_m, season="summer"))
    ref = hard_reference(world, cfg, seed=a.world) if a.hard else world.satellite_map()
    index = TileIndex.build(iter_tiles(ref, TileSpec(size_m=cfg.tile_size_m, overlap=0.5, gsd_m=cfg.tile_gsd_m)),
                            backend, progress=False)
    rows: list[dict] = []

    def on_frame(method, loc, rec) -> None:
        st = loc.status()
        err = float(distance_m(rec.est_lat, rec.est_lon, rec.gt_lat, rec.gt_lon)) if rec.trusted else math.nan
        # the ranked modes against the truth: the top mode's error, and the weight of the mode nearest the car
        mode_err, truth_w = math.nan, math.nan
        if loc._modes:
            hyps = [loc._hypothesis(md, "") for md in loc._modes]  # the modes as the localizer publishes them
            d = [float(distance_m(hy.lat, hy.lon, rec.gt_lat, rec.gt_lon)) for hy in hyps]
            mode_err = d[0]
            near = min(range(len(d)), key=d.__getitem__)
            truth_w = loc._modes[near].weight if d[near] <= 10.0 else 0.0
        row = {"t": rec.t, "trusted": rec.trusted, "error_m": err, "top_mode_error_m": mode_err,
               "truth_mode_weight": truth_w, "z_frame": st["appearance_z_frame"],
               "z": st["appearance_z"], "locked": st["locked"], "suspect": st["suspect"],
               "searching": st["global_search"], "spread_m": st["spread_m"], "top_weight": st["top_mode_weight"],
               "road_pitch_deg": st["road_pitch_deg"], "road_grade_deg": st["road_grade_deg"],
               "ground_flagged": st["ground_flagged_share"],
               "ground_agreement": st["ground_agreement"], "ground_masked": st["ground_masked"],
               "ground_continuity": st["ground_continuity"], "coasting": st["coasting"],
               "sustained": st["sustained_evidence"],
               "reason": rec.note or "trusted"}
        rows.append(row)
        flags = "".join(c for c, on in (("L", row["locked"]), ("S", row["suspect"]), ("G", row["searching"]),
                                        ("C", row["coasting"]), ("E", row["sustained"])) if on)
        print(f"{rec.t:6.1f} {'T' if rec.trusted else '.'} err {err:5.1f} m  top {mode_err:6.1f} m "
              f"truth w {truth_w:4.2f}  z {row['z_frame']:6.2f} "
              f"(mean {row['z']:5.2f}) {flags:4s} spread {row['spread_m']:5.2f} m  w {row['top_weight']:.2f}  "
              f"road pitch {row['road_pitch_deg']:+.2f} grade {row['road_grade_deg']:+.1f}  "
              f"not ground {row['ground_flagged']:4.2f}"
              f"{'*' if row['ground_masked'] else ' '} "
              f"(agree {row['ground_agreement']:4.2f}, cont {row['ground_continuity']:5.1f})  | "
              f"{row['reason'][:100]}", flush=True)

    r = run_drive(world, index, backend, cfg, a.modality, a.scenario, seed=a.world + cfg.seed, log=print,
                  realism=cfg.realism if a.hard else None, vehicle=overrides or None, on_frame=on_frame)
    m = r["metrics"]["particle_filter"]
    lost = [rec for rec in r["pf"] if rec.t >= r["gps_s"]]
    print(f"within 10 m: {100 * m['within_10m']:.1f} % of {len(lost)} frames without GPS; false fixes "
          f"{100 * m['false_fix_rate']:.1f} %")
    print("no fix, by reason: " + ", ".join(f"{k} {v}" for k, v in no_fix_reasons(lost).items()))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
