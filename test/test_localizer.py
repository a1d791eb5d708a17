"""End-to-end pipeline on data the test makes: a procedural world, its tile index, simulated frames.

Round trip: render a frame at a known pose over the map, localize it, recover the pose.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gleam_ros.core.camera import CameraIntrinsics
from gleam_ros.core.encoder import TorchBackend
from gleam_ros.core.errors import ConfigError, InputError
from gleam_ros.core.geo import distance_m, heading_diff_deg, offset_latlon
from gleam_ros.core.index import TileIndex
from gleam_ros.core.localizer import STATUS_TRUSTED, Localizer, LocalizerConfig, PositionPrior
from gleam_ros.core.sim.camera_sim import Pose, apply_photometric, random_photometric, render_view
from gleam_ros.core.sim.world import WorldConfig, make_world
from gleam_ros.core.tiles import TileSpec, iter_tiles
from gleam_ros.core.verify import Priors
from lens import through_lens

INTR = CameraIntrinsics.from_fov(480, 360, 60.0)


@pytest.fixture(scope="module")
def setup():
    world = make_world(WorldConfig(seed=3, size_m=420.0, gsd_m=0.3))
    geomap = world.satellite_map()
    backend = TorchBackend(threads=2)
    index = TileIndex.build(iter_tiles(geomap, TileSpec(size_m=100.0, overlap=0.5, gsd_m=0.25)), backend,
                            progress=False)
    autumn = world.variant(season="autumn", seed=99)  # the query map: same place, another season
    from gleam_ros.core.maps import map_from_array

    query_map = map_from_array(autumn, world.crs, world.transform, name="autumn")
    return world, geomap, query_map, backend, index


def _frame(query_map, pose, seed=0, strength=1.0):
    rgb, valid = render_view(query_map, pose, INTR)
    assert valid.mean() > 0.99
    rng = np.random.default_rng(seed)
    return apply_photometric(rgb, random_photometric(rng, strength), rng)


def test_round_trip_recovers_pose_with_unknown_yaw_and_tilt(setup):
    world, geomap, query_map, backend, index = setup
    lat0, lon0 = geomap.center_latlon()
    loc = Localizer(backend, index, LocalizerConfig(filter=_instant_filter()))
    errors, head_err = [], []
    for i, (de, dn, hdg, pitch, roll, alt) in enumerate([(0, 0, 37, 8, -5, 120), (-60, 40, 200, -10, 6, 105),
                                                         (50, -55, 300, 3, 12, 140)]):
        lat, lon = offset_latlon(lat0, lon0, de, dn)
        pose = Pose(t=float(i), lat=lat, lon=lon, alt_m=alt, heading_deg=hdg, pitch_deg=pitch, roll_deg=roll)
        loc.reset()
        res = loc.localize(_frame(query_map, pose, seed=i), t=pose.t, intrinsics=INTR, priors=Priors(alt_m=alt))
        v = res.best_verification
        assert v is not None and v.ok, [h.reason for h in res.hypotheses]
        errors.append(float(distance_m(v.lat, v.lon, lat, lon)))
        head_err.append(abs(float(heading_diff_deg(v.heading_deg, hdg))))
        assert abs(v.alt_m - alt) / alt < 0.05
    # Tolerance: the tile GSD is 0.25 m and features localize to ~1 px; the planar pose from
    # hundreds of inliers averages that down, but season change moves features (tree crowns,
    # shadows) by a few pixels, so a 3 m bound (12 tile pixels) is generous yet far below the
    # 100 m tile size that retrieval alone would give.
    assert max(errors) < 3.0, errors
    assert max(head_err) < 3.0, head_err


def test_track_becomes_trusted_and_stays_accurate(setup):
    world, geomap, query_map, backend, index = setup
    lat0, lon0 = geomap.center_latlon()
    loc = Localizer(backend, index)
    fixes, tracked = [], 0
    for i in range(5):
        lat, lon = offset_latlon(lat0, lon0, -40 + 12 * i, 10.0)
        pose = Pose(t=float(i), lat=lat, lon=lon, alt_m=120, heading_deg=90 + 20 * i, pitch_deg=2, roll_deg=-3)
        res = loc.localize(_frame(query_map, pose, seed=10 + i), t=pose.t, intrinsics=INTR,
                           priors=Priors(alt_m=120))
        tracked += res.prior is not None
        if res.prior is not None:  # tracking its own trusted track: nearest tiles verified, no embedding
            assert res.timings_ms["embed"] < 5.0 and all(h.prior_used for h in res.hypotheses)
        if res.fix is not None:
            assert res.fix.status == STATUS_TRUSTED and res.hypotheses[0] is res.fix
            fixes.append(float(distance_m(res.fix.lat, res.fix.lon, lat, lon)))
            assert np.all(np.linalg.eigvalsh(res.fix.cov_en) > 0)
    # the first fix is never trusted alone (init_fixes consistent fixes are needed) ...
    assert 1 <= len(fixes) <= 4
    assert tracked, "the localizer never used its own track as a prior"
    # ... and once trusted, fixes are metre-accurate
    assert max(fixes) < 3.0, fixes


def test_frame_from_elsewhere_gets_no_fix(setup):
    """A frame of another world (not in the index) must not produce a trusted fix."""
    world, geomap, query_map, backend, index = setup
    other = make_world(WorldConfig(seed=11, size_m=300.0, gsd_m=0.3)).satellite_map()
    loc = Localizer(backend, index, LocalizerConfig(filter=_instant_filter()))
    lat, lon = other.center_latlon()
    for i in range(3):
        pose = Pose(t=float(i), lat=lat, lon=lon, alt_m=110, heading_deg=120.0 * i)
        res = loc.localize(_frame(other, pose, seed=i), t=float(i), intrinsics=INTR)
        assert res.fix is None
        assert not any(h.status in ("verified", "trusted") for h in res.hypotheses)


def test_position_prior_restricts_candidates(setup):
    world, geomap, query_map, backend, index = setup
    lat0, lon0 = geomap.center_latlon()
    loc = Localizer(backend, index)
    pose = Pose(t=0.0, lat=lat0, lon=lon0, alt_m=120, heading_deg=10)
    far_lat, far_lon = offset_latlon(lat0, lon0, 150.0, 150.0)
    res = loc.localize(_frame(query_map, pose), t=0.0, intrinsics=INTR,
                       position_prior=PositionPrior(far_lat, far_lon, 60.0))
    for h in res.hypotheses:
        assert distance_m(h.tile_lat, h.tile_lon, far_lat, far_lon) <= 60.0 + 1e-6
        assert h.prior_used
    assert res.fix is None  # the true place is outside the prior: no fix rather than a wrong one


def test_bad_frames_are_clear_errors(setup):
    _, _, _, backend, index = setup
    loc = Localizer(backend, index)
    with pytest.raises(InputError, match="frame"):
        loc.localize(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(InputError, match="frame"):
        loc.localize(np.full((100, 100, 3), np.nan, np.float32))
    with pytest.raises(InputError, match="intrinsics"):
        loc.localize(np.zeros((200, 300, 3), np.uint8), intrinsics=INTR)
    # a blank frame is not an error, just no fix
    res = loc.localize(np.full((360, 480, 3), 127, np.uint8), t=0.0, intrinsics=INTR)
    assert res.fix is None
    with pytest.raises(ConfigError):
        LocalizerConfig(modality="sonar")


def _instant_filter():
    from gleam_ros.core.filter import FilterConfig

    return FilterConfig(init_fixes=1)


def test_nan_time_rejected(setup):
    _, _, _, backend, index = setup
    with pytest.raises(InputError):
        Localizer(backend, index).localize(np.zeros((64, 64, 3), np.uint8), t=math.nan)


def test_distorted_lens_is_rectified_before_embedding_and_verification(setup):
    """Raw frames of a wide-angle lens (barrel distortion) localize as well as pinhole frames.

    With the lens model given, the localizer rectifies each frame once and reports the view it
    used; treating the same raw frames as pinhole (ignoring the distortion) is measurably worse.
    """
    world, geomap, query_map, backend, index = setup
    lens = CameraIntrinsics(INTR.width, INTR.height, INTR.fx, INTR.fy, INTR.cx, INTR.cy,
                            dist_model="plumb_bob", dist=(-0.3, 0.09, 0.0, 0.0, 0.0))
    lat0, lon0 = geomap.center_latlon()
    with_lens, as_pinhole = [], []
    for i, (de, dn, hdg) in enumerate([(0, 0, 37), (-50, 40, 200), (45, -50, 300)]):
        lat, lon = offset_latlon(lat0, lon0, de, dn)
        pose = Pose(t=float(i), lat=lat, lon=lon, alt_m=120, heading_deg=hdg, pitch_deg=2, roll_deg=-3)
        raw = through_lens(_frame(query_map, pose, seed=20 + i), lens)
        for intr, out in ((lens, with_lens), (INTR, as_pinhole)):
            loc = Localizer(backend, index, LocalizerConfig(filter=_instant_filter()))
            res = loc.localize(raw, t=pose.t, intrinsics=intr, priors=Priors(alt_m=120))
            assert (res.rectified is not None) == (intr is lens) and "rectify" in res.timings_ms
            v = res.best_verification
            out.append(float(distance_m(v.lat, v.lon, lat, lon)) if v is not None and v.ok else math.inf)
    print(f"position errors, lens model given: {[round(e, 2) for e in with_lens]} m; "
          f"treated as pinhole: {[round(e, 2) for e in as_pinhole]} m")  # pytest -s shows them
    # Same 3 m bound as the pinhole round trip above: rectification must give pinhole accuracy.
    assert max(with_lens) < 3.0, with_lens
    # Ignoring a lens that moves the image corners by ~40 px must not be as good.
    assert sum(as_pinhole) > 2 * sum(with_lens), (as_pinhole, with_lens)


# ------------------------------------------------------------------ multi-hypothesis rule (gleam_ros.core.consensus)


def test_consensus_rule_both_ways_and_track_disambiguation():
    from gleam_ros.core.consensus import check_consensus

    lat0, lon0 = 60.45, 22.27
    lat1, lon1 = offset_latlon(lat0, lon0, 17.0, 0.0)
    one = np.eye(2)  # each claims sigma = 1 m
    c = check_consensus([(lat0, lon0, one), (lat1, lon1, one)], ["a", "b"])
    assert c.best is None and "17.0 m" in c.reason and "no fix" in c.reason
    assert set(c.conflicts) == {1} and "Mahalanobis" in c.conflicts[1] and "verified hypothesis a" in c.conflicts[1]
    # agreeing: 1.5 m apart with sigma 1 m each (d2 = 1.1 < 9.21) -> the best one stands
    lat2, lon2 = offset_latlon(lat0, lon0, 1.0, -1.1)
    c = check_consensus([(lat0, lon0, one), (lat2, lon2, one)])
    assert c.best == 0 and not c.conflicts and not c.reason
    # the same 17 m apart with honest 10 m sigmas do not conflict (d2 = 1.4)
    assert check_consensus([(lat0, lon0, 100 * one), (lat1, lon1, 100 * one)]).best == 0
    # a trusted track near b picks b, and says why a was dropped
    c = check_consensus([(lat0, lon0, one), (lat1, lon1, one)], ["a", "b"], track=(lat1, lon1, 4 * one))
    assert c.best == 1 and "track" in c.conflicts[0]
    # a track between both (consistent with neither) leaves the frame without a fix
    latm, lonm = offset_latlon(lat0, lon0, 8.5, 0.0)
    assert check_consensus([(lat0, lon0, one), (lat1, lon1, one)], track=(latm, lonm, one)).best is None
    with pytest.raises(ConfigError, match="gate"):
        check_consensus([(lat0, lon0, one)], gate=float("nan"))


def _two_source_index(world, backend, shift_e_m: float):
    """Tiles near the centre from the map and from a copy of it misregistered by ``shift_e_m`` metres east."""
    import dataclasses

    from gleam_ros.core.sim.camera_sim import Photometric
    from gleam_ros.core.sim.realism import other_source_map

    a = world.satellite_map()
    b = other_source_map(a, shift_e_m, 0.0, photometric=Photometric(), resample=1.0, patch_amp=0.0)
    lat0, lon0 = a.center_latlon()
    spec = TileSpec(size_m=100.0, overlap=0.5, gsd_m=0.25)
    tiles = []
    for prefix, m in (("a", a), ("b", b)):
        for t in iter_tiles(m, spec):
            if distance_m(t.center_lat, t.center_lon, lat0, lon0) < 40.0:
                tiles.append(dataclasses.replace(t, tile_id=f"{prefix}_{t.tile_id}"))
    return TileIndex.build(tiles, backend, progress=False), (lat0, lon0)


@pytest.mark.parametrize("shift", [17.0, 0.0])
def test_localizer_withholds_the_fix_when_verified_hypotheses_disagree(setup, shift):
    """Two orthophoto sources 17 m apart: both verify with ~0.5 m sigmas -> no fix (the rule triggers); the same
    sources registered (shift 0) agree -> a fix (it must not trigger)."""
    world, _, query_map, backend, _ = setup
    index, (lat0, lon0) = _two_source_index(world, backend, shift)
    cfg = LocalizerConfig(top_k=index.n_tiles, stop_inliers=100000, filter=_instant_filter())
    loc = Localizer(backend, index, cfg)
    pose = Pose(t=0.0, lat=lat0, lon=lon0, alt_m=120, heading_deg=30.0)
    res = loc.localize(_frame(query_map, pose), t=0.0, intrinsics=INTR, priors=Priors(alt_m=120),
                       position_prior=PositionPrior(lat0, lon0, 80.0))
    verified = [h for h in res.hypotheses if h.status == "verified"]
    srcs = {h.tile_id[0] for h in verified}
    assert srcs == {"a", "b"}, [(h.tile_id, h.status, h.reason) for h in res.hypotheses]
    if shift:
        assert res.fix is None and "disagree" in res.reason
        assert any("Mahalanobis" in h.reason for h in verified)
        # with a trusted track at the truth, the registered source's hypothesis is used
        loc2 = Localizer(backend, index, cfg)
        for t in (0.0, 0.5):
            loc2.filter.update(t, lat0, lon0, np.eye(2))
        res = loc2.localize(_frame(query_map, pose), t=1.0, intrinsics=INTR, priors=Priors(alt_m=120))
        assert res.fix is not None and res.fix.tile_id.startswith("a_"), res.reason
        assert distance_m(res.fix.lat, res.fix.lon, lat0, lon0) < 3.0
    else:
        assert res.fix is not None and res.reason == ""
        assert distance_m(res.fix.lat, res.fix.lon, lat0, lon0) < 3.0


def _with_reference_std(index, out_dir, value):
    """Save ``index`` and declare the imagery's registration accuracy in its manifest, as
    ``gleam index build --reference-std-m`` does; return the directory."""
    import json

    d = index.save(out_dir)
    mpath = d / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["map_info"]["reference_std_m"] = value
    mpath.write_text(json.dumps(manifest))
    return d


def test_reference_registration_accuracy_is_added_to_published_covariance(setup, tmp_path):
    """A misregistered orthophoto shifts every fix by the same offset, which no per-frame covariance sees:
    the index's declared accuracy is added (in quadrature) to every published covariance, and nothing else
    changes (positions, which hypotheses verify, the filter's own track)."""
    from gleam_ros.core.errors import IndexFormatError

    world, geomap, query_map, backend, index = setup
    assert index.reference_std_m == 0.0  # not declared: the imagery is taken as exact
    loaded = TileIndex.load(_with_reference_std(index, tmp_path / "ref2", 2.0), backend=backend)
    assert loaded.reference_std_m == 2.0
    plain = Localizer(backend, index, LocalizerConfig(filter=_instant_filter()))
    declared = Localizer(backend, loaded, LocalizerConfig(filter=_instant_filter()))
    lat0, lon0 = geomap.center_latlon()
    n_fix = 0
    for i in range(3):
        lat, lon = offset_latlon(lat0, lon0, -30 + 15 * i, 5.0)
        pose = Pose(t=float(i), lat=lat, lon=lon, alt_m=120, heading_deg=40 + 30 * i)
        frame = _frame(query_map, pose, seed=30 + i)
        a = plain.localize(frame, t=pose.t, intrinsics=INTR, priors=Priors(alt_m=120))
        b = declared.localize(frame, t=pose.t, intrinsics=INTR, priors=Priors(alt_m=120))
        assert [h.status for h in a.hypotheses] == [h.status for h in b.hypotheses]
        for ha, hb in zip(a.hypotheses, b.hypotheses):
            assert (ha.lat, ha.lon) == (hb.lat, hb.lon) or not math.isfinite(ha.lat)
            if np.all(np.isfinite(ha.cov_en)):
                assert np.allclose(hb.cov_en, ha.cov_en + 4.0 * np.eye(2))
        if a.fix is not None:
            n_fix += 1
            assert b.fix is not None and np.allclose(b.fix.cov_en, a.fix.cov_en + 4.0 * np.eye(2))
    assert n_fix >= 2
    for k, bad in enumerate((-1.0, "two", float("nan"))):
        d = _with_reference_std(index, tmp_path / f"bad{k}", bad)
        with pytest.raises(IndexFormatError, match="manifest.json.*reference_std_m"):
            TileIndex.load(d, backend=backend)


def test_index_build_cli_declares_reference_accuracy(tmp_path, capsys):
    from gleam_ros import cli

    rc = cli.main(["index", "build", "--map", str(tmp_path / "none.tif"), "--out", str(tmp_path / "i"),
                   "--reference-std-m", "-1"])
    assert rc == 2 and "--reference-std-m" in capsys.readouterr().err
