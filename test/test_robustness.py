"""Fault injection into the node graph: GPS that flaps between fix and no fix, NaN/Inf in every
sensor input. Every case ends in a dropped frame with a diagnostic or a correct fix; none
publishes a trusted fix that is wrong, and the node keeps running.
(Corrupt images/bags/indexes, wrong encodings and a sustained 30 Hz camera are covered in
test_localizer_node.py, test_bag_tools.py and test_cli.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image, Imu, NavSatFix, NavSatStatus, Range
from std_msgs.msg import Header

from gleam_ros.core.geo import distance_m
from gleam_ros.msg import GeoPoseHypothesis
from gleam_ros.nodes import convert
from node_data import ALT, Client, build_world_index, node_args, render, truth_pose
from ros_helpers import NodeProcess, next_domain_id

WRONG_M = 5.0  # a trusted fix further than this from the truth would be a wrong fix here (errors are ~0.2 m)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world_index(tmp_path_factory.mktemp("gleam_robust"))


def _gps(c: Client, lat: float, lon: float, status: int) -> None:
    m = NavSatFix(latitude=lat, longitude=lon, altitude=ALT)
    m.header.stamp, m.header.frame_id = c.node.get_clock().now().to_msg(), "gps"
    m.status.status, m.status.service = status, NavSatStatus.SERVICE_GPS
    m.position_covariance = [4.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 9.0]
    m.position_covariance_type = NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN
    c.gps_pub.publish(m)


def _fix_for(c: Client, stamp: float):
    return [f for f in c.fixes if abs(convert.stamp_to_sec(f.header.stamp) - stamp) < 1e-6]


def test_gps_flapping_never_yields_a_wrong_or_shadow_fix(world, tmp_path):
    geomap, index_dir = world
    domain = next_domain_id()
    with NodeProcess(node_args(index_dir, "gps_timeout_s:=5.0"), domain, tmp_path / "node.log") as proc:
        c = Client(domain)
        try:
            c.wait_active(proc)
            modes = []
            for k in range(14):
                pose = truth_pose(geomap, k)
                status = NavSatStatus.STATUS_FIX if (k // 2) % 2 == 0 else NavSatStatus.STATUS_NO_FIX
                for _ in range(3):  # best-effort sensor QoS: send the state a few times
                    _gps(c, pose.lat, pose.lon, status)
                    c.spin(0.05)
                stamp = c.publish_frame(render(geomap, pose))
                res = c.result_for(stamp, timeout=60)
                if res is None:
                    continue  # dropped (e.g. stale); counted by the node, checked below
                shadow = bool(res.hypotheses and res.hypotheses[0].flags & GeoPoseHypothesis.FLAG_SHADOW)
                fallback = bool(res.hypotheses and res.hypotheses[0].flags & GeoPoseHypothesis.FLAG_GPS_FALLBACK)
                c.spin(0.5)  # let a ~/fix of this frame arrive
                fixes = _fix_for(c, stamp)
                if res.hypotheses:
                    assert shadow != fallback, "exactly one of shadow / fallback"
                    modes.append("shadow" if shadow else "fallback")
                    if shadow:
                        assert not fixes, f"frame {k}: ~/fix published while GPS was healthy"
                    else:
                        assert len(fixes) == 1, f"frame {k}: fallback without a ~/fix message"
                for f in fixes:
                    if f.status.status >= NavSatStatus.STATUS_FIX:
                        assert f.position_covariance_type == NavSatFix.COVARIANCE_TYPE_KNOWN
                        assert min(f.position_covariance[0], f.position_covariance[4]) > 0
                        err = float(distance_m(f.latitude, f.longitude, pose.lat, pose.lon))
                        assert err < WRONG_M, f"frame {k}: trusted fix {err:.1f} m off"
                    else:
                        assert math.isnan(f.latitude) and math.isnan(f.longitude)
            assert "shadow" in modes and "fallback" in modes, modes
            assert proc.alive()
        finally:
            c.close()


def test_nan_and_inf_in_every_sensor_input(world, tmp_path):
    geomap, index_dir = world
    domain = next_domain_id()
    with NodeProcess(node_args(index_dir), domain, tmp_path / "node.log") as proc:
        c = Client(domain)
        try:
            c.wait_active(proc)
            pose = truth_pose(geomap, 5)
            rgb = render(geomap, pose)
            stamp_msg = c.node.get_clock().now().to_msg()

            # GPS claiming a fix at NaN / Inf: invalid, so the node is in fallback (not shadow)
            for lat, lon in ((math.nan, 22.3), (60.45, math.inf)):
                _gps(c, lat, lon, NavSatStatus.STATUS_FIX)
            # altitude and attitude priors that are NaN / Inf: ignored
            for v in (math.nan, math.inf, -1.0):
                rng = Range(range=v, min_range=0.5, max_range=500.0)
                rng.header.stamp = stamp_msg
                c.alt_pub.publish(rng)
            imu = Imu()
            imu.header.stamp = stamp_msg
            imu.orientation.x = imu.orientation.w = math.nan
            c.imu_pub.publish(imu)
            c.spin(0.3)
            good = []
            for k in range(3):  # frames still localize, correctly, in fallback
                p = truth_pose(geomap, 5 + k)
                stamp = c.publish_frame(render(geomap, p))
                res = c.result_for(stamp, timeout=60)
                assert res is not None, proc.log()[-2000:]
                assert res.hypotheses[0].flags & GeoPoseHypothesis.FLAG_GPS_FALLBACK
                good.append((res, p))
            for res, p in good:
                if res.has_trusted_fix:
                    h = res.hypotheses[0]
                    assert float(distance_m(h.latitude, h.longitude, p.lat, p.lon)) < WRONG_M

            # camera_info with NaN focal length: the frame is rejected with a diagnostic
            before = int(c.fresh_diag().get("frames_rejected", "0"))
            bad = CameraInfo(width=480, height=360)
            bad.header.stamp = c.node.get_clock().now().to_msg()
            bad.k = [math.nan, 0.0, 240.0, 0.0, math.nan, 180.0, 0.0, 0.0, 1.0]
            c.info_pub.publish(bad)
            c.spin(0.2)
            c.image_pub.publish(convert.rgb_to_image_msg(rgb, Header(stamp=bad.header.stamp, frame_id="cam")))
            assert c.until(lambda: int(c.diag().get("frames_rejected", "0")) > before, 30), c.diag()

            # a float image full of NaN: unsupported encoding, rejected
            before = int(c.diag().get("frames_rejected", "0"))
            img = Image(height=8, width=8, encoding="32FC3", step=8 * 12, is_bigendian=0)
            img.data = np.full((8, 8, 3), np.nan, np.float32).tobytes()
            img.header.stamp = c.node.get_clock().now().to_msg()
            c.image_pub.publish(img)
            assert c.until(lambda: int(c.diag().get("frames_rejected", "0")) > before, 30), c.diag()
            assert "32FC3" in c.diag().get("last_drop_reason", "") or "encoding" in c.diag().get("last_drop_reason", "")

            # and afterwards a good frame with good camera_info localizes correctly
            stamp = c.publish_frame(rgb)
            res = c.result_for(stamp, timeout=60)
            assert res is not None and res.hypotheses
            if res.has_trusted_fix:
                h = res.hypotheses[0]
                assert float(distance_m(h.latitude, h.longitude, pose.lat, pose.lon)) < WRONG_M
            assert proc.alive()
        finally:
            c.close()
