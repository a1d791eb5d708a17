"""The oblique view search side by side: the same frames, the same attitude priors, search on and off.

Two :class:`gleam_ros.core.localizer.Localizer` instances (the bench's hard settings: SIFT, poses up to 50 deg
off nadir) localize every frame of a hard flight in turn, alternating which goes first, against one
other-source index of the real map (as ``gleam bench run --hard`` builds it). Both get the same priors
(barometric height, and the autopilot's pitch / roll and heading of :class:`gleam_ros.core.flight.AttitudeNoise`);
only ``LocalizerConfig.view_search`` differs, so the rows differ only by where tracking searches tiles.
Latency is compared as a ratio (same frames, interleaved, same machine load).

Usage (from the repository root; the flight from ``gleam bench run --hard ... --out R`` or ``gleam simulate --hard``):
    python tools/bench_oblique.py --map ../shared/data/turku_satellite \\
        --flight R/turku_satellite_hard/flight [--out docs/bench/oblique_search.md] [--plot oblique.png]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gleam_ros.core.bench import BenchConfig  # noqa: E402
from gleam_ros.core.bench_hard import hard_scenes  # noqa: E402
from gleam_ros.core.encoder import TorchBackend  # noqa: E402
from gleam_ros.core.evaluate import FrameRecord, compute_metrics  # noqa: E402
from gleam_ros.core.flight import AttitudeNoise, frame_priors, load_flight, read_image  # noqa: E402
from gleam_ros.core.index import TileIndex  # noqa: E402
from gleam_ros.core.localizer import Localizer, LocalizerConfig  # noqa: E402
from gleam_ros.core.sim.realism import off_nadir_deg  # noqa: E402
from gleam_ros.core.tiles import TileSpec, iter_tiles, tile_grid  # noqa: E402
from gleam_ros.core.verify import VerifyConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run both localizers on the flight and print (and optionally write) a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--map", required=True, help="the real map the hard flight was rendered over")
    ap.add_argument("--flight", required=True, help="hard flight folder (ground_truth.csv, images/)")
    ap.add_argument("--seed", type=int, default=0, help="prior noise seed (as the bench's --seed default 0)")
    ap.add_argument("--out", help="also write the report to this markdown file")
    ap.add_argument("--plot", help="also plot the share of frames fixed within 5 m per off-nadir band to this PNG")
    a = ap.parse_args(argv)
    cfg = BenchConfig(map_path=a.map, world=False, hard=True)
    scene = hard_scenes(cfg)[0]
    backend = TorchBackend()
    spec = TileSpec(size_m=cfg.tile_size_m, overlap=cfg.overlap, gsd_m=cfg.tile_gsd_m, min_valid=cfg.min_valid)
    index = TileIndex.build(iter_tiles(scene.index_map, spec), backend, total=len(tile_grid(scene.index_map, spec)),
                            progress=True)
    flight = load_flight(a.flight)
    verify = VerifyConfig(features="sift", **scene.verify)
    locs = {name: Localizer(backend, index, LocalizerConfig(verify=verify, view_search=on))
            for name, on in (("around the vehicle", False), ("around the view centre", True))}
    recs: dict[str, list[FrameRecord]] = {n: [] for n in locs}
    rng_alt, rng_att = np.random.default_rng(a.seed), np.random.default_rng(a.seed + 2)
    tilts = []
    for i, (pose, path) in enumerate(tqdm(list(zip(flight.poses, flight.images)), desc="frames")):
        rgb = read_image(path)
        priors = frame_priors(pose, cfg.alt_noise_m, rng_alt, AttitudeNoise(), rng_att)
        tilts.append(off_nadir_deg(pose))
        for name in (list(locs) if i % 2 == 0 else list(locs)[::-1]):
            t0 = time.perf_counter()
            res = locs[name].localize(rgb, t=pose.t, intrinsics=flight.intrinsics, priors=priors)
            rec = FrameRecord(t=pose.t, gt_lat=pose.lat, gt_lon=pose.lon, gt_heading_deg=pose.heading_deg,
                              latency_ms=(time.perf_counter() - t0) * 1e3)
            if res.fix is not None:
                rec.trusted, rec.est_lat, rec.est_lon = True, res.fix.lat, res.fix.lon
                rec.cov_en = np.asarray(res.fix.cov_en).tolist()
            recs[name].append(rec)
    oblique = np.array(tilts) >= 30.0
    lines = [f"Command: `python tools/bench_oblique.py {' '.join(argv if argv is not None else sys.argv[1:])}`  ",
             f"Date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}; {len(flight)} frames "
             f"({int(oblique.sum())} at >= 30 deg off nadir), attitude priors {AttitudeNoise()}", "",
             "| tile search while tracking | fixes | within 5 m | fixes at >= 30 deg off nadir | false fixes (> 25 m) "
             "| latency p50 / p95 |", "|---|---|---|---|---|---|"]
    p50 = {}
    for name, r in recs.items():
        m = compute_metrics(r)
        lat = [x.latency_ms for x in r]
        p50[name] = float(np.percentile(lat, 50))
        obl = sum(1 for x, o in zip(r, oblique) if o and x.trusted)
        lines.append(f"| {name} | {m['trusted_fixes']}/{m['frames']} | {100 * m['within_5m']:.1f} % "
                     f"| {obl}/{int(oblique.sum())} | {m['false_fixes']} | {p50[name]:.0f} / {np.percentile(lat, 95):.0f} ms |")
    names = list(locs)
    lines += ["", f"Latency p50 ratio, view centre / vehicle (same frames, interleaved): {p50[names[1]] / p50[names[0]]:.2f}"]
    report = "\n".join(lines) + "\n"
    if a.plot:
        plot_by_tilt(recs, np.array(tilts), a.plot, f"{Path(a.flight).parent.name}, {len(flight)} frames")
    print(report)
    if a.out:
        Path(a.out).write_text(report)
    return 0


def plot_by_tilt(recs: dict[str, list[FrameRecord]], tilts: np.ndarray, path: str, title: str) -> None:
    """Bars: share of frames with a fix within 5 m per off-nadir band, one bar per search."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = [0, 15, 30, 45.01]
    bands = [(lo <= tilts) & (tilts < hi) for lo, hi in zip(edges[:-1], edges[1:])]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    width = 0.8 / len(recs)
    for j, (name, r) in enumerate(recs.items()):
        ok = np.array([compute_metrics([x])["within_5m"] > 0 for x in r])
        share = [100.0 * ok[b].mean() if b.any() else 0.0 for b in bands]
        xs = np.arange(len(bands)) + (j - (len(recs) - 1) / 2) * width
        ax.bar(xs, share, width, label=f"tiles {name}")
        for x, v, b in zip(xs, share, bands):
            ax.text(x, v + 1, f"{int(ok[b].sum())}/{int(b.sum())}", ha="center", fontsize=7)
    ax.set_xticks(range(len(bands)), [f"{lo:g}-{hi:.0f} deg" for lo, hi in zip(edges[:-1], edges[1:])])
    ax.set_xlabel("camera off nadir")
    ax.set_ylabel("frames fixed within 5 m (%)")
    ax.set_ylim(0, 110)
    ax.set_title(f"oblique view search while tracking ({title})", fontsize=9)
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
