"""The localizer node in vehicle mode (modality ground) as a real process over DDS.

A 300 m procedural world, its tile index and a drive on its roads (autumn frames; the index is the
summer satellite render) are made once. The test process plays the drive into the node on simulated
time (it publishes /clock, odometry, GPS, camera_info and frames, and waits for each frame's
hypotheses), so the result does not depend on how fast this machine is. The node is started with the
shipped config/vehicle.yaml. What is checked:

- shadow while GPS is healthy (hypotheses flagged SHADOW, no ~/fix), fallback fixes once it is lost,
  within a few metres and with a covariance from the posterior (never one constant);
- the kidnap: the car is teleported, the odometry does not see it: no trusted fix more than 25 m off
  afterwards, the diagnostics count the kidnap, and a trusted fix comes back;
- bad odometry (NaN, late, a jump, none at all): the diagnostics name it and, without usable odometry,
  there is no fix.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from nav_msgs.msg import Odometry
from sensor_msgs.msg import NavSatFix, NavSatStatus
from std_msgs.msg import Header

from gleam_ros.core.camera import CameraIntrinsics
from gleam_ros.core.encoder import TorchBackend
from gleam_ros.core.errors import InputError
from gleam_ros.core.geo import distance_m
from gleam_ros.core.index import TileIndex
from gleam_ros.core.maps import write_geotiff
from gleam_ros.core.sim.drive import OdometrySample, simulate_drive
from gleam_ros.core.sim.world import WorldConfig, make_world
from gleam_ros.core.tiles import TileSpec, iter_tiles
from gleam_ros.core.vehicle import VehicleConfig, VehicleLocalizer
from gleam_ros.msg import GeoPoseHypothesis
from gleam_ros.nodes import convert
from gleam_ros.nodes.vehicle_input import OdometryBuffer
from node_data import Client, node_args
from ros_helpers import NodeProcess, next_domain_id

ROOT = Path(__file__).resolve().parents[1]
INTR = CameraIntrinsics.from_fov(320, 240, 60.0)
T0 = 1000.0  # simulated clock at the start of the drive, s
FPS = 1.0
GPS_LOST_S = 8.0  # GPS healthy before, NO_FIX from then on
KIDNAP_S = 20.0
# From BAD_ODOM_S on the odometry misbehaves; the kidnap recovery gets 20-80 s. Replaying this drive through the
# core over filter seeds 0-9 (`python tools/vehicle_kidnap_seeds.py`, 2026-12-06, with the road-pitch learning of
# 53f7c3d), the first trusted fix after the teleport comes at 46-65 s (median 52 s), within 5 m, for 9 of 10 seeds
# (the node's seed 0: 65 s; one seed none by 80 s), with no false fix: the window ends 15 s after the slowest
# seed that recovers. (Re-localizing from the whole map needs 20 strong frames, 20 s at this 1 fps, after the
# kidnap is declared at 24 s; docs/bench/vehicle_bench.md, "Re-localization after a kidnap".) The drive's route
# depends on its duration: change both together with the tool's "node" drive.
BAD_ODOM_S = 80.0
DURATION_S = 92.0


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    """(index dir, road-mask GeoTIFF, frames, odometry) of a drive with a kidnap on a 300 m world."""
    out = tmp_path_factory.mktemp("vehicle_node")
    world = make_world(WorldConfig(seed=3, size_m=300.0))
    index = TileIndex.build(iter_tiles(world.satellite_map(), TileSpec(size_m=100.0, overlap=0.5, gsd_m=0.25)),
                            TorchBackend(threads=1), progress=False)
    index.save(out / "index")
    road = np.isin(world.layers["road_kind"], (1, 2, 3)).astype(np.uint8) * 255
    roads = write_geotiff(out / "roads.tif", np.repeat(road[..., None], 3, axis=2), world.crs, world.transform)
    frames, odom = simulate_drive(world, duration_s=DURATION_S, fps=FPS, odom_hz=20.0, modality="ground", intr=INTR,
                                  season="autumn", rng=5, kidnap_at_s=KIDNAP_S)
    assert any(f.kidnapped for f in frames)
    return out / "index", roads, frames, odom


# ------------------------------------------------------------------------------------ conversion, buffer
def _odom_msg(t: float, v: float, w: float, var_v: float = 0.0025, var_w: float = 2.5e-5,
              attitude: tuple[float, float, float] | None = None, var_att: float = 3e-5) -> Odometry:
    """An Odometry message; ``attitude`` = (heading, pitch, roll) in degrees, core conventions, as its orientation."""
    m = Odometry()
    m.header.stamp = convert.sec_to_stamp(t)
    m.twist.twist.linear.x, m.twist.twist.angular.z = v, w
    cov = [0.0] * 36
    cov[0], cov[35] = var_v, var_w
    m.twist.covariance = cov
    if attitude is not None:
        from scipy.spatial.transform import Rotation

        from gleam_ros.core.camera import body_to_enu

        q = Rotation.from_matrix(body_to_enu(*attitude)).as_quat()
        m.pose.pose.orientation.x, m.pose.pose.orientation.y, m.pose.pose.orientation.z, m.pose.pose.orientation.w = (
            float(v) for v in q)
        pc = [0.0] * 36
        pc[21] = pc[28] = var_att
        m.pose.covariance = pc
    return m


def test_odometry_orientation_passes_through_as_the_body_attitude():
    """pose.pose.orientation becomes the sample's body pitch / roll (core conventions); not reported (variance
    -1, NaN or 'unmeasured'), NaN or degenerate -> NaN, which the localizer answers with a fallback diagnostic."""
    s = convert.odometry_to_sample(_odom_msg(1.0, 3.0, 0.1, attitude=(123.0, 2.5, -1.5)), 0.0, 0.1, 0.01)
    assert s.pitch_deg == pytest.approx(2.5, abs=1e-6) and s.roll_deg == pytest.approx(-1.5, abs=1e-6)
    assert (s.v_mps, s.yaw_rate_rps) == (3.0, 0.1)
    for var in (-1.0, math.nan, convert.UNKNOWN_VARIANCE):
        s = convert.odometry_to_sample(_odom_msg(1.0, 3.0, 0.1, attitude=(10.0, 2.5, 1.0), var_att=var), 0.0, 0.1, 0.01)
        assert math.isnan(s.pitch_deg) and math.isnan(s.roll_deg), var
    for q in ((math.nan, 0.0, 0.0, 1.0), (0.0, 0.0, 0.0, 0.0)):
        m = _odom_msg(1.0, 3.0, 0.1, attitude=(10.0, 2.5, 1.0))
        m.pose.pose.orientation.x, m.pose.pose.orientation.y, m.pose.pose.orientation.z, m.pose.pose.orientation.w = q
        s = convert.odometry_to_sample(m, 0.0, 0.1, 0.01)
        assert math.isnan(s.pitch_deg) and math.isnan(s.roll_deg) and s.v_mps == 3.0


def test_odometry_message_to_sample():
    s = convert.odometry_to_sample(_odom_msg(12.5, 3.0, -0.2), 99.0, 0.1, 0.01)
    assert (s.t, s.v_mps, s.yaw_rate_rps) == (12.5, 3.0, -0.2)
    assert s.v_std == pytest.approx(0.05) and s.yaw_rate_std == pytest.approx(0.005)
    # covariance 0 / -1 = not reported: the node's defaults; unstamped: the receive time
    s = convert.odometry_to_sample(_odom_msg(0.0, 1.0, 0.0, 0.0, -1.0), 99.0, 0.1, 0.01)
    assert (s.t, s.v_std, s.yaw_rate_std) == (99.0, 0.1, 0.01)
    # NaN speed passes on (the localizer rejects it with its reason); a NaN covariance is refused here
    assert math.isnan(convert.odometry_to_sample(_odom_msg(1.0, math.nan, 0.0), 0.0, 0.1, 0.01).v_mps)
    with pytest.raises(InputError, match=r"speed \(twist.covariance\[0\]\)"):
        convert.odometry_to_sample(_odom_msg(1.0, 1.0, 0.0, math.nan), 0.0, 0.1, 0.01)
    with pytest.raises(InputError, match="yaw rate"):
        convert.odometry_to_sample(_odom_msg(1.0, 1.0, 0.0, 0.01, -4.0), 0.0, 0.1, 0.01)


def test_odometry_buffer_hands_samples_to_the_localizer_up_to_the_frame(drive):
    index_dir, _, frames, odom = drive
    loc = VehicleLocalizer(TorchBackend(threads=1), TileIndex.load(index_dir, backend=None),
                           VehicleConfig(n_particles=100, n_particles_global=200))
    buf = OdometryBuffer(maxlen=50)
    for s in odom[:30]:
        buf.push(s, s.t)
    assert [s.t for s in buf.take_until(odom[9].t)] == [s.t for s in odom[:10]]
    assert buf.feed(loc, odom[19].t) == 0 and loc.status()["rejected_odometry"] == 0
    buf.push(OdometrySample(odom[30].t, math.nan, 0.0, 0.05, 0.005), 0.0)  # NaN
    buf.push(odom[5], 0.0)  # stamped before what the localizer already has
    assert buf.feed(loc, odom[40].t) == 2
    assert buf.rejected == 2 and "out of order" in buf.last_reason
    d = buf.diagnostics(odom[40].t + 1.0)
    assert d["odom_received"] == "32" and d["odom_rejected"] == "2" and d["odom_waiting"] == "0"
    for s in odom[:60]:  # no frame for a while: the oldest waiting samples go, counted
        buf.push(s, s.t)
    assert buf.rejected == 12 and "overflow" in buf.last_reason
    assert not buf.wait_for(1e9, 0.05)  # nothing that new arrives: gives up after the timeout


def test_odometry_attitude_reaches_the_localizer_and_its_diagnostics(drive):
    """Odometry messages with an orientation, through convert and the buffer: the frame's bird's-eye view uses the
    body attitude (diagnostics ``attitude: odometry``); a NaN orientation falls back to the mounting pitch with
    the reason in the diagnostics and the frame is still localized."""
    from gleam_ros.core.localizer import PositionPrior
    from gleam_ros.nodes.vehicle_input import status_values

    index_dir, _, frames, odom = drive
    loc = VehicleLocalizer(TorchBackend(threads=1), TileIndex.load(index_dir, backend=None),
                           VehicleConfig(n_particles=100, n_particles_global=200))
    buf = OdometryBuffer()
    heading = frames[0].pose.heading_deg
    k = 0
    for f, att in ((frames[0], (heading, 1.8, -0.7)), (frames[1], None)):
        while k < len(odom) and odom[k].t <= f.t:
            s = odom[k]
            m = _odom_msg(s.t, s.v_mps, s.yaw_rate_rps, attitude=att or (heading, 0.0, 0.0))
            if att is None:
                m.pose.pose.orientation.w = math.nan
            buf.push(convert.odometry_to_sample(m, 0.0, 0.05, 0.005), s.t)
            k += 1
        assert buf.feed(loc, f.t) == 0
        res = loc.localize(f.image, f.t, intrinsics=INTR, gps_prior=PositionPrior(f.lat, f.lon, 10.0))
        d = status_values(loc.status())
        assert res.hypotheses
        assert d["along_road_state"] == "unknown"  # anchored by GPS: no map search to check along the road
        if att is not None:
            # a steady attitude is the road's tilt (road_tilt_tau_s): the body sits level on a tilted road
            assert d["attitude"] == "odometry" and (d["road_grade_deg"], d["road_camber_deg"]) == ("1.80", "-0.70")
            assert (d["body_pitch_deg"], d["body_roll_deg"]) == ("0.00", "0.00")
            # the first frame has no previous view to check the ground against
            assert (d["ground_flagged_share"], d["ground_masked"]) == ("nan", "false")
        else:
            assert d["ground_flagged_share"] != "nan"  # compared with the first frame's view
            assert d["attitude"].startswith("mounting pitch only") and "no attitude" in d["attitude"]
            assert d["attitude_fallback_frames"] == "1" and d["body_pitch_deg"] == "0.00"


# ------------------------------------------------------------------------------------------- DDS
class _Drive:
    """Plays the drive into the node on simulated time and remembers what came back per frame."""

    def __init__(self, client: Client, proc: NodeProcess, frames, odom) -> None:
        self.client, self.proc, self.frames, self.odom = client, proc, frames, odom
        n = client.node
        reliable = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
        self.clock_pub = n.create_publisher(Clock, "/clock", reliable)
        self.odom_pub = n.create_publisher(Odometry, "/odom", reliable)
        self.clock = T0
        self.next_odom = 0
        self.results: list[tuple[object, object]] = []  # (frame, GeoPoseHypotheses)

    def tick(self, t: float) -> None:
        self.clock = max(self.clock, t)
        msg = Clock()
        msg.clock = convert.sec_to_stamp(self.clock)
        self.clock_pub.publish(msg)

    def fresh_diag(self) -> dict:
        """Advance the clock until the node publishes diagnostics again (its timer runs on sim time)."""
        n = len(self.client.diags)
        for _ in range(40):
            self.tick(self.clock + 0.1)
            if self.client.until(lambda: len(self.client.diags) > n, 0.25):
                return self.client.diag()
        raise AssertionError(f"no diagnostics:\n{self.proc.log()[-3000:]}")

    def publish_odom(self, s: OdometrySample) -> None:
        self.odom_pub.publish(_odom_msg(T0 + s.t, s.v_mps, s.yaw_rate_rps, s.v_std ** 2, s.yaw_rate_std ** 2))

    def gps(self, stamp, frame, fix: bool) -> None:
        m = NavSatFix(latitude=frame.lat if fix else math.nan, longitude=frame.lon if fix else math.nan, altitude=0.0)
        m.header.stamp, m.header.frame_id = stamp, "gps"
        m.status.status = NavSatStatus.STATUS_FIX if fix else NavSatStatus.STATUS_NO_FIX
        m.position_covariance = [4.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 9.0]
        m.position_covariance_type = NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN if fix else NavSatFix.COVARIANCE_TYPE_UNKNOWN
        self.client.gps_pub.publish(m)

    def run(self, until_s: float, gps_ok, odom_filter=lambda s: s) -> list:
        """Frames with t < until_s: odometry up to the frame (through ``odom_filter``: return None to drop,
        or a changed sample), GPS, camera_info, image; waits for the hypotheses of each."""
        out = []
        while len(self.results) < len(self.frames) and self.frames[len(self.results)].t < until_s:
            f = self.frames[len(self.results)]
            while self.next_odom < len(self.odom) and self.odom[self.next_odom].t <= f.t + 1e-9:
                s = odom_filter(self.odom[self.next_odom])
                if s is not None:
                    self.publish_odom(s)
                self.next_odom += 1
            stamp = convert.sec_to_stamp(T0 + f.t)
            self.tick(T0 + f.t)
            self.gps(stamp, f, gps_ok(f.t))
            self.client.camera_info(stamp, INTR.width, INTR.height)
            self.client.spin(0.05)
            self.client.image_pub.publish(convert.rgb_to_image_msg(f.image, Header(stamp=stamp, frame_id="camera")))
            res = self.client.result_for(T0 + f.t, timeout=60.0)
            assert res is not None, f"no hypotheses for the frame at {f.t} s:\n{self.proc.log()[-3000:]}"
            self.results.append((f, res))
            out.append((f, res))
        return out


def _err(f, h) -> float:
    return float(distance_m(f.lat, f.lon, h.latitude, h.longitude))


def test_vehicle_node_shadow_fallback_kidnap_and_bad_odometry(drive, tmp_path):
    index_dir, roads, frames, odom = drive
    domain = next_domain_id()
    client = Client(domain)
    args = node_args(index_dir, "use_sim_time:=true", "max_frame_age_s:=30.0", "num_threads:=1",
                     f"road_layer_path:={roads}")
    i = args.index("--ros-args") + 1
    args[i:i] = ["--params-file", str(ROOT / "config" / "vehicle.yaml")]
    args += ["-r", "odom:=/odom"]
    try:
        with NodeProcess(args, domain, tmp_path / "node.log") as proc:
            client.wait_active(proc)
            play = _Drive(client, proc, frames, odom)
            assert client.until(lambda: play.odom_pub.get_subscription_count() > 0, 30), proc.log()[-2000:]
            play.tick(T0)
            d = play.fresh_diag()
            assert d["modality"] == "ground" and d["odom_age_s"] == "none received", d

            # --- GPS healthy: shadow mode, hypotheses only
            shadow = play.run(GPS_LOST_S, gps_ok=lambda t: True)
            client.spin(0.3)
            assert shadow and all(h.flags & GeoPoseHypothesis.FLAG_SHADOW for _, r in shadow for h in r.hypotheses)
            assert client.fixes == [] and client.poses == [], "a fix was published while GPS was healthy"
            assert play.fresh_diag()["mode"] == "shadow"

            # --- GPS lost (NO_FIX): fallback fixes, one ~/fix per frame
            lost = play.run(KIDNAP_S, gps_ok=lambda t: False)
            client.spin(0.5)
            assert all(h.flags & GeoPoseHypothesis.FLAG_GPS_FALLBACK for _, r in lost for h in r.hypotheses)
            fixes = {convert.stamp_to_sec(m.header.stamp): m for m in client.fixes}
            assert len(fixes) == len(lost), (len(fixes), len(lost))
            good = [(f, fixes[T0 + f.t]) for f, r in lost if r.has_trusted_fix]
            report = [(f.t, r.has_trusted_fix, round(_err(f, r.hypotheses[0]), 1) if r.hypotheses else None)
                      for f, r in lost]
            assert len(good) >= len(lost) // 2, report
            for f, m in good:
                assert m.status.status == NavSatStatus.STATUS_FIX, report
                assert m.position_covariance_type == NavSatFix.COVARIANCE_TYPE_KNOWN
                assert float(distance_m(f.lat, f.lon, m.latitude, m.longitude)) < 5.0, report
            covs = {round(m.position_covariance[0], 6) for _, m in good}
            assert len(covs) > 1 and min(covs) > 0, covs  # the posterior spread, not a constant
            d = play.fresh_diag()
            assert d["mode"] == "fallback" and int(d["particles"]) > 0 and d["modes"] != "0", d
            assert int(d["odom_received"]) > 0 and d["odom_rejected"] == "0", d

            # --- kidnap: teleported, odometry carries on as if nothing happened
            after = play.run(BAD_ODOM_S, gps_ok=lambda t: False)
            report = [(f.t, r.has_trusted_fix, round(_err(f, r.hypotheses[0]), 1) if r.hypotheses else None)
                      for f, r in after]
            wrong = [x for x in report if x[1] and x[2] > 25.0]
            assert not wrong, f"confident wrong fix after the kidnap: {report}"
            assert int(play.fresh_diag()["kidnaps"]) >= 1, (client.diag(), report)
            again = [x for x in report if x[1]]
            assert again and again[-1][2] < 5.0, f"no trusted fix after the kidnap: {report}"

            # --- bad odometry: NaN, a late sample, a jump, then none at all
            def bad(s):
                t = s.t
                if t <= BAD_ODOM_S + 3:  # NaN speed for 3 s
                    return OdometrySample(s.t, math.nan, s.yaw_rate_rps, s.v_std, s.yaw_rate_std)
                return s

            nan_part = play.run(BAD_ODOM_S + 4, gps_ok=lambda t: False, odom_filter=bad)
            d = play.fresh_diag()
            assert "non-finite" in d["odom_last_reject_reason"] and int(d["odom_rejected"]) >= 40, d
            assert not any(r.has_trusted_fix for f, r in nan_part[1:]), "fix without usable odometry"
            assert "odometry" in d["last_result"], d

            late = [odom[len(odom) // 3]]  # a sample from long ago, after newer ones

            def with_late(s):
                if late and s.t > BAD_ODOM_S + 3.2:  # fed with the frame at +4 s
                    play.publish_odom(late.pop())
                return s

            play.run(BAD_ODOM_S + 5, gps_ok=lambda t: False, odom_filter=with_late)
            d = play.fresh_diag()
            assert "out of order" in d["odom_last_reject_reason"] or "too late" in d["odom_last_reject_reason"], d

            def with_jump(s):  # +30 m/s within one 50 ms odometry period, fed with the frame at +5 s
                if abs(s.t - (BAD_ODOM_S + 4.5)) < 1e-6:
                    return OdometrySample(s.t, s.v_mps + 30.0, s.yaw_rate_rps, s.v_std, s.yaw_rate_std)
                return s

            play.run(BAD_ODOM_S + 6, gps_ok=lambda t: False, odom_filter=with_jump)
            d = play.fresh_diag()
            assert "implausible jump" in d["odom_last_reject_reason"], d

            missing = play.run(DURATION_S + 1, gps_ok=lambda t: False, odom_filter=lambda s: None)
            d = play.fresh_diag()
            assert missing and not any(r.has_trusted_fix for _, r in missing[1:]), "fix without odometry"
            assert float(d["odom_age_s"]) > 1.0 and "odometry missing or late" in d["last_result"], d
            assert proc.alive() and d["errors"] == "0", proc.log()[-3000:]
            assert proc.stop() == 0, proc.log()[-3000:]
    finally:
        client.close()


def test_vehicle_lifecycle_configure_errors_and_the_odom_subscription(drive, tmp_path):
    """Vehicle parameters that cannot work fail configure with a line naming them; the node subscribes
    to odom only while active, and a UAV-modality node does not subscribe to it at all."""
    from lifecycle_msgs.msg import State, Transition
    from test_localizer_node import _Lifecycle, _subscribed_topics

    index_dir, _, _, _ = drive
    domain = next_domain_id()
    client = Client(domain)
    args = node_args(index_dir, "modality:=ground", "n_particles:=5000", "road_layer_path:=/no/such/roads.tif",
                     autostart=False) + ["-r", "odom:=/odom"]
    try:
        with NodeProcess(args, domain, tmp_path / "node.log") as proc:
            lc = _Lifecycle(client, proc)
            assert not lc.transition(Transition.TRANSITION_CONFIGURE)
            assert "configure failed: vehicle parameters" in proc.log()
            assert "n_particles (5000) must be <= n_particles_global (4000)" in proc.log(), proc.log()[-2000:]
            assert lc.set_param("n_particles", 500)
            assert not lc.transition(Transition.TRANSITION_CONFIGURE)
            assert "road layer /no/such/roads.tif: no such file or folder" in proc.log(), proc.log()[-2000:]
            assert lc.set_param("road_layer_path", "")
            assert lc.transition(Transition.TRANSITION_CONFIGURE)
            assert "/odom" not in _subscribed_topics(client)
            assert lc.transition(Transition.TRANSITION_ACTIVATE)
            assert client.until(lambda: {"/odom", "/cam/image_raw"} <= _subscribed_topics(client), 10)
            assert lc.transition(Transition.TRANSITION_DEACTIVATE)
            assert client.until(lambda: "/odom" not in _subscribed_topics(client), 10)
            # the same node as a UAV localizer: no odometry input
            assert lc.transition(Transition.TRANSITION_CLEANUP)
            assert lc.set_param("modality", "uav")
            assert lc.transition(Transition.TRANSITION_CONFIGURE) and lc.transition(Transition.TRANSITION_ACTIVATE)
            assert lc.state() == State.PRIMARY_STATE_ACTIVE
            assert client.until(lambda: "/cam/image_raw" in _subscribed_topics(client), 10)
            assert "/odom" not in _subscribed_topics(client)
            assert proc.stop() == 0, proc.log()[-3000:]
    finally:
        client.close()
