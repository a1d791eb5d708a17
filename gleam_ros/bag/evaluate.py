"""``gleam bag eval``: run the localizer node on a recorded (or simulated) flight bag and score it.

The node graph is the one a vehicle runs: the localizer node is a separate process
(``python -m gleam_ros.nodes.localizer_node``, autostart, topics remapped to the bag's) in a ROS
domain of its own with localhost discovery. This process replays the bag at ``rate`` (with
``/clock``; the node runs on sim time), records the node's outputs (``~/hypotheses``, ``~/fix``,
``~/pose``, ``/diagnostics``) into ``outputs.mcap`` and scores them against the bag's ground truth
(``/ground_truth/fix``, ``/ground_truth/pose``) with :mod:`gleam_ros.core.evaluate`, the same metrics
as ``gleam eval``.

Latency is measured on one clock: the wall time the hypotheses of a frame arrived here minus the
wall time this process published that frame (bag stamps are bag time, not wall time).
GPS fallback behaviour: inside the bag's GPS-dropout window the node should publish ``~/fix``
(STATUS_FIX), outside it nothing (shadow mode).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import ros_env
from ..process import ManagedProcess
from ..core.errors import GleamError
from .storage import BagError, BagWriter, deserialize, flight_info, header_stamp_ns, open_bag

NS = 1_000_000_000
NODE_MODULE = "gleam_ros.nodes.localizer_node"
NODE_NAME = "gleam_localizer"
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
OUTPUT_TYPES = {
    "hypotheses": "gleam_ros/msg/GeoPoseHypotheses",
    "fix": "sensor_msgs/msg/NavSatFix",
    "pose": "geometry_msgs/msg/PoseWithCovarianceStamped",
}
STAMP_TOL_NS = 2_000_000  # a node output belongs to the frame whose stamp it carries (within 2 ms)


class NodeError(GleamError):
    """The localizer node did not start, or died."""


@dataclass
class EvalConfig:
    """What ``gleam bag eval`` runs (see the CLI help for each field)."""

    bag: str
    index: str
    out: str
    rate: float = 1.0
    backend: str = "torch"
    model: str | None = None
    device: str | None = None
    params: dict = field(default_factory=dict)  # extra node parameters, name -> value text
    map: str | None = None
    startup_timeout: float = 180.0
    drain_timeout: float = 15.0
    sim_time: bool = True
    domain_id: int | None = None
    node_name: str = NODE_NAME


# ------------------------------------------------------------------------------------------ the bag


@dataclass
class BagPlan:
    """What a bag holds for evaluation: its topics by role, ground truth and the dropout window."""

    topics: dict  # role -> topic (image, camera_info, gps, altitude, imu, gt_fix, gt_pose)
    types: dict  # topic -> type
    compressed: bool
    gt: dict  # stamp ns -> (lat, lon)
    gt_heading: dict  # stamp ns -> heading deg
    frames: list  # image header stamps (ns), in bag order
    info: dict | None
    window_ns: tuple[int, int] | None


def _heading_from_quat(q) -> float:
    """Heading (deg clockwise from north) of the body x axis of an ENU orientation quaternion."""
    yaw = math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))
    return (90.0 - math.degrees(yaw)) % 360.0


def plan_bag(path: str | Path) -> BagPlan:
    """Read what evaluation needs from a bag; BagError names what is missing."""
    with open_bag(path) as r:
        types = {c.topic: c.msgtype for c in r.connections}
        info = flight_info(r)
        named = (info or {}).get("topics", {})

        def by_role(role: str, default: str, msgtype: str | tuple) -> str | None:
            want = (msgtype,) if isinstance(msgtype, str) else msgtype
            for t in (named.get(role), default):
                if t and types.get(t) in want:
                    return t
            cands = [t for t, ty in types.items() if ty in want and not t.startswith("/ground_truth")]
            return cands[0] if len(cands) == 1 else None

        topics = {
            "image": by_role("image_compressed", "/camera/image_raw/compressed", "sensor_msgs/msg/CompressedImage")
            or by_role("image", "/camera/image_raw", IMAGE_TYPES),
            "camera_info": by_role("camera_info", "/camera/camera_info", "sensor_msgs/msg/CameraInfo"),
            "gps": by_role("gps", "/gps/fix", "sensor_msgs/msg/NavSatFix"),
            "altitude": by_role("altitude", "/altitude", "sensor_msgs/msg/Range"),
            "imu": by_role("imu", "/imu", "sensor_msgs/msg/Imu"),
            "odom": by_role("odom", "/odom", "nav_msgs/msg/Odometry"),
            "gt_fix": "/ground_truth/fix" if types.get("/ground_truth/fix") == "sensor_msgs/msg/NavSatFix" else None,
            "gt_pose": "/ground_truth/pose" if types.get("/ground_truth/pose") == "geometry_msgs/msg/PoseStamped" else None,
        }
        if topics["image"] is None:
            raise BagError(f"bag {path} has no camera image topic (sensor_msgs/Image or CompressedImage)")
        if topics["gt_fix"] is None:
            raise BagError(f"bag {path} has no /ground_truth/fix (sensor_msgs/NavSatFix): nothing to score against")
        gt, gt_heading, frames = {}, {}, []
        wanted = {topics["image"], topics["gt_fix"], topics["gt_pose"]}
        conns = [c for c in r.connections if c.topic in wanted]
        for conn, t_ns, data in r.messages(connections=conns):
            if conn.topic == topics["image"]:
                frames.append(header_stamp_ns(data) or t_ns)
            elif conn.topic == topics["gt_fix"]:
                m = deserialize(data, conn.msgtype)
                gt[m.header.stamp.sec * NS + m.header.stamp.nanosec] = (m.latitude, m.longitude)
            else:
                m = deserialize(data, conn.msgtype)
                gt_heading[m.header.stamp.sec * NS + m.header.stamp.nanosec] = _heading_from_quat(m.pose.orientation)
    if not frames:
        raise BagError(f"bag {path} has no camera frames")
    window = None
    if info and info.get("gps_dropout_ns"):
        a, b = info["gps_dropout_ns"]
        window = (int(a), int(b))
    return BagPlan(topics, types, types[topics["image"]] == "sensor_msgs/msg/CompressedImage", gt, gt_heading,
                   frames, info, window)


def _nearest(d: dict, ns: int, tol_ns: int):
    if ns in d:
        return d[ns]
    if not d:
        return None
    keys = np.fromiter(d.keys(), np.int64)
    k = int(keys[np.argmin(np.abs(keys - ns))])
    return d[k] if abs(k - ns) <= tol_ns else None


# ------------------------------------------------------------------------------------- the node


def allocate_domain_id() -> int:
    """ROS_DOMAIN_ID from the environment, else one picked from this process id (1..100)."""
    env = os.environ.get("ROS_DOMAIN_ID", "").strip()
    if env:
        try:
            return int(env)
        except ValueError:
            raise BagError(f"ROS_DOMAIN_ID must be an integer, got {env!r}") from None
    return 1 + os.getpid() % 100


def node_command(cfg: EvalConfig, plan: BagPlan) -> list[str]:
    """Command line of the localizer node process: autostart, parameters, remappings to the bag's topics."""
    params = {"index_path": str(Path(cfg.index).resolve()), "autostart": "true", "backend": cfg.backend,
              "use_sim_time": "true" if cfg.sim_time else "false"}
    if cfg.model:
        params["model_path"] = str(Path(cfg.model).resolve())
    if cfg.device:
        params["device"] = cfg.device
    if plan.compressed:
        params["compressed"] = "true"
    params.update(cfg.params)
    args = [sys.executable, "-m", NODE_MODULE, "--ros-args"]
    vehicle = vehicle_node_setup(plan)
    if vehicle is not None:  # a drive: the vehicle parameter file first, the bag's modality, then --param
        args += ["--params-file", str(vehicle[0])]
        params = {**params, "modality": vehicle[1], **cfg.params}
    for k, v in params.items():
        args += ["-p", f"{k}:={v}"]
    remap = {"camera_info": plan.topics["camera_info"], "gps/fix": plan.topics["gps"],
             "altitude": plan.topics["altitude"], "imu": plan.topics["imu"], "odom": plan.topics.get("odom")}
    remap["image/compressed" if plan.compressed else "image"] = plan.topics["image"]
    for k, v in remap.items():
        if v:
            args += ["-r", f"{k}:={v}"]
    return args


