"""Metrics of a localized flight against ground truth, a markdown table and a trajectory plot.

One definition of the metrics used by ``gleam eval``, ``make demo``, the bag evaluation and the
benchmarks: share of frames with a trusted fix within 5/10/25 m, median/mean error, heading
error, false fixes (trusted fixes more than 25 m off), NEES-based covariance consistency and
latency percentiles.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .geo import LocalFrame, heading_diff_deg
from .jsonutil import to_jsonable

FALSE_FIX_M = 25.0
CHI2_2DOF_95 = 5.991464547107979  # 95 % bound of a 2-dof chi-square


@dataclass
class FrameRecord:
    """Ground truth and the pipeline's output for one frame."""

    t: float
    gt_lat: float
    gt_lon: float
    gt_heading_deg: float = math.nan
    trusted: bool = False
    est_lat: float = math.nan
    est_lon: float = math.nan
    est_heading_deg: float = math.nan
    cov_en: list = field(default_factory=lambda: [[math.nan, math.nan], [math.nan, math.nan]])
    latency_ms: float = math.nan
    timings_ms: dict = field(default_factory=dict)
    top_tile_lat: float = math.nan  # retrieval's best tile centre (for retrieval metrics)
    top_tile_lon: float = math.nan
    dropped: bool = False  # frame not processed (stale, bad input)
    note: str = ""
    search_note: str = ""  # how the tile search region was placed (LocalizationResult.search_note)


def _errors(records: list[FrameRecord], frame: LocalFrame) -> tuple[np.ndarray, np.ndarray]:
    """East/north error vectors (est - gt) of trusted fixes, metres."""
    fixes = [r for r in records if r.trusted]
    if not fixes:
        return np.zeros((0, 2)), np.zeros((0,), bool)
    ge, gn, _ = frame.to_enu([r.gt_lat for r in fixes], [r.gt_lon for r in fixes])
    ee, en, _ = frame.to_enu([r.est_lat for r in fixes], [r.est_lon for r in fixes])
    return np.stack([ee - ge, en - gn], axis=1), np.ones(len(fixes), bool)


def compute_metrics(records: list[FrameRecord]) -> dict:
    """Summary metrics of a flight (see module docstring); JSON-friendly."""
    n = len(records)
    out: dict = {"frames": n}
    if n == 0:
        return out
    frame = LocalFrame(records[0].gt_lat, records[0].gt_lon)
    fixes = [r for r in records if r.trusted]
    err_vec, _ = _errors(records, frame)
    err = np.linalg.norm(err_vec, axis=1) if len(err_vec) else np.zeros(0)
    out["trusted_fixes"] = len(fixes)
    out["share_localized"] = len(fixes) / n
    for d in (5, 10, 25):
        out[f"within_{d}m"] = float(np.sum(err <= d)) / n
    out["median_error_m"] = float(np.median(err)) if len(err) else None
    out["mean_error_m"] = float(np.mean(err)) if len(err) else None
    out["p95_error_m"] = float(np.percentile(err, 95)) if len(err) else None
    false = int(np.sum(err > FALSE_FIX_M))
    out["false_fixes"] = false
    out["false_fix_rate"] = false / n
    hd = [abs(float(heading_diff_deg(r.est_heading_deg, r.gt_heading_deg))) for r in fixes
          if math.isfinite(r.est_heading_deg) and math.isfinite(r.gt_heading_deg)]
    out["median_heading_error_deg"] = float(np.median(hd)) if hd else None
    # NEES consistency: share of fixes whose normalised squared error lies inside the 95 % bound
    nees = []
    for r, e in zip(fixes, err_vec):
        cov = np.asarray(r.cov_en, float)
        if cov.shape == (2, 2) and np.all(np.isfinite(cov)):
            try:
                nees.append(float(e @ np.linalg.solve(cov, e)))
            except np.linalg.LinAlgError:
                continue
    out["nees_mean"] = float(np.mean(nees)) if nees else None
    out["cov_consistency_95"] = float(np.mean(np.array(nees) <= CHI2_2DOF_95)) if nees else None
    lat = np.array([r.latency_ms for r in records if math.isfinite(r.latency_ms)])
    out["latency_p50_ms"] = float(np.percentile(lat, 50)) if len(lat) else None
    out["latency_p95_ms"] = float(np.percentile(lat, 95)) if len(lat) else None
    stages = sorted({k for r in records for k in r.timings_ms})
    out["stage_p50_ms"] = {
        s: float(np.percentile([r.timings_ms[s] for r in records if s in r.timings_ms], 50)) for s in stages
    }
    out["dropped_frames"] = sum(r.dropped for r in records)
    return out


