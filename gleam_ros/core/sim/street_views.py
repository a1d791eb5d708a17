"""Street-level views of a procedural world written to disk (what ``gleam world --views`` and
``gleam simulate --world DIR --modality ground|panorama`` do).

- :func:`write_views`: N sample forward frames and N panoramas at random road poses, with ``views.csv``
  (lat, lon, x, y, heading, height, pitch, roll, fx, fy, cx, cy of every image).
- :func:`simulate_street_to_folder`: a flight folder of street-level frames at road poses, in the layout of
  :func:`gleam_ros.core.flight.simulate_to_folder` (``images/NNNNNN.jpg``, ``ground_truth.csv``,
  ``camera.json``): ``alt_m`` is the camera height above the ground; extra columns ``x``, ``y`` (UTM metres
  of ``camera.json``'s ``crs``) and ``modality``. A panorama's ``camera.json`` says
  ``"projection": "equirectangular"``; its ``intrinsics`` then hold the image size and the angular scale
  (``fx = fy = width / 2 pi`` pixels per radian, the centre column along the heading).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from .. import geo
from ..camera import CameraIntrinsics
from ..errors import ConfigError
from .street import StreetScene, pose_latlon, render_ground, render_panorama, road_poses

#: Columns of ``views.csv``.
VIEW_FIELDS = ("image", "modality", "lat", "lon", "x", "y", "heading_deg", "height_m", "pitch_deg", "roll_deg",
               "fx", "fy", "cx", "cy")
MODALITIES = ("ground", "panorama")


def _write_jpeg(path: Path, rgb: np.ndarray, quality: int = 92) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])


def panorama_intrinsics(width: int, height: int) -> CameraIntrinsics:
    """The angular scale of an equirectangular panorama as intrinsics (pixels per radian, centre pixel)."""
    f = width / (2.0 * math.pi)
    return CameraIntrinsics(width, height, f, f, (width - 1) / 2.0, (height - 1) / 2.0)


def write_views(world, out_dir: str | Path, n: int, seed: int = 0, intr: CameraIntrinsics | None = None,
                pano_size: tuple[int, int] = (1024, 512), progress: bool = True) -> Path:
    """Render ``n`` forward frames and ``n`` panoramas at random road poses of ``world`` into ``out_dir/views``.

    Returns the path of ``views.csv`` (written into ``out_dir``; images under ``views/``).
    """
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ConfigError(f"views: n must be a positive integer, got {n!r}")
    intr = CameraIntrinsics.from_fov(640, 480, 70.0) if intr is None else intr
    out = Path(out_dir)
    (out / "views").mkdir(parents=True, exist_ok=True)
    scene = StreetScene.from_world(world)
    rng = np.random.default_rng([int(seed), 17])
    poses = road_poses(world, 2 * int(n), rng)
    pano_k = panorama_intrinsics(*pano_size)
    jobs = [("ground", p, k) for k, p in enumerate(poses[:n])] + [("panorama", p, k) for k, p in enumerate(poses[n:])]
    if progress:
        from tqdm import tqdm

        jobs = tqdm(jobs, desc="street views", unit="view")
    rows = []
    for modality, pose, k in jobs:
        if modality == "ground":
            rgb, K = render_ground(scene, pose, intr), intr
        else:
            rgb, K = render_panorama(scene, pose, *pano_size), pano_k
        name = f"views/{modality}_{k:03d}.jpg"
        _write_jpeg(out / name, rgb)
        lat, lon = pose_latlon(world, pose)
        rows.append({"image": name, "modality": modality, "lat": f"{lat:.8f}", "lon": f"{lon:.8f}",
                     "x": f"{pose.x:.3f}", "y": f"{pose.y:.3f}", "heading_deg": f"{pose.heading_deg:.3f}",
                     "height_m": f"{pose.height_m:.3f}", "pitch_deg": f"{pose.pitch_deg:.3f}",
                     "roll_deg": f"{pose.roll_deg:.3f}", "fx": f"{K.fx:.4f}", "fy": f"{K.fy:.4f}",
                     "cx": f"{K.cx:.4f}", "cy": f"{K.cy:.4f}"})
    path = out / "views.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=VIEW_FIELDS)
        w.writeheader()
        w.writerows(rows)
    return path


def simulate_street_to_folder(world, modality: str, frames: int, out_dir: str | Path, season: str | None = None,
                              seed: int = 0, intr: CameraIntrinsics | None = None,
                              pano_size: tuple[int, int] = (1024, 512), photometric: float = 0.0,
                              progress: bool = True) -> Path:
    """Street-level frames of ``world`` at random road poses into a flight folder; returns the folder.

    ``modality`` "ground" (forward pinhole ``intr``, default 640x480 with a 70° horizontal field of view) or
    "panorama" (``pano_size``); ``season`` of the frames (default: the world's own); ``photometric`` > 0 applies
    :func:`gleam_ros.core.sim.camera_sim.random_photometric` of that strength to every frame.
    """
    from ..flight import GT_FIELDS
    from .camera_sim import apply_photometric, random_photometric

    if modality not in MODALITIES:
        raise ConfigError(f"street modality must be one of {MODALITIES}, got {modality!r}")
    if not (isinstance(frames, (int, np.integer)) and frames >= 1):
        raise ConfigError(f"frames must be a positive integer, got {frames!r}")
    intr = CameraIntrinsics.from_fov(640, 480, 70.0) if intr is None else intr
    K = intr if modality == "ground" else panorama_intrinsics(*pano_size)
    scene = StreetScene.from_world(world, season=season)
    rng = np.random.default_rng([int(seed), 29])
    poses = road_poses(world, int(frames), rng)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    it = enumerate(poses)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, total=len(poses), desc=f"render {modality}", unit="frame")
    rows = []
    for i, pose in it:
        rgb = render_ground(scene, pose, intr) if modality == "ground" else render_panorama(scene, pose, *pano_size)
        if photometric > 0:
            rgb = apply_photometric(rgb, random_photometric(rng, photometric), rng)
        name = f"images/{i:06d}.jpg"
        _write_jpeg(out / name, rgb)
        lat, lon = pose_latlon(world, pose)
        rows.append({"t": float(i), "lat": lat, "lon": lon, "alt_m": pose.height_m, "heading_deg": pose.heading_deg,
                     "pitch_deg": pose.pitch_deg, "roll_deg": pose.roll_deg, "image": name, "x": pose.x,
                     "y": pose.y, "modality": modality})
    with (out / "ground_truth.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=(*GT_FIELDS, "x", "y", "modality"))
        w.writeheader()
        w.writerows(rows)
    meta = {"intrinsics": asdict(K), "projection": "pinhole" if modality == "ground" else "equirectangular",
            "modality": modality, "season": scene.season, "world": asdict(world.cfg), "crs": geo.crs_key(world.crs),
            "seed": int(seed), "photometric": float(photometric), "frames": len(rows),
            "map": f"world{world.cfg.seed}"}
    (out / "camera.json").write_text(json.dumps(meta, indent=2))
    return out