def config_file(platform: str) -> Path:
    """config/PLATFORM.yaml of this checkout (or of the colcon install); BagError when there is none."""
    from .. import ros_env

    cands = [Path(__file__).resolve().parents[2] / "config" / f"{platform}.yaml"]
    prefix = ros_env.install_prefix()
    if prefix is not None:
        cands.append(prefix / "share" / "gleam_ros" / "config" / f"{platform}.yaml")
    for c in cands:
        if c.is_file():
            return c
    raise BagError(f"no parameter file for platform {platform!r}: looked for {', '.join(map(str, cands))}")


def vehicle_node_setup(plan: BagPlan) -> tuple[Path, str] | None:
    """(config/vehicle.yaml, modality) for a drive bag (``gleam bag simulate --platform vehicle``), else None."""
    info = plan.info or {}
    if info.get("platform") != "vehicle":
        return None
    if plan.topics.get("odom") is None:
        raise BagError("the drive bag has no odometry topic (nav_msgs/Odometry): the vehicle localizer needs it")
    return config_file("vehicle"), str(info.get("modality") or "ground")


@dataclass
class Outputs:
    """What the node published, decoded, with the wall time each message arrived here."""

    hypotheses: dict = field(default_factory=dict)  # stamp ns -> (msg, receipt wall s)
    fixes: list = field(default_factory=list)  # (stamp ns, status, lat, lon, cov, receipt wall s)
    poses: list = field(default_factory=list)  # (stamp ns, receipt wall s)
    diagnostics: dict = field(default_factory=dict)  # "status/key" -> last value (text)
    counts: dict = field(default_factory=dict)
    last_wall: float = 0.0