def metrics_table(metrics: dict, title: str = "") -> str:
    """A markdown table of the headline metrics."""

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f} %"

    def num(v, unit=""):
        return "n/a" if v is None else f"{v:.2f}{unit}"

    rows = [
        ("frames", str(metrics.get("frames", 0))),
        ("trusted fixes", f"{metrics.get('trusted_fixes', 0)} ({pct(metrics.get('share_localized'))})"),
        ("within 5 m / 10 m / 25 m", " / ".join(pct(metrics.get(f"within_{d}m")) for d in (5, 10, 25))),
        ("median / mean / p95 error", " / ".join(num(metrics.get(k), " m") for k in
                                                 ("median_error_m", "mean_error_m", "p95_error_m"))),
        ("median heading error", num(metrics.get("median_heading_error_deg"), " deg")),
        ("false fixes (> 25 m)", f"{metrics.get('false_fixes', 0)} ({pct(metrics.get('false_fix_rate'))})"),
        ("covariance consistency (95 % bound)", pct(metrics.get("cov_consistency_95"))),
        ("latency p50 / p95", f"{num(metrics.get('latency_p50_ms'), ' ms')} / {num(metrics.get('latency_p95_ms'), ' ms')}"),
        ("dropped frames", str(metrics.get("dropped_frames", 0))),
    ]
    stages = metrics.get("stage_p50_ms") or {}
    if stages:
        rows.append(("stage p50 (ms)", ", ".join(f"{k} {v:.0f}" for k, v in stages.items())))
    head = f"**{title}**\n\n" if title else ""
    return head + "| metric | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows) + "\n"


def save_records(records: list[FrameRecord], path: str | Path) -> Path:
    """Write per-frame records as JSON lines."""
    path = Path(path)
    with path.open("w") as f:
        for r in records:
            f.write(json.dumps(to_jsonable(asdict(r))) + "\n")
    return path


def plot_flight(records: list[FrameRecord], path: str | Path, geomap=None, title: str = "",
                spans: list[tuple[float, float, str]] | None = None) -> Path:
    """Trajectory plot (ground truth vs trusted fixes, on the map when given) and error over time.

    ``spans`` marks time windows on the error plot, e.g. ``[(t0, t1, "GPS dropout")]``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if not records:
        raise ValueError("no frames to plot")
    frame = LocalFrame(records[0].gt_lat, records[0].gt_lon)
    ge, gn, _ = frame.to_enu([r.gt_lat for r in records], [r.gt_lon for r in records])
    fixes = [r for r in records if r.trusted]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(14, 6.5), gridspec_kw={"width_ratios": [1.1, 1]})
    if geomap is not None:
        _draw_map(ax, geomap, frame, ge, gn)
    ax.plot(ge, gn, "-", color="white", lw=3.5, alpha=0.7, zorder=2)
    ax.plot(ge, gn, "-", color="tab:blue", lw=1.6, label="ground truth", zorder=3)
    if fixes:
        fe, fn, _ = frame.to_enu([r.est_lat for r in fixes], [r.est_lon for r in fixes])
        ee, en, _ = frame.to_enu([r.gt_lat for r in fixes], [r.gt_lon for r in fixes])
        err = np.hypot(fe - ee, fn - en)
        sc = ax.scatter(fe, fn, c=np.minimum(err, 30), cmap="RdYlGn_r", vmin=0, vmax=30, s=14, zorder=4,
                        edgecolors="black", linewidths=0.3, label="trusted fixes")
        fig.colorbar(sc, ax=ax, fraction=0.04, label="error (m, clipped at 30)")
        bad = err > FALSE_FIX_M
        if bad.any():
            ax.scatter(fe[bad], fn[bad], marker="x", color="red", s=60, zorder=5, label="false fix (> 25 m)")
    ax.set_aspect("equal")
    ax.set_xlabel("east (m)")
    ax.set_ylabel("north (m)")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("trajectory")
    t0 = records[0].t
    ts = np.array([r.t - t0 for r in records])
    errs = np.full(len(records), np.nan)
    if fixes:
        idx = [i for i, r in enumerate(records) if r.trusted]
        errs[idx] = err
    ax2.plot(ts, errs, ".", color="tab:green", ms=4, label="error of trusted fix")
    nofix = [i for i, r in enumerate(records) if not r.trusted]
    if nofix:
        ax2.plot(ts[nofix], np.zeros(len(nofix)), "|", color="gray", ms=10, label="no trusted fix")
    ax2.axhline(5, color="gray", ls=":", lw=1)
    ax2.axhline(FALSE_FIX_M, color="red", ls=":", lw=1)
    for a, b, label in spans or []:
        ax2.axvspan(a - t0, b - t0, color="orange", alpha=0.2, label=label)
    ax2.set_xlabel("time (s)")
    ax2.set_ylabel("horizontal error (m)")
    ax2.set_yscale("symlog", linthresh=5)
    ax2.legend(loc="upper right", fontsize=8)
    ax2.set_title("error over time")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _draw_map(ax, geomap, frame: LocalFrame, ge: np.ndarray, gn: np.ndarray, px: int = 700) -> None:
    """Background of the map around the trajectory, sampled on an ENU grid."""
    pad = 80.0
    x0, x1 = float(ge.min()) - pad, float(ge.max()) + pad
    y0, y1 = float(gn.min()) - pad, float(gn.max()) + pad
    step = max(x1 - x0, y1 - y0) / px
    xs = np.arange(x0, x1, step)
    ys = np.arange(y1, y0, -step)
    gx, gy = np.meshgrid(xs, ys)
    lat, lon, _ = frame.to_geodetic(gx, gy)
    rgb, valid = geomap.sample(lon, lat, crs="EPSG:4326", gsd_m=step)
    img = rgb.astype(float) / 255.0
    img[~valid] = 0.85
    ax.imshow(img, extent=(x0, x0 + step * len(xs), y1 - step * len(ys), y1), zorder=1)
