"""Simulated flights as data: render one over any map to a folder, read it back, localize it.

A flight folder holds ``images/NNNNNN.jpg``, ``ground_truth.csv`` (one row per frame: t, lat,
lon, alt_m, heading_deg, pitch_deg, roll_deg, image) and ``camera.json`` (intrinsics and how
the flight was made). ``gleam simulate`` writes it, ``gleam eval`` and the bag tools read it.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from .camera import CameraIntrinsics
from .errors import ConfigError, GleamError, InputError
from .evaluate import FrameRecord
from .geo import transform
from .localizer import Localizer
from .sim.camera_sim import Pose, flight_path, simulate_flight
from .verify import Priors

GT_FIELDS = ("t", "lat", "lon", "alt_m", "heading_deg", "pitch_deg", "roll_deg", "image")


@dataclass(frozen=True)
class FlightSpec:
    """How to simulate a flight (defaults: a UAV survey at 100-150 m, unknown yaw, ±15° tilt)."""

    frames: int = 120
    alt_m: float = 120.0
    alt_jitter_m: float = 15.0
    speed_mps: float = 12.0
    fps: float = 1.0
    heading: str = "random"  # "along" (known-ish yaw) or "random" (unknown yaw)
    tilt_std_deg: float = 6.0
    max_tilt_deg: float = 15.0
    width: int = 640
    height: int = 480
    hfov_deg: float = 60.0
    photometric: float = 1.0  # strength of photometric change (0 = none)
    margin_m: float = 90.0  # keep the camera this far inside the map bounds
    seed: int = 0

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ConfigError(f"FlightSpec.frames must be >= 1, got {self.frames}")
        if not (10.0 <= self.alt_m <= 3000.0):
            raise ConfigError(f"FlightSpec.alt_m must be within [10, 3000], got {self.alt_m}")
        if self.heading not in ("along", "random"):
            raise ConfigError(f"FlightSpec.heading must be 'along' or 'random', got {self.heading!r}")
        if not (self.speed_mps > 0 and self.fps > 0):
            raise ConfigError("FlightSpec.speed_mps and fps must be positive")

    def intrinsics(self) -> CameraIntrinsics:
        """The simulated camera."""
        return CameraIntrinsics.from_fov(self.width, self.height, self.hfov_deg)


def survey_waypoints(geomap, spec: FlightSpec, max_turn_deg: float = 60.0) -> list[tuple[float, float]]:
    """A seeded wandering survey inside the map bounds, long enough for ``spec.frames`` frames.

    Legs of 80-200 m; the course changes by at most ``max_turn_deg`` at each waypoint (a vehicle
    cannot reverse at speed in an instant; the temporal filter's motion model assumes as much).
    Every point of every leg keeps ``margin_m`` of valid imagery around it, so a map with holes
    (missing source images) is flown over its imagery, not over the holes.
    """
    xmin, ymin, xmax, ymax = geomap.bounds()
    m = spec.margin_m
    if xmax - xmin <= 2 * m or ymax - ymin <= 2 * m:
        raise ConfigError(f"map {geomap.name!r} is too small for a flight with margin {m} m")
    rng = np.random.default_rng(spec.seed)
    need = spec.frames * spec.speed_mps / spec.fps * 1.05 + 1.0
    for _ in range(500):
        x, y = rng.uniform(xmin + m, xmax - m), rng.uniform(ymin + m, ymax - m)
        if _leg_over_map(geomap, x, y, x, y, m):
            break
    else:
        raise ConfigError(f"map {geomap.name!r} has no {2 * m:.0f} m square of valid imagery to start a flight")
    course = rng.uniform(0, 2 * math.pi)
    pts, length = [(x, y)], 0.0
    while length < need:
        for attempt in range(200):
            turn = math.radians(max_turn_deg) * (1.0 + attempt / 20.0)  # widen only when boxed in
            c = course + rng.uniform(-turn, turn)
            leg = rng.uniform(80.0, 200.0) * (0.97 ** attempt)
            nx, ny = x + leg * math.cos(c), y + leg * math.sin(c)
            if xmin + m <= nx <= xmax - m and ymin + m <= ny <= ymax - m and _leg_over_map(geomap, x, y, nx, ny, m):
                break
        else:
            raise ConfigError(f"cannot plan a survey inside map {geomap.name!r} with margin {m} m")
        length += math.hypot(nx - x, ny - y)
        x, y, course = nx, ny, c
        pts.append((x, y))
    lon, lat = transform([p[0] for p in pts], [p[1] for p in pts], geomap.working_crs, "EPSG:4326")
    return list(zip(np.atleast_1d(lat).tolist(), np.atleast_1d(lon).tolist()))


def _leg_over_map(geomap, x0: float, y0: float, x1: float, y1: float, margin: float) -> bool:
    """Whether a square of half-side ``margin`` around every point of the leg is valid imagery."""
    n = max(2, int(math.hypot(x1 - x0, y1 - y0) / 10.0) + 1)
    t = np.linspace(0.0, 1.0, n)
    g = np.linspace(-margin, margin, 5)
    gx, gy = np.meshgrid(g, g)
    xs = (x0 + t * (x1 - x0))[:, None] + gx.ravel()[None, :]
    ys = (y0 + t * (y1 - y0))[:, None] + gy.ravel()[None, :]
    _, valid = geomap.sample(xs, ys)
    return bool(valid.all())


def make_poses(geomap, spec: FlightSpec) -> list[Pose]:
    """Ground-truth poses of a survey flight over ``geomap``."""
    poses = flight_path(
        survey_waypoints(geomap, spec), spec.alt_m, spec.speed_mps, spec.fps, heading=spec.heading,
        tilt_std_deg=spec.tilt_std_deg, max_tilt_deg=spec.max_tilt_deg, alt_jitter_m=spec.alt_jitter_m,
        seed=spec.seed,
    )
    return poses[: spec.frames]


def simulate_to_folder(geomap, spec: FlightSpec, out_dir: str | Path, progress: bool = True, frames=None,
                       poses: list[Pose] | None = None, extra_meta: dict | None = None) -> Path:
    """Render a flight over ``geomap`` into a flight folder; returns the folder.

    ``frames`` (optional): an iterable of :class:`SimFrame` rendered by someone else (e.g. the hard flights
    of :mod:`gleam_ros.core.sim.realism`) with their ``poses``; ``extra_meta`` is added to ``camera.json``.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    intr = spec.intrinsics()
    poses = make_poses(geomap, spec) if poses is None else poses
    rows = []
    if frames is None:
        frames = simulate_flight(geomap, poses, intr, photometric_strength=spec.photometric, seed=spec.seed)
    if progress:
        from tqdm import tqdm

        frames = tqdm(frames, total=len(poses), desc="render", unit="frame")
    for i, item in enumerate(frames):
        pose, rgb = item[0], item[1]
        name = f"images/{i:06d}.jpg"
        cv2.imwrite(str(out / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        rows.append({"t": pose.t, "lat": pose.lat, "lon": pose.lon, "alt_m": pose.alt_m,
                     "heading_deg": pose.heading_deg, "pitch_deg": pose.pitch_deg, "roll_deg": pose.roll_deg,
                     "image": name})
    with (out / "ground_truth.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=GT_FIELDS)
        w.writeheader()
        w.writerows(rows)
    meta = {"intrinsics": asdict(intr), "spec": asdict(spec), "map": geomap.name, "frames": len(rows),
            **(extra_meta or {})}
    (out / "camera.json").write_text(json.dumps(meta, indent=2))
    return out


@dataclass
class Flight:
    """A flight folder read back: intrinsics and per-frame ground truth."""

    folder: Path
    intrinsics: CameraIntrinsics
    poses: list[Pose]
    images: list[Path]

    def __len__(self) -> int:
        return len(self.poses)


def load_flight(folder: str | Path) -> Flight:
    """Read a flight folder written by :func:`simulate_to_folder`; errors name the file at fault."""
    folder = Path(folder)
    cam, gt = folder / "camera.json", folder / "ground_truth.csv"
    for p in (cam, gt):
        if not p.is_file():
            raise InputError(f"not a flight folder: {p} is missing")
    try:
        intr = CameraIntrinsics(**json.loads(cam.read_text())["intrinsics"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{cam}: unreadable camera intrinsics ({exc})") from None
    poses, images = [], []
    with gt.open() as f:
        reader = csv.DictReader(f)
        missing = set(GT_FIELDS) - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"{gt}: missing columns {sorted(missing)}")
        for i, row in enumerate(reader):
            try:
                poses.append(Pose(t=float(row["t"]), lat=float(row["lat"]), lon=float(row["lon"]),
                                  alt_m=float(row["alt_m"]), heading_deg=float(row["heading_deg"]),
                                  pitch_deg=float(row["pitch_deg"]), roll_deg=float(row["roll_deg"])))
            except ValueError as exc:
                raise InputError(f"{gt}: row {i + 2}: {exc}") from None
            images.append(folder / row["image"])
    return Flight(folder, intr, poses, images)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8; a missing or corrupt file raises InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise InputError(f"cannot decode image {path} (corrupt or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class AttitudeNoise:
    """The attitude a UAV's autopilot reports with each frame, as 1-sigma errors in degrees.

    ``pitch_roll_std_deg``: camera pitch and roll from the IMU / gimbal (an AHRS or gimbal encoder gives
    0.5-1 deg; 1 deg by default). ``heading_std_deg``: true-north heading from the magnetometer (several
    degrees after calibration and declination; 5 deg by default). ``None`` leaves that prior out.
    """

    pitch_roll_std_deg: float | None = 1.0
    heading_std_deg: float | None = 5.0

    def __post_init__(self) -> None:
        for name in ("pitch_roll_std_deg", "heading_std_deg"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 90.0):
                raise ConfigError(f"AttitudeNoise.{name} must be None or a number of degrees within [0, 90], got {v!r}")


def frame_priors(pose: Pose, alt_noise_m: float, rng: np.random.Generator, attitude: AttitudeNoise | None = None,
                 attitude_rng: np.random.Generator | None = None) -> Priors:
    """What a UAV's sensors tell the localizer about a frame taken at ``pose``.

    Always the barometric height above ground (``alt_noise_m`` 1-sigma, drawn from ``rng``); with
    ``attitude`` also pitch / roll and heading, the truth plus Gaussian noise of the stated 1-sigma, drawn
    from ``attitude_rng`` (default ``rng``; a separate generator keeps the altitude draws of a flight the
    same with and without attitude).
    """
    priors = Priors(alt_m=max(1.0, pose.alt_m + float(rng.normal(0.0, alt_noise_m))))
    if attitude is None:
        return priors
    r = rng if attitude_rng is None else attitude_rng
    kw = {}
    if attitude.pitch_roll_std_deg is not None:
        dp, dr = r.normal(0.0, attitude.pitch_roll_std_deg, 2)
        kw.update(pitch_deg=pose.pitch_deg + float(dp), roll_deg=pose.roll_deg + float(dr))
    if attitude.heading_std_deg is not None:
        kw["heading_deg"] = (pose.heading_deg + float(r.normal(0.0, attitude.heading_std_deg))) % 360.0
    return replace(priors, **kw)


def run_flight(localizer: Localizer, flight: Flight, alt_prior: bool = True, alt_noise_m: float = 3.0,
               progress: bool = True, seed: int = 0, attitude: AttitudeNoise | None = None) -> Iterator[FrameRecord]:
    """Localize every frame of ``flight``; yields one :class:`FrameRecord` per frame.

    ``attitude`` (with ``alt_prior``): also give each frame noisy pitch / roll / heading priors
    (:func:`frame_priors`). Frames that cannot be read are recorded as dropped (with the reason), never a crash.
    """
    rng = np.random.default_rng(seed)
    att_rng = np.random.default_rng([seed, 1])
    items = zip(flight.poses, flight.images)
    if progress:
        from tqdm import tqdm

        items = tqdm(items, total=len(flight), desc="localize", unit="frame")
    for pose, img_path in items:
        rec = FrameRecord(t=pose.t, gt_lat=pose.lat, gt_lon=pose.lon, gt_heading_deg=pose.heading_deg)
        try:
            t0 = time.perf_counter()
            rgb = read_image(img_path)
            decode_ms = (time.perf_counter() - t0) * 1e3
            priors = frame_priors(pose, alt_noise_m, rng, attitude, att_rng) if alt_prior else None
            res = localizer.localize(rgb, t=pose.t, intrinsics=flight.intrinsics, priors=priors)
        except GleamError as exc:
            rec.dropped, rec.note = True, str(exc)
            yield rec
            continue
        rec.timings_ms = {"decode": decode_ms, **res.timings_ms}
        rec.latency_ms = decode_ms + res.timings_ms["total"]
        rec.search_note = res.search_note
        raw = [h for h in res.hypotheses if not h.filtered]
        if raw:  # retrieval's best tile, for retrieval metrics
            best = max(raw, key=lambda h: h.similarity)
            rec.top_tile_lat, rec.top_tile_lon = best.tile_lat, best.tile_lon
        if res.fix is not None:
            rec.trusted = True
            rec.est_lat, rec.est_lon = res.fix.lat, res.fix.lon
            rec.est_heading_deg = res.fix.heading_deg
            rec.cov_en = np.asarray(res.fix.cov_en).tolist()
        elif res.filter is not None:
            rec.note = res.filter.reason
        yield rec