def _collector(out: Outputs, node_name: str, classes: dict):
    from rclpy.serialization import deserialize_message

    hyp, fix, pose = (f"/{node_name}/{k}" for k in ("hypotheses", "fix", "pose"))

    def on_message(topic: str, msgtype: str, data: bytes, receipt_ns: int) -> None:
        wall = receipt_ns / NS
        out.last_wall = wall
        out.counts[topic] = out.counts.get(topic, 0) + 1
        if topic == "/diagnostics":
            msg = deserialize_message(data, classes[msgtype])
            for st in msg.status:
                for kv in st.values:
                    out.diagnostics[f"{st.name}/{kv.key}"] = kv.value
            return
        msg = deserialize_message(data, classes[msgtype])
        ns = msg.header.stamp.sec * NS + msg.header.stamp.nanosec
        if topic == hyp:
            out.hypotheses.setdefault(ns, (msg, wall))
        elif topic == fix:
            c = msg.position_covariance
            out.fixes.append((ns, int(msg.status.status), msg.latitude, msg.longitude, [[c[0], c[1]], [c[3], c[4]]], wall))
        elif topic == pose:
            out.poses.append((ns, wall))

    return on_message


# ----------------------------------------------------------------------------------------- scoring


def frame_records(plan: BagPlan, outputs: Outputs, published: dict) -> list:
    """One :class:`gleam_ros.core.evaluate.FrameRecord` per replayed camera frame."""
    from ..core.evaluate import FrameRecord

    records = []
    for ns in plan.frames:
        if ns not in published:
            continue  # not replayed (stopped early)
        gt = _nearest(plan.gt, ns, STAMP_TOL_NS)
        if gt is None:
            continue
        heading = _nearest(plan.gt_heading, ns, STAMP_TOL_NS)
        rec = FrameRecord(t=ns / NS, gt_lat=gt[0], gt_lon=gt[1], gt_heading_deg=math.nan if heading is None else heading)
        got = outputs.hypotheses.get(ns) or _nearest(outputs.hypotheses, ns, STAMP_TOL_NS)
        if got is None:
            rec.dropped, rec.note = True, "no hypotheses published for this frame (dropped by the node)"
            records.append(rec)
            continue
        msg, wall = got
        rec.latency_ms = (wall - published[ns]) * 1e3
        rec.timings_ms = {"node_reported": msg.latency.sec * 1e3 + msg.latency.nanosec / 1e6}
        if msg.has_trusted_fix and msg.hypotheses:
            h = msg.hypotheses[0]
            rec.trusted = True
            rec.est_lat, rec.est_lon = h.latitude, h.longitude
            rec.est_heading_deg = _heading_from_quat(h.orientation)
            c = h.covariance
            rec.cov_en = [[c[0], c[1]], [c[6], c[7]]]
        records.append(rec)
    return records


