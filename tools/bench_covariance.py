"""How consistent is the verifier's covariance, with and without its model-error floor?

Every frame of a simulated flight is verified (no retrieval, no filter: the tiles nearest the
true position, as in tracking) once per floor value, on the same frames and candidates. For
each verified fix the 2-D NEES (error^T C^-1 error, ENU metres) is compared with the 95 % bound
of a chi-square with 2 degrees of freedom (5.991). A consistent covariance puts about 95 % of
fixes inside and has a mean NEES near 2; far above 95 % (mean << 2) is over-conservative, far
below is over-confident.

Usage (from the repository root, after `make bench` made results/bench/index and flight):
    python tools/bench_covariance.py --index results/bench/index --flight results/bench/flight \\
        [--floors 0.5,0.25,0] [--out docs/bench/covariance_floor.md]
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gleam_ros.core.flight import frame_priors, load_flight, read_image  # noqa: E402
from gleam_ros.core.geo import LocalFrame  # noqa: E402
from gleam_ros.core.index import TileIndex  # noqa: E402
from gleam_ros.core.verify import Verifier, VerifyConfig  # noqa: E402

CHI2_2DOF_95 = 5.991


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and print (and optionally write) a markdown report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", required=True, help="tile index directory (gleam index build)")
    ap.add_argument("--flight", required=True, help="simulated flight folder (gleam simulate)")
    ap.add_argument("--floors", default="0.5,0.25,0", help="comma-separated VerifyConfig.cov_floor_m values")
    ap.add_argument("--candidates", type=int, default=3, help="tiles nearest the true position verified per frame")
    ap.add_argument("--out", help="also write the report to this markdown file")
    a = ap.parse_args(argv)
    try:
        floors = [float(x) for x in a.floors.split(",")]
    except ValueError:
        ap.error(f"--floors must be comma-separated numbers, got {a.floors!r}")
    index = TileIndex.load(a.index)
    flight = load_flight(a.flight)
    rows = []
    for floor in floors:
        ver = Verifier(VerifyConfig(cov_floor_m=floor))
        rng = np.random.default_rng(0)  # the same altitude priors for every floor
        nees, errs = [], []
        for pose, path in tqdm(list(zip(flight.poses, flight.images)), desc=f"floor {floor:g} m"):
            priors = frame_priors(pose, 3.0, rng)
            lf = LocalFrame(pose.lat, pose.lon)
            near = index.tiles_within(pose.lat, pose.lon, 100.0)
            e, n, _ = lf.to_enu(index.centers_latlon[near, 0], index.centers_latlon[near, 1])
            order = np.argsort(np.hypot(e, n), kind="stable")[: a.candidates]
            res = ver.verify_candidates(read_image(path), [index.tile(int(near[i])) for i in order],
                                        flight.intrinsics, priors, stop_inliers=200)
            if not res or not res[0].ok:
                continue
            r = res[0]
            de, dn, _ = LocalFrame(r.lat, r.lon).to_enu(pose.lat, pose.lon)
            err = np.array([float(de), float(dn)])
            nees.append(float(err @ np.linalg.solve(np.asarray(r.cov_en)[:2, :2], err)))
            errs.append(float(np.hypot(*err)))
        nees_a = np.array(nees)
        rows.append((floor, len(nees), len(flight), float(np.mean(nees_a <= CHI2_2DOF_95)) if nees else float("nan"),
                     float(np.mean(nees_a)) if nees else float("nan"), float(np.median(errs)) if errs else float("nan")))
    lines = [
        f"Command: `python tools/bench_covariance.py --index {a.index} --flight {a.flight} --floors {a.floors}`  ",
        f"Date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}; per-frame verified fixes (no filter), "
        f"the {a.candidates} tiles nearest the truth per frame",
        "",
        "| cov_floor_m | verified fixes | inside the 95 % bound (goal 90-98 %) | mean NEES (consistent: 2) "
        "| median error |",
        "|---|---|---|---|---|",
    ]
    for floor, n, total, share, mean, med in rows:
        lines.append(f"| {floor:g} m | {n}/{total} | {100 * share:.1f} % | {mean:.2f} | {med:.2f} m |")
    report = "\n".join(lines) + "\n"
    print(report)
    if a.out:
        Path(a.out).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
