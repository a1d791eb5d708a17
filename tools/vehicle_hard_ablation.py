"""Which part of the hard vehicle rows costs what: one world (4242), ``gps_lost``, one hard ingredient at a time.

``python tools/vehicle_hard_ablation.py [ground] [panorama] [--cases a,b,...]`` runs the particle filter of
:mod:`gleam_ros.core.bench_vehicle` on the same drive with only (a) the misregistered other-source index,
(b) body pitch / roll, with the odometry's body attitude (IMU) used by the bird's-eye view and without it,
(c) the camera height / pitch mis-calibration, (d) sensor effects + occluders, (e) hills (the IMU's pitch / roll
against gravity include the grade and camber) with and without the road pitch learned on line and with the road's
tilt left in the attitude, and with everything (the hard row) with and without the attitude, without the
mis-calibration, without the road pitch learned, on a flat road and with the road's tilt left in the attitude
(``VehicleConfig.road_tilt_tau_s`` 0), and prints one markdown row each (within
10 m, median error, false fixes, covariance inside the 95 % bound). ``--cases`` picks cases by their number;
``--plot out.png`` also draws the share of frames with a fix within 10 m per case (a bar chart).
"""

import argparse
from dataclasses import replace

from gleam_ros.core.bench_vehicle import VehicleBenchConfig, hard_reference, run_drive
from gleam_ros.core.encoder import TorchBackend
from gleam_ros.core.index import TileIndex
from gleam_ros.core.sim.drive import DriveRealism
from gleam_ros.core.sim.world import WorldConfig, make_world
from gleam_ros.core.tiles import TileSpec, iter_tiles


def main(modalities: list[str], cases: list[int] | None = None, plot: str = "") -> None:
    """Print the ablation rows for ``modalities`` (all cases, or the numbered ``cases``); ``plot``: bar chart path."""
    cfg = VehicleBenchConfig(hard=True)
    backend = TorchBackend(threads=1)
    world = make_world(WorldConfig(seed=4242, size_m=cfg.world_size_m, gsd_m=cfg.world_gsd_m, season="summer"))
    spec = TileSpec(size_m=cfg.tile_size_m, overlap=0.5, gsd_m=cfg.tile_gsd_m)
    idx = {"easy": lambda: TileIndex.build(iter_tiles(world.satellite_map(), spec), backend),
           "hard": lambda: TileIndex.build(iter_tiles(hard_reference(world, cfg, seed=4242), spec), backend)}
    none, full = DriveRealism.none(), cfg.realism
    body = replace(none, pitch_std_deg=full.pitch_std_deg, roll_std_deg=full.roll_std_deg,
                   brake_pitch_deg_per_mps2=full.brake_pitch_deg_per_mps2)
    calibrated = replace(full, height_offset_m=0.0, pitch_offset_deg=0.0)
    hills = replace(none, grade_std_deg=full.grade_std_deg, grade_length_m=full.grade_length_m,
                    camber_deg=full.camber_deg)
    flat = replace(full, grade_std_deg=0.0, camber_deg=0.0)
    no_rp = {"road_pitch": False}
    no_tilt = {"road_tilt_tau_s": 0.0}
    # (name, index, realism, attitude from odometry used, VehicleConfig overrides); the road pitch is learned
    # (VehicleConfig.road_pitch) and the road's tilt taken out of the attitude (road_tilt_tau_s) unless a row says
    # otherwise
    table = [
        ("index shifted 2.5 m, re-textured", "hard", None, True, None),
        ("body pitch / roll, attitude not used", "easy", body, False, None),
        ("body pitch / roll, attitude from odometry", "easy", body, True, None),
        ("height / pitch mis-calibration", "easy", replace(none, height_offset_m=full.height_offset_m,
                                                           pitch_offset_deg=full.pitch_offset_deg), True, None),
        ("sensor effects + occluders", "easy", replace(none, sensor=full.sensor, occluders=full.occluders), True, None),
        ("all (hard row), attitude not used", "hard", full, False, None),
        ("all (hard row), attitude from odometry", "hard", full, True, None),
        ("all but the mis-calibration, attitude from odometry", "hard", calibrated, True, None),
        ("hills (grade, camber), road pitch not learned", "easy", hills, True, no_rp),
        ("hills (grade, camber), road pitch learned", "easy", hills, True, None),
        ("all (hard row), road pitch not learned", "hard", full, True, no_rp),
        ("all but the hills (a flat road)", "hard", flat, True, None),
        ("hills (grade, camber), road tilt not taken out", "easy", hills, True, no_tilt),
        ("all (hard row), road tilt not taken out", "hard", full, True, no_tilt),
    ]
    built: dict = {}
    rows: list[tuple[str, str, float]] = []  # (modality, case, within 10 m)
    print("| camera | case | within 10 m | median error | false fixes | cov. inside 95 % |\n|---|---|---|---|---|---|")
    for modality in modalities:
        for i, (name, which, real, att, vehicle) in enumerate(table, 1):
            if cases and i not in cases:
                continue
            if which not in built:
                built[which] = idx[which]()
            r = run_drive(world, built[which], backend, cfg, modality, "gps_lost", seed=4242, log=lambda *a: None,
                          realism=real, attitude=att, vehicle=vehicle)
            m = r["metrics"]["particle_filter"]
            med = "-" if m["median_error_m"] is None else f"{m['median_error_m']:.2f} m"
            cov = "-" if m["cov_consistency_95"] is None else f"{100 * m['cov_consistency_95']:.1f} %"
            print(f"| {modality} | {i}. {name} | {100 * m['within_10m']:.1f} % | {med} | "
                  f"{100 * m['false_fix_rate']:.1f} % | {cov} |", flush=True)
            rows.append((modality, f"{i}. {name}", 100 * m["within_10m"]))
    if plot and rows:
        _plot(rows, plot)


def _plot(rows: list[tuple[str, str, float]], path: str) -> None:
    """Horizontal bars: share of frames with a trusted fix within 10 m per (camera, case)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 0.35 * len(rows) + 1.6))
    labels = [f"{mod}: {case}" for mod, case, _ in rows][::-1]
    vals = [v for _, _, v in rows][::-1]
    colours = ["tab:blue" if mod == "ground" else "tab:orange" for mod, _, _ in rows][::-1]
    ax.barh(labels, vals, color=colours)
    ax.axvline(90.0, color="k", ls="--", lw=1)
    for y, v in enumerate(vals):
        ax.text(v + 0.5, y, f"{v:.1f} %", va="center", fontsize=8)
    ax.set_xlim(0, 112)
    ax.set_xlabel("frames with a trusted fix within 10 m after the GPS loss, %\n(world 4242, 60 s; dashed: the 90 % target)")
    ax.set_title("Hard vehicle drive, one ingredient at a time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modalities", nargs="*", default=["ground"], choices=["ground", "panorama"])
    ap.add_argument("--cases", default="", help="comma-separated case numbers (default: all)")
    ap.add_argument("--plot", default="", help="also write a bar chart of the within-10 m shares to this PNG")
    a = ap.parse_args()
    main(a.modalities or ["ground"], [int(c) for c in a.cases.split(",") if c.strip()] or None, a.plot)