def fallback_metrics(plan: BagPlan, outputs: Outputs, published: dict) -> dict:
    """How the node behaved around the GPS dropout: ~/fix inside the window, none outside."""
    from ..core.geo import distance_m

    frames = [ns for ns in plan.frames if ns in published]
    w = plan.window_ns
    # GPS is sampled on its own clock: the last NO_FIX sample of the window can be the newest GPS a node
    # has for a frame up to one GPS period after the window. Such frames count as neither inside nor outside.
    rate = float(((plan.info or {}).get("sensors") or {}).get("gps_rate_hz") or 5.0)
    grace = int(NS / rate) + NS // 50
    inside = (lambda ns: w[0] <= ns <= w[1]) if w else (lambda ns: False)
    outside = (lambda ns: ns < w[0] or ns > w[1] + grace) if w else (lambda ns: True)
    good = [f for f in outputs.fixes if f[1] >= 0 and math.isfinite(f[2]) and math.isfinite(f[3])]
    fix_stamps = {f[0] for f in good}
    win_frames = [ns for ns in frames if inside(ns)]
    with_fix = [ns for ns in win_frames
                if ns in fix_stamps or any(abs(s - ns) <= STAMP_TOL_NS for s in fix_stamps)]
    errs = []
    for ns, _st, lat, lon, _c, _w in good:
        gt = _nearest(plan.gt, ns, STAMP_TOL_NS)
        if gt is not None and inside(ns):
            errs.append(float(distance_m(gt[0], gt[1], lat, lon)))
    fix_lat = [(f[5] - published[f[0]]) * 1e3 for f in good if f[0] in published]
    first = min((f[0] for f in good if inside(f[0])), default=None)
    return {
        "window_s": [(w[0] - plan.frames[0]) / NS, (w[1] - plan.frames[0]) / NS] if w else None,
        "window_ns": list(w) if w else None,
        "mode": (plan.info or {}).get("gps_dropout_mode"),
        "frames_in_window": len(win_frames),
        "frames_in_window_with_fix": len(with_fix),
        "share_in_window_with_fix": len(with_fix) / len(win_frames) if win_frames else None,
        "frames_outside_window": sum(1 for ns in frames if outside(ns)),
        "grace_after_window_s": grace / NS if w else None,
        "fix_msgs_outside_window": sum(1 for f in outputs.fixes if outside(f[0])),
        "fix_msgs_in_window": sum(1 for f in outputs.fixes if inside(f[0])),
        "no_fix_msgs": sum(1 for f in outputs.fixes if f[1] < 0),
        "pose_msgs_outside_window": sum(1 for p in outputs.poses if outside(p[0])),
        "pose_msgs_in_window": sum(1 for p in outputs.poses if inside(p[0])),
        "fallback_median_error_m": float(np.median(errs)) if errs else None,
        "fallback_max_error_m": float(np.max(errs)) if errs else None,
        "first_fix_after_dropout_s": (first - w[0]) / NS if (w and first is not None) else None,
        "fix_latency_p50_ms": float(np.percentile(fix_lat, 50)) if fix_lat else None,
    }


def kidnap_metrics(plan: BagPlan, records: list) -> dict | None:
    """After the kidnap of a drive bag (``--kidnap-at``): trusted fixes more than 25 m off (must be 0), and
    the time from the teleport to the first trusted fix within 10 m again. None for bags without one."""
    from ..core.geo import distance_m

    t_k = (plan.info or {}).get("kidnap_frame_t_s")
    if t_k is None:
        return None
    t_abs = plan.frames[0] / NS + float(t_k)
    after = [r for r in records if r.t >= t_abs - 1e-6 and r.trusted]
    errs = [float(distance_m(r.gt_lat, r.gt_lon, r.est_lat, r.est_lon)) for r in after]
    back = next((r.t for r, e in zip(after, errs) if e <= 10.0), None)
    return {"kidnap_s": float(t_k), "trusted_fixes_after": len(after),
            "false_fixes_after": sum(e > 25.0 for e in errs),
            "recovered_after_s": None if back is None else back - t_abs}


def _dropped_from_diagnostics(diag: dict) -> int | None:
    vals = []
    for k, v in diag.items():
        if "drop" in k.rsplit("/", 1)[-1].lower():
            try:
                vals.append(int(float(v)))
            except ValueError:
                continue
    return sum(vals) if vals else None


