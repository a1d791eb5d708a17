"""The ``gleam bag`` subcommands (parsers live in :mod:`gleam_ros.cli`); heavy imports stay inside."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.errors import ConfigError


def _flight_spec(a: argparse.Namespace):
    from ..core.flight import FlightSpec

    return FlightSpec(frames=a.frames, alt_m=a.alt, alt_jitter_m=a.alt_jitter, speed_mps=a.speed, fps=a.fps,
                      heading=a.heading, tilt_std_deg=a.tilt_std, max_tilt_deg=a.max_tilt, width=a.width,
                      height=a.height, hfov_deg=a.hfov, photometric=a.photometric, seed=a.seed)


def _world(arg: str, size_m: float):
    """The procedural World of ``--world``: a seed (with ``--world-size``) or a `gleam world` folder."""
    from ..core.sim.world import WorldConfig, load_world, make_world

    if arg.isdigit():
        return make_world(WorldConfig(seed=int(arg), size_m=size_m))
    if not Path(arg).is_dir():
        raise ConfigError(f"--world {arg!r} is neither a seed nor a folder written by `gleam world`")
    return load_world(arg)


def _bag_map(a: argparse.Namespace):
    if a.world is not None:
        from ..core.maps import map_from_array

        world = _world(a.world, a.world_size)
        seed = world.cfg.seed
        if a.world_season:  # the same appearance `gleam world --variant-season` writes
            rgb = world.variant(season=a.world_season, seed=seed + 1000)
            return map_from_array(rgb, world.crs, world.transform, name=f"world{seed}_satellite_{a.world_season}")
        return world.satellite_map()
    from ..core.maps import open_map

    return open_map(a.map)


def cmd_simulate(a: argparse.Namespace) -> int:
    """`gleam bag simulate`: render a flight into a rosbag2 (no ROS needed)."""
    from .simulate import SensorSpec, parse_dropout, simulate_bag
    from .storage import bag_summary, check_output

    if (a.map is None) == (a.world is None):
        raise ConfigError("give exactly one of --map PATH or --world SEED|DIR")
    check_output(a.out, a.storage, a.overwrite)
    sensors = SensorSpec(gps_rate_hz=a.gps_rate, gps_noise_m=a.gps_noise, alt_noise_m=a.alt_noise,
                         dropout=parse_dropout(a.gps_dropout), dropout_mode=a.gps_dropout_mode,
                         compressed=a.compressed, jpeg_quality=a.jpeg_quality)
    if a.hard and a.platform != "vehicle":
        raise ConfigError("`gleam bag simulate --hard` is for --platform vehicle; a hard flight is `gleam simulate --hard`")
    if a.platform == "vehicle":
        path = _simulate_vehicle(a, sensors)
    else:
        path = simulate_bag(_bag_map(a), _flight_spec(a), a.out, sensors, storage=a.storage, overwrite=a.overwrite,
                            progress=not a.quiet)
    s = bag_summary(path)
    print(f"bag: {path} ({s['messages']} messages, {(s['end_ns'] - s['start_ns']) / 1e9:.1f} s)")
    for t, i in sorted(s["topics"].items()):
        print(f"  {t:32s} {i['type']:36s} {i['count']}")
    return 0


def _simulate_vehicle(a: argparse.Namespace, sensors) -> Path:
    """`gleam bag simulate --platform vehicle`: a drive on the --world's roads (see :mod:`.simulate_vehicle`)."""
    from ..core.camera import CameraIntrinsics
    from ..core.sim.drive import DriveRealism
    from .simulate_vehicle import check_drive, simulate_vehicle_bag

    if a.world is None:
        raise ConfigError("--platform vehicle drives a procedural world's roads: give --world SEED|DIR, not --map")
    if sensors.compressed:
        raise ConfigError("--compressed is not supported with --platform vehicle (raw rgb8 frames only)")
    if not (a.fps > 0 and a.frames >= 2):
        raise ConfigError(f"--frames must be >= 2 and --fps > 0, got {a.frames} and {a.fps}")
    duration = (a.frames - 1) / a.fps
    check_drive(duration, a.fps, a.odom_rate, a.modality, sensors, a.kidnap_at)  # before the world is made
    intr = CameraIntrinsics.from_fov(a.width, a.height, a.hfov)
    return simulate_vehicle_bag(_world(a.world, a.world_size), a.out, duration_s=duration, fps=a.fps,
                                odom_hz=a.odom_rate, modality=a.modality, intr=intr,
                                season=a.world_season or "autumn", sensors=sensors, kidnap_at_s=a.kidnap_at,
                                seed=a.seed, speed_mps=a.speed, storage=a.storage, overwrite=a.overwrite,
                                progress=not a.quiet, realism=DriveRealism() if a.hard else None)


def cmd_replay(a: argparse.Namespace) -> int:
    """`gleam bag replay`: publish a bag's raw messages at recorded timing."""
    from .storage import open_bag

    with open_bag(a.bag):  # a clear error before any ROS start-up
        pass
    from .replay import replay

    replay(a.bag, topics=a.topics or None, rate=a.rate, loop=a.loop, clock=a.clock, wait_subscribers=a.wait_subscribers,
           wait_topics=a.wait_topics or None, wait_timeout=a.wait_timeout, exclude=a.exclude or (), progress=a.progress)
    return 0


def cmd_record(a: argparse.Namespace) -> int:
    """`gleam bag record`: record topics raw into a bag until --duration, Ctrl-C or SIGTERM."""
    from .record import record

    record(a.out, a.topics, duration=a.duration, storage=a.storage, overwrite=a.overwrite)
    return 0


def _params(items: list[str]) -> dict:
    out = {}
    for it in items or []:
        if ":=" not in it:
            raise ConfigError(f"--param must be NAME:=VALUE, got {it!r}")
        k, v = it.split(":=", 1)
        out[k.strip()] = v.strip()
    return out


def cmd_eval(a: argparse.Namespace) -> int:
    """`gleam bag eval`: replay a bag through the localizer node process and score its outputs."""
    from .evaluate import EvalConfig, run_eval
    from .storage import open_bag

    with open_bag(a.bag):
        pass
    if not Path(a.index).is_dir():
        raise ConfigError(f"index directory not found: {a.index}")
    cfg = EvalConfig(bag=a.bag, index=a.index, out=a.out, rate=a.rate, backend=a.backend, model=a.model,
                     device=a.device, params=_params(a.param), map=a.map, startup_timeout=a.startup_timeout,
                     drain_timeout=a.drain_timeout, sim_time=not a.no_sim_time, domain_id=a.domain_id)
    run_eval(cfg)
    return 0
