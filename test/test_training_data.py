"""GLEAM-C data: every reader yields the right pairs and test sets on a tiny tree in its published layout; the
simulated data keeps evaluation ground out of training; augmentation aligns headings like the yaw TTA."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from gleam_ros.core.camera import CameraIntrinsics
from gleam_ros.core.errors import ConfigError
from gleam_ros.core.preprocess import PreprocessConfig, rotated_square
from gleam_ros.core.sim.camera_sim import Pose, render_view
from gleam_ros.core.sim.world import WorldConfig, make_world
from training.config import AugmentConfig
from training.datasets import Pair, PairDataset, augment_pair, build_source, collate_pairs, tta_side
from training.simdata import SimSpec, ensure_generated, read_generated


def _img(path: Path, seed: int = 0, size: tuple[int, int] = (20, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), a)
    return path


def _rel(p: str, root: Path) -> str:
    return Path(p).relative_to(root).as_posix()


def test_university1652(tmp_path):
    r = tmp_path / "University-Release"
    for bid in ("0001", "0002"):
        _img(r / "train" / "satellite" / bid / f"{bid}.jpg")
        for k in range(3):
            _img(r / "train" / "drone" / bid / f"image-{k:02d}.jpeg")
        _img(r / "train" / "street" / bid / "s1.jpg")
    _img(r / "train" / "drone" / "0009" / "image-01.jpeg")  # no satellite image: ignored
    for bid in ("0003", "0004"):
        _img(r / "test" / "query_drone" / bid / "image-01.jpeg")
        _img(r / "test" / "query_drone" / bid / "image-02.jpeg")
        _img(r / "test" / "query_satellite" / bid / f"{bid}.jpg")
        _img(r / "test" / "gallery_drone" / bid / "image-05.jpeg")
    for bid in ("0003", "0004", "0777"):  # 0777: a distractor in the satellite gallery
        _img(r / "test" / "gallery_satellite" / bid / f"{bid}.jpg")
    src = build_source("u", {"type": "university1652", "root": str(r)})
    assert len(src.train) == 6 and {p.modality for p in src.train} == {"uav"}
    assert {(_rel(p.query, r), _rel(p.ref, r), p.label) for p in src.train if "0002" in p.query} == {
        (f"train/drone/0002/image-{k:02d}.jpeg", "train/satellite/0002/0002.jpg", "u:0002") for k in range(3)}
    (d2s, s2d) = src.eval
    assert (d2s.query_modality, d2s.gallery_modality, s2d.query_modality, s2d.gallery_modality) == (
        "uav", "satellite", "satellite", "uav")
    assert not d2s.reverse and not s2d.reverse
    gal = [_rel(g, r) for g in d2s.gallery]
    assert gal == ["test/gallery_satellite/0003/0003.jpg", "test/gallery_satellite/0004/0004.jpg",
                   "test/gallery_satellite/0777/0777.jpg"]
    assert [p.tolist() for p in d2s.positives] == [[0], [0], [1], [1]]
    assert [p.tolist() for p in s2d.positives] == [[0], [1]]
    both = build_source("u", {"type": "university1652", "root": str(r), "modalities": ["uav", "ground"]})
    assert sorted({p.modality for p in both.train}) == ["ground", "uav"] and len(both.train) == 8
    with pytest.raises(ConfigError, match="unknown key"):
        build_source("u", {"type": "university1652", "root": str(r), "bogus": 1})


def _vigor_line(pano: str, sats: list[str]) -> str:
    return " ".join([pano] + [f"{s} 1.5 -2.5" for s in sats])


def test_vigor_same_and_cross_area(tmp_path):
    r = tmp_path / "VIGOR"
    for c in ("Chicago", "NewYork", "SanFrancisco", "Seattle"):
        sats = [f"satellite_{c}_{k}.png" for k in range(5)]
        (r / "splits" / c).mkdir(parents=True)
        (r / "splits" / c / "satellite_list.txt").write_text("\n".join(sats) + "\n")
        train = [_vigor_line(f"{c}_p{k}.jpg", [sats[k], sats[k + 1], sats[k + 2], sats[k + 3]]) for k in range(2)]
        test = [_vigor_line(f"{c}_t{k}.jpg", [sats[4 - k], sats[0], sats[1], sats[2]]) for k in range(1)]
        (r / "splits" / c / "same_area_balanced_train.txt").write_text("\n".join(train) + "\n")
        (r / "splits" / c / "same_area_balanced_test.txt").write_text("\n".join(test) + "\n")
        (r / "splits" / c / "pano_label_balanced.txt").write_text("\n".join(train + test) + "\n")
    same = build_source("v", {"type": "vigor", "root": str(r)})
    assert len(same.train) == 8 and {p.modality for p in same.train} == {"panorama"}
    p = next(p for p in same.train if p.query.endswith("Seattle_p1.jpg"))
    assert (_rel(p.query, r), _rel(p.ref, r), p.label) == (
        "Seattle/panorama/Seattle_p1.jpg", "Seattle/satellite/satellite_Seattle_1.png", "v:Seattle/satellite_Seattle_1.png")
    (ev,) = same.eval
    assert len(ev.gallery) == 20 and len(ev.queries) == 4 and ev.reverse
    q = ev.queries.index(str(r / "NewYork" / "panorama" / "NewYork_t0.jpg"))
    assert ev.gallery[int(ev.positives[q][0])].endswith("NewYork/satellite/satellite_NewYork_4.png")
    assert [Path(ev.gallery[i]).name for i in ev.semi[q]] == [f"satellite_NewYork_{k}.png" for k in range(3)]
    cross = build_source("v", {"type": "vigor", "root": str(r), "split": "cross_area"})
    assert {Path(p.query).parts[-3] for p in cross.train} == {"Chicago", "NewYork"} and len(cross.train) == 6
    (ev,) = cross.eval
    assert len(ev.gallery) == 10 and all("Chicago" not in g and "NewYork" not in g for g in ev.gallery)
    assert len(ev.queries) == 6  # every panorama of SanFrancisco and Seattle
    with pytest.raises(ConfigError, match="split"):
        build_source("v", {"type": "vigor", "root": str(r), "split": "other"})


def test_cvusa_and_cvact_csv(tmp_path):
    r = tmp_path / "CVUSA"
    (r / "splits").mkdir(parents=True)
    lines = [f"bingmap/19/{k:07d}.jpg,streetview/panos/{k:07d}.jpg,annotations/{k:07d}.png" for k in range(1, 4)]
    (r / "splits" / "train-19zl.csv").write_text("\n".join(lines[:2]) + "\n")
    (r / "splits" / "val-19zl.csv").write_text(lines[2] + "\n")
    src = build_source("c", {"type": "cvusa", "root": str(r)})
    assert [(_rel(p.query, r), _rel(p.ref, r), p.modality) for p in src.train] == [
        ("streetview/panos/0000001.jpg", "bingmap/19/0000001.jpg", "panorama"),
        ("streetview/panos/0000002.jpg", "bingmap/19/0000002.jpg", "panorama")]
    (ev,) = src.eval
    assert [_rel(q, r) for q in ev.queries] == ["streetview/panos/0000003.jpg"] and ev.positives[0].tolist() == [0]
    a = tmp_path / "CVACT"
    (a / "splits").mkdir(parents=True)
    (a / "splits" / "train.csv").write_text("sat/a.jpg,grd/a.jpg\nsat/b.jpg,grd/b.jpg\n")
    (a / "splits" / "val.csv").write_text("sat/c.jpg,grd/c.jpg\n")
    src = build_source("a", {"type": "cvact", "root": str(a)})
    assert len(src.train) == 2 and src.train[1].ref == str(a / "sat/b.jpg") and len(src.eval[0].queries) == 1


def test_cvact_mat(tmp_path):
    sio = pytest.importorskip("scipy.io")
    ids = np.array(["idA", "idB", "idC"])
    sio.savemat(str(tmp_path / "ACT_data.mat"), {
        "panoIds": ids,
        "trainSet": {"trainNum": 2, "trainInd": np.array([[1], [3]])},
        "valSet": {"valNum": 1, "valInd": np.array([[2]])},
    })
    src = build_source("a", {"type": "cvact", "root": str(tmp_path)})
    assert [(Path(p.query).name, Path(p.ref).name) for p in src.train] == [
        ("idA_grdView.jpg", "idA_satView_polish.jpg"), ("idC_grdView.jpg", "idC_satView_polish.jpg")]
    assert [Path(q).name for q in src.eval[0].queries] == ["idB_grdView.jpg"]
    assert Path(src.eval[0].gallery[0]).parts[-3:] == ("ANU_data_small", "satview_polish", "idB_satView_polish.jpg")


def test_pairs_folder_and_csv(tmp_path):
    f = tmp_path / "streetmaps"
    for split, stems in (("train", ["a", "b", "c"]), ("test", ["d", "e"])):
        for s in stems:
            _img(f / split / "map" / f"{s}.png")
            _img(f / split / "satellite" / f"{s}.png")
    _img(f / "train" / "map" / "orphan.png")  # no satellite partner
    src = build_source("m", {"type": "pairs_folder", "root": str(f)})
    assert [(_rel(p.query, f), _rel(p.ref, f), p.modality, p.label) for p in src.train] == [
        (f"train/map/{s}.png", f"train/satellite/{s}.png", "map", f"m:{s}") for s in "abc"]
    (ev,) = src.eval
    assert [p.tolist() for p in ev.positives] == [[0], [1]] and ev.reverse
    rev = ev.reversed()
    assert rev.query_modality == "satellite" and [p.tolist() for p in rev.positives] == [[0], [1]]

    g = tmp_path / "ground"
    g.mkdir()
    (g / "train.csv").write_text("query,satellite,label\nphotos/1.jpg,sat/x.jpg,x\nphotos/2.jpg,sat/x.jpg,x\n"
                                 "photos/3.jpg,sat/y.jpg,\n")
    (g / "test.csv").write_text("query,satellite,modality,heading_deg\nphotos/4.jpg,sat/z.jpg,ground,\n"
                                "drone/5.jpg,sat/w.jpg,uav,90\n")
    src = build_source("g", {"type": "pairs_csv", "root": str(g)})
    assert [(_rel(p.query, g), p.label, p.modality) for p in src.train] == [
        ("photos/1.jpg", "g:x", "ground"), ("photos/2.jpg", "g:x", "ground"), ("photos/3.jpg", "g:sat/y.jpg", "ground")]
    by_mod = {s.query_modality: s for s in src.eval}
    assert sorted(by_mod) == ["ground", "uav"]
    s = by_mod["uav"]
    assert len(s.gallery) == 2 and s.gallery[int(s.positives[0][0])] == str(g / "sat/w.jpg")
    (g / "bad.csv").write_text("image,sat\n")
    with pytest.raises(ConfigError, match="header"):
        build_source("g", {"type": "pairs_csv", "root": str(g), "train_csv": "bad.csv"})


def test_reversed_set_with_semi_positives():
    from training.datasets import RetrievalSet

    s = RetrievalSet("v", "panorama", "satellite", ["q0", "q1", "q2"], ["g0", "g1", "g2"],
                     [np.array([0]), np.array([0]), np.array([2])], semi=[np.array([1]), np.array([2]), np.array([])])
    r = s.reversed()
    assert r.queries == ["g0", "g2"] and [p.tolist() for p in r.positives] == [[0, 1], [2]]
    assert [j.tolist() for j in r.junk] == [[], [1]]  # q1 names g2 a semi-positive: ignored, not a negative


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    cache = tmp_path_factory.mktemp("sim")
    spec = SimSpec.from_dict({
        "maps": [{"world": {"seed": 3, "size_m": 300, "gsd_m": 0.6}, "query_variants": [{"season": "winter", "seed": 9}]}],
        "cache_dir": str(cache), "train_centres": 10, "eval_queries": 5, "holdout_fraction": 0.4, "tile_size_m": 60,
        "eval_tile_gsd_m": 1.0, "store_px": 48, "min_sep_m": 15, "ref_jitter_m": 10, "alt_range": [60, 80],
        "buffer_m": 10})
    return spec, ensure_generated("sim", spec)


def test_simulated_pairs_and_held_out_area(sim):
    spec, folder = sim
    assert ensure_generated("sim", spec) == folder  # cached
    src = read_generated("sim", folder)
    man = __import__("json").loads((folder / "manifest.json").read_text())
    (info,) = man["maps"]
    tb, eb = info["train_box"], info["eval_box"]
    assert eb[0] - tb[2] == pytest.approx(10.0)  # buffer between training and evaluation ground
    rows = list(csv.DictReader((folder / "train.csv").open()))
    assert {r["modality"] for r in rows} == {"uav", "map"} and len(src.train) == len(rows) >= 16
    half = spec.tile_size_m / 2
    for r in rows:  # reference crops (and the places) lie wholly on training ground
        assert float(r["ref_x"]) + half <= tb[2] + 1e-6 and float(r["ref_x"]) - half >= tb[0] - 1e-6
        assert abs(float(r["ref_x"]) - float(r["x"])) <= spec.ref_jitter_m
    uav = [p for p in src.train if p.modality == "uav"]
    assert all(p.heading_deg is not None for p in uav) and all(p.label.startswith("sim:world3:") for p in uav)
    assert len({p.label for p in uav}) == len(uav)  # one uav view per place
    tiles = list(csv.DictReader((folder / "eval/world3/tiles.csv").open()))
    assert all(float(t["x0"]) >= eb[0] - 1e-6 and float(t["x0"]) + float(t["size_m"]) <= eb[2] + 1e-6 for t in tiles)
    sets = {s.query_modality: s for s in src.eval}
    assert sorted(sets) == ["map", "uav"]
    for mod, s in sets.items():
        assert len(s.queries) == 5 and len(s.gallery) == len(tiles)
        for row, pos in zip(csv.DictReader((folder / f"eval/world3/{mod}.csv").open()), s.positives):
            x, y = float(row["x"]), float(row["y"])
            inside = [i for i, t in enumerate(tiles) if float(t["x0"]) <= x < float(t["x0"]) + float(t["size_m"])
                      and float(t["y0"]) - float(t["size_m"]) < y <= float(t["y0"])]
            assert pos.tolist() == inside and len(inside) >= 1
    img = cv2.imread(str(folder / rows[0]["satellite"]))
    assert img.shape == (48, 48, 3)


def test_heading_alignment_matches_the_tta_convention():
    """A frame at heading h, aligned by augment_pair, shows what a north-up (heading 0) frame shows."""
    world = make_world(WorldConfig(seed=5, size_m=200, gsd_m=0.5))
    gm = world.satellite_map()
    lat, lon = world.pixel_to_latlon(200, 200)
    intr = CameraIntrinsics.from_fov(96, 96, 60.0)
    north, _ = render_view(gm, Pose(0, float(lat), float(lon), 60.0, 0.0), intr)
    ref = rotated_square(north, 0.0, side=tta_side(96, 96, 8))
    aug = AugmentConfig(derotate="exact")
    for h in (45.0, 90.0, 135.0, 270.0):
        img, _ = render_view(gm, Pose(0, float(lat), float(lon), 60.0, h), intr)
        q, _ = augment_pair(img, img, Pair("q", "r", "uav", "l", heading_deg=h), aug, None)
        wrong = rotated_square(img, h, side=ref.shape[0])
        err = np.abs(q.astype(float) - ref).mean()
        assert err < 12.0 and err < 0.6 * np.abs(wrong.astype(float) - ref).mean(), h
    # tta mode snaps to the nearest of the 8 yaw hypotheses: a 50 deg heading is rotated back by 45 deg only
    img, _ = render_view(gm, Pose(0, float(lat), float(lon), 60.0, 50.0), intr)
    q, _ = augment_pair(img, img, Pair("q", "r", "uav", "l", heading_deg=50.0), AugmentConfig(derotate="tta"), None)
    assert np.array_equal(q, rotated_square(img, 315.0, side=tta_side(96, 96, 8)))


def test_pair_dataset_augmentation_is_seeded(tmp_path):
    pairs = [Pair(str(_img(tmp_path / f"q{k}.png", k, (40, 40))), str(_img(tmp_path / f"r{k}.png", 10 + k, (40, 40))),
                  "uav", f"p{k}") for k in range(3)]
    pairs.append(Pair(str(_img(tmp_path / "pano.png", 5, (20, 40))), str(tmp_path / "r0.png"), "panorama", "p9"))
    ds = PairDataset(pairs, PreprocessConfig(input_size=32), AugmentConfig())
    a, b, c = ds[(0, 7)], ds[(0, 7)], ds[(0, 8)]
    assert torch.equal(a["q"], b["q"]) and torch.equal(a["r"], b["r"])
    assert not torch.equal(a["q"], c["q"])
    plain = ds[0]
    assert plain["q"].shape == (3, 32, 32) and ds[(3, 1)]["q"].shape == (3, 32, 64)
    batch = collate_pairs([ds[(i, i)] for i in range(4)])
    assert batch["label"].tolist() == [int(ds.labels[i]) for i in range(4)] and batch["qm"][3] == "panorama"
    assert math.isclose(tta_side(480, 640, 8), 339, abs_tol=0)