def fallback_table(fb: dict) -> str:
    """Markdown rows of the GPS-fallback behaviour."""
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f} %"

    rows = [
        ("GPS dropout window", "none" if not fb["window_s"] else
         f"{fb['window_s'][0]:.1f}-{fb['window_s'][1]:.1f} s ({fb['mode']})"),
        ("frames in window with ~/fix", f"{fb['frames_in_window_with_fix']} / {fb['frames_in_window']} "
                                        f"({pct(fb['share_in_window_with_fix'])})"),
        ("~/fix outside the window (shadow mode: 0)", str(fb["fix_msgs_outside_window"])),
        ("fallback fix median error", "n/a" if fb["fallback_median_error_m"] is None
         else f"{fb['fallback_median_error_m']:.2f} m"),
    ]
    return "\n**GPS fallback**\n\n| metric | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows) + "\n"


# --------------------------------------------------------------------------------------------- run


def run_eval(cfg: EvalConfig, log=print) -> dict:
    """Run the node graph on ``cfg.bag`` and write metrics.json, metrics.md, frames.jsonl, flight.png,
    outputs.mcap and node.log to ``cfg.out``; returns the metrics."""
    from ..core.evaluate import compute_metrics, metrics_table, plot_flight, save_records

    plan = plan_bag(cfg.bag)
    if not Path(cfg.index).is_dir():
        raise BagError(f"index directory not found: {cfg.index}")
    if importlib.util.find_spec(NODE_MODULE) is None:
        raise NodeError(f"the localizer node ({NODE_MODULE}) is not installed")
    if not (cfg.rate > 0 and math.isfinite(cfg.rate)):
        raise BagError(f"--rate must be a positive number, got {cfg.rate}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    domain = cfg.domain_id if cfg.domain_id is not None else allocate_domain_id()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env = ros_env.child_env(ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED="1")  # the node: as the user set it up
    from ._ros import RosSession, data_qos, message_class, use_large_data_transport

    dds_profile = use_large_data_transport()  # this process publishes the camera frames
    from .record import Recorder
    from .replay import Player

    outputs = Outputs()
    published: dict[int, float] = {}  # image stamp ns -> wall time published
    node_topics = {k: f"/{cfg.node_name}/{k}" for k in OUTPUT_TYPES}
    types = {node_topics[k]: v for k, v in OUTPUT_TYPES.items()}
    types["/diagnostics"] = "diagnostic_msgs/msg/DiagnosticArray"
    qos = {t: data_qos(100) for t in types}
    qos["/diagnostics"] = data_qos(100, reliable=False)  # matches reliable and best-effort publishers
    classes = {ty: message_class(ty) for ty in types.values()}
    cmd = node_command(cfg, plan)
    log(f"bag eval: domain {domain}, node: {' '.join(cmd[1:4])} ... (log {out / 'node.log'})")
    node = ManagedProcess(cmd, env, out / "node.log")
    log(f"bag eval: localizer node pid {node.proc.pid}")
    session = None
    t_start = time.monotonic()
    try:
        session = RosSession("gleam_bag_eval", domain)
        with BagWriter(out / "outputs.mcap", overwrite=True) as writer:
            rec = Recorder(session, writer, list(types), types=types, qos=qos,
                           on_message=_collector(outputs, cfg.node_name, classes))
            player = Player(session, cfg.bag, rate=cfg.rate, clock=cfg.sim_time)
            _wait_active(session, player, plan, node, node_topics["hypotheses"], cfg.startup_timeout, log)
            startup_s = time.monotonic() - t_start
            image_topic = plan.topics["image"]

            def on_publish(topic, _type, t_ns, data, wall) -> None:
                if topic == image_topic:
                    published.setdefault(header_stamp_ns(data) or t_ns, wall)
                if not node.alive():
                    raise NodeError(f"the localizer node exited with code {node.proc.returncode} during replay; "
                                    f"last lines of {node.log_path}:\n{node.tail()}")

            log(f"bag eval: node active after {startup_s:.1f} s; replaying {len(plan.frames)} frames at rate {cfg.rate}")
            t_play = time.monotonic()
            n_msgs = player.play(on_publish=on_publish, progress=True)
            play_s = time.monotonic() - t_play
            _drain(session, outputs, plan, published, cfg.drain_timeout, node)
            rec.close()
    finally:
        if session is not None:
            session.close()
        code = node.stop()
    log(f"bag eval: node stopped (exit code {code})")

    records = frame_records(plan, outputs, published)
    metrics = compute_metrics(records)
    fb = fallback_metrics(plan, outputs, published)
    kidnap = kidnap_metrics(plan, records)
    metrics.update({
        "bag": str(cfg.bag), "index": str(cfg.index), "backend": cfg.backend, "rate": cfg.rate,
        "frames_in_bag": len(plan.frames), "frames_replayed": len(published),
        "frames_without_output": sum(r.dropped for r in records),
        "node_dropped_frames": _dropped_from_diagnostics(outputs.diagnostics),
        "node_diagnostics_last": outputs.diagnostics,
        "outputs": outputs.counts, "gps_fallback": fb, "kidnap": kidnap,
        "replay": {"messages": n_msgs, "wall_s": play_s, "startup_s": startup_s},
        "node_exit_code": code, "domain_id": domain, "replayer_dds_profile": dds_profile,
    })
    (out / "metrics.json").write_text(json.dumps(_json_clean(metrics), indent=2))
    table = metrics_table(metrics, title=f"{len(records)} frames, {Path(cfg.bag).name} through the localizer node")
    table += f"| node-reported dropped frames | {metrics['node_dropped_frames']} |\n" + fallback_table(fb)
    if kidnap is not None:
        rec_s = "never" if kidnap["recovered_after_s"] is None else f"{kidnap['recovered_after_s']:.1f} s"
        table += (f"\n**Kidnap at {kidnap['kidnap_s']:.1f} s** (teleported; odometry does not see it): "
                  f"{kidnap['false_fixes_after']} trusted fixes > 25 m off afterwards, a fix within 10 m again "
                  f"after {rec_s}\n")
    (out / "metrics.md").write_text(table)
    save_records(records, out / "frames.jsonl")
    geomap = None
    if cfg.map:
        from ..core.maps import open_map

        geomap = open_map(cfg.map)
    spans = [(plan.window_ns[0] / NS, plan.window_ns[1] / NS, "GPS dropout")] if plan.window_ns else []
    if kidnap is not None:
        t_k = plan.frames[0] / NS + kidnap["kidnap_s"]
        spans.append((t_k, t_k + 0.5, "kidnap"))
    spans = spans or None
    if records:
        plot_flight(records, out / "flight.png", geomap, title=f"gleam bag eval: {Path(cfg.bag).name}", spans=spans)
    log(table)
    log(f"results: {out}/metrics.json, metrics.md, frames.jsonl, flight.png, outputs.mcap, node.log")
    return metrics


def _json_clean(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _wait_active(session, player, plan: BagPlan, node: ManagedProcess, hyp_topic: str, timeout: float, log) -> None:
    """Until the node is active: its subscriptions on the bag's camera, camera_info and GPS topics
    are matched and its ~/hypotheses publisher exists (a lifecycle node subscribes in activate)."""
    need = [t for t in (plan.topics["image"], plan.topics["camera_info"], plan.topics["gps"], plan.topics.get("odom"))
            if t]
    end = time.monotonic() + timeout
    while True:
        if not node.alive():
            raise NodeError(f"the localizer node exited with code {node.proc.returncode} during start-up; "
                            f"last lines of {node.log_path}:\n{node.tail()}")
        short = [t for t in need if player.publishers[t].get_subscription_count() < 1]
        has_pub = session.node.count_publishers(hyp_topic) > 0
        if not short and has_pub:
            break
        if time.monotonic() > end:
            raise NodeError(f"the localizer node did not become active within {timeout:.0f} s "
                            f"(unmatched: {short or ''}{'' if has_pub else ' no ' + hyp_topic}); last lines of "
                            f"{node.log_path}:\n{node.tail()}")
        session.spin_once(0.1)
    optional = [t for t in (plan.topics["altitude"], plan.topics["imu"]) if t]
    player.wait_for_subscribers(1, optional, timeout=2.0)
    settle = time.monotonic() + 0.5  # let the reliable endpoints finish matching
    while time.monotonic() < settle:
        session.spin_once(0.05)


def _drain(session, outputs: Outputs, plan: BagPlan, published: dict, idle_timeout: float, node: ManagedProcess) -> None:
    """After the last frame: wait for the node's outputs of it, or until none came for ``idle_timeout`` s."""
    last = max(published) if published else None
    outputs.last_wall = max(outputs.last_wall, time.time())
    while node.alive():
        if last is not None and (last in outputs.hypotheses or _nearest(outputs.hypotheses, last, STAMP_TOL_NS)):
            break
        if time.time() - outputs.last_wall > idle_timeout:
            break
        session.spin_once(0.1)
    end = time.monotonic() + 0.5  # a ~/fix or ~/pose may follow the hypotheses of the last frame
    while time.monotonic() < end:
        session.spin_once(0.05)
