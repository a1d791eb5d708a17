"""ROS <-> core conversions of gleam_ros.nodes.convert, without DDS."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from geometry_msgs.msg import Quaternion
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, Imu, NavSatFix, NavSatStatus, Range
from std_msgs.msg import Header

from gleam_ros.core import localizer as core_localizer
from gleam_ros.core.camera import body_to_enu
from gleam_ros.core.errors import InputError
from gleam_ros.core.geo import LocalFrame, offset_latlon
from gleam_ros.core.localizer import Hypothesis, LocalizationResult
from gleam_ros.msg import GeoPoseHypothesis
from gleam_ros.nodes import convert

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)


def _image(data: bytes, w: int, h: int, enc: str, step: int, big: bool = False) -> Image:
    m = Image()
    m.width, m.height, m.encoding, m.step, m.is_bigendian = w, h, enc, step, int(big)
    m.data = data
    return m


def _padded(rows: np.ndarray, pad: int) -> tuple[bytes, int]:
    """Row bytes with ``pad`` junk bytes appended to every row."""
    h = rows.shape[0]
    flat = rows.reshape(h, -1)
    junk = np.full((h, pad), 0xAB, np.uint8)
    return np.hstack([flat, junk]).tobytes(), flat.shape[1] + pad


@pytest.mark.parametrize("enc,to_src", [
    ("rgb8", lambda a: a),
    ("bgr8", lambda a: a[:, :, ::-1]),
    ("rgba8", lambda a: np.dstack([a, np.full(a.shape[:2], 7, np.uint8)])),
    ("bgra8", lambda a: np.dstack([a[:, :, ::-1], np.full(a.shape[:2], 7, np.uint8)])),
])
@pytest.mark.parametrize("pad", [0, 5])
def test_colour_encodings_with_row_padding(enc, to_src, pad):
    src = np.ascontiguousarray(to_src(RGB))
    data, step = _padded(src, pad)
    out = convert.image_msg_to_rgb(_image(data, 32, 24, enc, step))
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, RGB)


def test_mono8_and_mono16_both_byte_orders():
    gray = RGB[:, :, 0]
    out = convert.image_msg_to_rgb(_image(gray.tobytes(), 32, 24, "mono8", 32))
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))
    wide = gray.astype(np.uint16) * 257
    for big in (False, True):
        raw = wide.astype(">u2" if big else "<u2")
        data, step = _padded(raw.view(np.uint8), 4)
        out = convert.image_msg_to_rgb(_image(data, 32, 24, "mono16", step, big))
        np.testing.assert_allclose(out[:, :, 0], gray * (255.0 / gray.max()), atol=0.51)  # scaled by its maximum


@pytest.mark.parametrize("msg,match", [
    (_image(b"\0" * (32 * 24 * 4), 32, 24, "32FC1", 32 * 4), "unsupported image encoding '32FC1'"),
    (_image(b"\0" * (32 * 24 * 2), 32, 24, "yuv422", 64), "unsupported image encoding 'yuv422'"),
    (_image(b"", 0, 0, "rgb8", 0), "zero-size"),
    (_image(b"\0" * 100, 32, 24, "rgb8", 96), "data has 100 bytes"),
    (_image(b"\0" * (32 * 24 * 3), 32, 24, "rgb8", 50), "step 50 is smaller"),
    (_image(b"\0" * (33 * 24 * 3), 32, 24, "rgb8", 96), "data has 2376 bytes"),
])
def test_bad_images_raise_input_error(msg, match):
    with pytest.raises(InputError, match=match):
        convert.image_msg_to_rgb(msg)


def test_rgb_to_image_msg_round_trip():
    header = Header(frame_id="cam")
    msg = convert.rgb_to_image_msg(RGB, header)
    assert (msg.encoding, msg.step, msg.header.frame_id) == ("rgb8", 96, "cam")
    np.testing.assert_array_equal(convert.image_msg_to_rgb(msg), RGB)
    with pytest.raises(InputError):
        convert.rgb_to_image_msg(RGB[:, :, 0])


def test_compressed_round_trip_and_garbage():
    smooth = cv2.GaussianBlur(RGB, (0, 0), 3)
    png = convert.rgb_to_compressed_msg(smooth, fmt="png")
    np.testing.assert_array_equal(convert.compressed_to_rgb(png), smooth)
    jpg = convert.rgb_to_compressed_msg(smooth, fmt="jpeg", quality=95)
    assert np.abs(convert.compressed_to_rgb(jpg).astype(int) - smooth).mean() < 6  # JPEG loss, channels in order
    bad = CompressedImage(format="jpeg", data=b"\xff\xd8not a jpeg at all" * 10)
    with pytest.raises(InputError, match="cannot decode"):
        convert.compressed_to_rgb(bad)
    with pytest.raises(InputError, match="empty"):
        convert.compressed_to_rgb(CompressedImage(format="jpeg"))
    with pytest.raises(InputError, match="depth"):
        convert.compressed_to_rgb(CompressedImage(format="16UC1; compressedDepth png", data=png.data))


def _camera_info(w=640, h=480, fx=500.0, fy=510.0, cx=319.5, cy=239.5) -> CameraInfo:
    ci = CameraInfo(width=w, height=h)
    ci.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    return ci


def test_camera_info_to_intrinsics():
    intr = convert.camera_info_to_intrinsics(_camera_info())
    assert (intr.width, intr.height, intr.fx, intr.fy, intr.cx, intr.cy) == (640, 480, 500.0, 510.0, 319.5, 239.5)
    assert convert.camera_info_to_intrinsics(CameraInfo(width=640, height=480)) is None  # uncalibrated
    binned = _camera_info()
    binned.binning_x = binned.binning_y = 2
    b = convert.camera_info_to_intrinsics(binned)
    assert (b.width, b.height, b.fx, b.cx) == (320, 240, 250.0, 159.5)
    roi = _camera_info()
    roi.roi.x_offset, roi.roi.y_offset, roi.roi.width, roi.roi.height = 100, 50, 200, 100
    r = convert.camera_info_to_intrinsics(roi)
    assert (r.width, r.height, r.cx, r.cy) == (200, 100, 219.5, 189.5)
    with pytest.raises(InputError, match="camera_info"):
        convert.camera_info_to_intrinsics(_camera_info(fx=-1.0))


def test_camera_info_distortion_raw_and_rectified():
    """Raw images carry K + D for the pipeline to rectify; image_rect uses P and no distortion."""
    plain = _camera_info()
    plain.distortion_model, plain.d = "plumb_bob", [0.0] * 5  # zero coefficients: an ideal pinhole
    assert not convert.camera_info_to_intrinsics(plain).distorted
    raw = _camera_info()
    raw.distortion_model, raw.d = "plumb_bob", [-0.25, 0.08, 0.001, -0.002, 0.0]
    raw.p = [480.0, 0.0, 322.0, 0.0, 0.0, 490.0, 241.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    r = convert.camera_info_to_intrinsics(raw)
    assert r.distorted and r.dist_model == "plumb_bob" and r.dist == (-0.25, 0.08, 0.001, -0.002, 0.0)
    assert (r.fx, r.fy, r.cx, r.cy) == (500.0, 510.0, 319.5, 239.5)  # K for raw images
    rect = convert.camera_info_to_intrinsics(raw, rectified=True)
    assert not rect.distorted and (rect.fx, rect.fy, rect.cx, rect.cy) == (480.0, 490.0, 322.0, 241.0)  # P
    binned = _camera_info()
    binned.distortion_model, binned.d = "equidistant", [0.1, -0.02, 0.003, -0.0004]
    binned.binning_x = binned.binning_y = 2
    b = convert.camera_info_to_intrinsics(binned)
    assert b.dist_model == "equidistant" and b.dist == (0.1, -0.02, 0.003, -0.0004) and b.fx == 250.0
    for model, d, why in (("fov", [0.3], "not supported"), ("rational_polynomial", [0.1] * 5, "takes 8"),
                          ("plumb_bob", [0.1, float("nan"), 0, 0, 0], "finite")):
        bad = _camera_info()
        bad.distortion_model, bad.d = model, d
        with pytest.raises(InputError, match=why) as exc:
            convert.camera_info_to_intrinsics(bad)
        assert "image_rectified:=true" in str(exc.value)
        assert not convert.camera_info_to_intrinsics(bad, rectified=True).distorted  # image_rect: D is moot


def test_stamps_and_durations():
    t = convert.sec_to_stamp(1700000000.123456789)
    assert t.sec == 1700000000 and abs(t.nanosec - 123456789) <= 200
    assert convert.stamp_to_sec(t) == pytest.approx(1700000000.123456789, abs=1e-6)
    d = convert.sec_to_duration(-0.25)
    assert (d.sec, d.nanosec) == (-1, 750_000_000)
    assert convert.duration_to_sec(d) == pytest.approx(-0.25)
    with pytest.raises(InputError):
        convert.sec_to_stamp(math.nan)


def test_gps_range_helpers():
    fix = NavSatFix(position_covariance_type=NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN)
    fix.position_covariance = [9.0, 0, 0, 0, 16.0, 0, 0, 0, 100.0]
    assert convert.gps_horizontal_std(fix) == pytest.approx(4.0)
    assert convert.gps_horizontal_std(NavSatFix()) is None  # COVARIANCE_TYPE_UNKNOWN
    assert convert.range_to_alt(Range(range=120.0, min_range=0.5, max_range=300.0)) == 120.0
    assert convert.range_to_alt(Range(range=400.0, min_range=0.5, max_range=300.0)) is None
    assert convert.range_to_alt(Range(range=math.inf, min_range=0.5, max_range=300.0)) is None


@pytest.mark.parametrize("heading,pitch,roll", [(0, 8, 0), (0, 0, -6), (123, -10, 7), (300, 4, 12)])
def test_imu_attitude_matches_core_conventions(heading, pitch, roll):
    """An IMU orientation made from the core's body_to_enu comes back as the core's pitch/roll."""
    qx, qy, qz, qw = Rotation.from_matrix(body_to_enu(heading, pitch, roll)).as_quat()
    imu = Imu(orientation=Quaternion(x=qx, y=qy, z=qz, w=qw))
    r, p = convert.imu_to_roll_pitch(imu)
    assert r == pytest.approx(roll, abs=1e-6) and p == pytest.approx(pitch, abs=1e-6)
    imu.orientation_covariance[0] = -1.0  # "no orientation"
    assert convert.imu_to_roll_pitch(imu) is None


LAT0, LON0 = 60.45, 22.30


def _fix(status=core_localizer.STATUS_TRUSTED, cov=((4.0, 0.5), (0.5, 2.25)), heading=30.0, alt=120.0,
         **kw) -> Hypothesis:
    lat, lon = offset_latlon(LAT0, LON0, 30.0, -40.0)
    return Hypothesis(tile_id="r1_c2", similarity=0.8, status=status, lat=lat, lon=lon, alt_m=alt, heading_deg=heading,
                      heading_std_deg=2.0, cov_en=np.array(cov, float), inliers=150, method="pnp", filtered=True,
                      prior_used=True, **kw)


def test_status_and_modality_codes_cover_the_core():
    for name in ("STATUS_RETRIEVED", "STATUS_REJECTED", "STATUS_VERIFIED", "STATUS_TRUSTED"):
        assert convert.STATUS_CODES[getattr(core_localizer, name)] == getattr(GeoPoseHypothesis, name)
    from gleam_ros.core.preprocess import MODALITIES

    assert set(MODALITIES) <= set(convert.MODALITY_CODES)


def test_covariance6_never_has_zero_variances():
    c = np.array(convert.covariance6(_fix())).reshape(6, 6)
    np.testing.assert_allclose(c[:2, :2], [[4.0, 0.5], [0.5, 2.25]])
    assert c[2, 2] == c[3, 3] == c[4, 4] == convert.UNKNOWN_VARIANCE
    assert c[5, 5] == pytest.approx(math.radians(2.0) ** 2)
    retrieved = Hypothesis(tile_id="t", similarity=0.5, status=core_localizer.STATUS_RETRIEVED, lat=LAT0, lon=LON0)
    c = np.array(convert.covariance6(retrieved)).reshape(6, 6)
    assert np.all(np.diag(c) == convert.UNKNOWN_VARIANCE)
    assert np.all(np.diag(c) > 0)


def test_hypotheses_to_msg_ranks_flags_and_latency():
    fix = _fix()
    verified = _fix(status=core_localizer.STATUS_VERIFIED, gated=False)
    verified.filtered = False
    rejected = Hypothesis(tile_id="r0_c0", similarity=0.4, status=core_localizer.STATUS_REJECTED, lat=LAT0, lon=LON0,
                          reason="too few inliers", inliers=3)
    res = LocalizationResult(t=1.0, hypotheses=[fix, verified, rejected], fix=fix, filter=None, timings_ms={})
    header = Header(frame_id="camera_optical")
    header.stamp.sec = 42
    msg = convert.hypotheses_to_msg(res, header, 0.125, "uav", GeoPoseHypothesis.FLAG_GPS_FALLBACK, ground_alt_m=10.0)
    assert msg.has_trusted_fix and msg.header.stamp.sec == 42 and msg.header.frame_id == "camera_optical"
    assert convert.duration_to_sec(msg.latency) == pytest.approx(0.125)
    assert [h.status for h in msg.hypotheses] == [GeoPoseHypothesis.STATUS_TRUSTED, GeoPoseHypothesis.STATUS_VERIFIED,
                                                  GeoPoseHypothesis.STATUS_REJECTED]
    top = msg.hypotheses[0]
    assert top.flags & GeoPoseHypothesis.FLAG_GPS_FALLBACK and top.flags & GeoPoseHypothesis.FLAG_FILTERED
    assert top.flags & GeoPoseHypothesis.FLAG_PRIOR_USED
    assert not msg.hypotheses[1].flags & GeoPoseHypothesis.FLAG_FILTERED
    assert top.altitude == pytest.approx(130.0) and math.isnan(msg.hypotheses[2].altitude)
    assert (top.inlier_count, top.tile_id, top.modality) == (150, "r1_c2", GeoPoseHypothesis.MODALITY_UAV)
    assert top.similarity == pytest.approx(0.8)
    # ENU yaw of compass heading 30 deg is 60 deg
    yaw = 2 * math.atan2(top.orientation.z, top.orientation.w)
    assert math.degrees(yaw) == pytest.approx(60.0)
    # a "trusted" fix with an invalid covariance is not reported as trusted
    broken = _fix(cov=((math.nan, 0), (0, 1)))
    res = LocalizationResult(t=1.0, hypotheses=[broken, verified], fix=broken, filter=None, timings_ms={})
    msg = convert.hypotheses_to_msg(res, header, 0.1, "uav")
    assert not msg.has_trusted_fix and [h.status for h in msg.hypotheses] == [GeoPoseHypothesis.STATUS_VERIFIED]


def test_navsatfix_has_variances_or_says_no_fix():
    header = Header(frame_id="base_link")
    fix = _fix()
    m = convert.fix_to_navsatfix(fix, header, ground_alt_m=20.0)
    assert m.status.status == NavSatStatus.STATUS_FIX
    assert m.position_covariance_type == NavSatFix.COVARIANCE_TYPE_KNOWN
    cov = np.array(m.position_covariance).reshape(3, 3)
    np.testing.assert_allclose(cov[:2, :2], [[4.0, 0.5], [0.5, 2.25]])
    assert cov[2, 2] == convert.UNKNOWN_VARIANCE and np.all(np.diag(cov) > 0)
    assert (m.latitude, m.longitude) == (fix.lat, fix.lon) and m.altitude == pytest.approx(140.0)
    for none in (None, _fix(cov=((0.0, 0.0), (0.0, 0.0))), _fix(cov=((1.0, 0.0), (0.0, math.inf)))):
        m = convert.fix_to_navsatfix(none, header)
        assert m.status.status == NavSatStatus.STATUS_NO_FIX
        assert math.isnan(m.latitude) and math.isnan(m.longitude)
        assert m.position_covariance_type == NavSatFix.COVARIANCE_TYPE_UNKNOWN


def test_pose_in_map_frame():
    frame = LocalFrame(LAT0, LON0, 5.0)
    m = convert.fix_to_pose(_fix(), Header(frame_id="map"), frame)
    assert m.header.frame_id == "map"
    p = m.pose.pose.position
    assert (p.x, p.y, p.z) == pytest.approx((30.0, -40.0, 120.0), abs=1e-3)
    c = np.array(m.pose.covariance).reshape(6, 6)
    assert np.all(np.diag(c) > 0) and c[0, 0] == pytest.approx(4.0)
    unknown_alt = _fix(alt=math.nan)
    assert convert.fix_to_pose(unknown_alt, Header(), frame).pose.pose.position.z == 0.0
    with pytest.raises(InputError):
        convert.fix_to_pose(_fix(cov=((-1.0, 0.0), (0.0, 1.0))), Header(), frame)


def test_draw_points_copies():
    out = convert.draw_points(RGB, np.array([[5.0, 5.0], [math.nan, 1.0]]))
    assert out.shape == RGB.shape and not np.shares_memory(out, RGB)
