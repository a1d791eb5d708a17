"""Tests of gleam_ros.core.index (TileIndex) with a tiny deterministic stand-in encoder (no torch)."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from gleam_ros.core import index as index_mod
from gleam_ros.core.errors import ConfigError, IndexFormatError, IndexMismatchError, InputError
from gleam_ros.core.geo import distance_m, get_transformer
from gleam_ros.core.index import FORMAT_VERSION, INDEX_KINDS, SearchHit, TileIndex
from gleam_ros.core.tiles import Tile

CRS = "EPSG:32634"
E0, N0 = 500_000.0, 4_650_000.0  # UTM 34N, around 42 N 21 E
TILE_M, TILE_PX, GRID = 100.0, 32, 18
DIM = 64


# ---------------------------------------------------------------- stand-ins
@dataclass
class _Pre:
    size: int = 8
    mean: tuple = (0.5, 0.5, 0.5)

    def to_dict(self):
        return {"size": self.size, "mean": list(self.mean)}


@dataclass
class _Card:
    name: str
    pre: _Pre

    def to_dict(self):
        return {"name": self.name, "backbone": "randproj", "embed_dim": DIM, "input_size": self.pre.size}

    def preprocess_config(self):
        return self.pre


class RandProjBackend:
    """Deterministic encoder: 8x8 area-downsampled pixels, centred, times a seeded Gaussian matrix, unit norm."""

    name = "torch"
    dim = DIM

    def __init__(self, seed: int = 0, mean: float = 0.5, fingerprint: str | None = None) -> None:
        self.proj = np.random.default_rng(seed).standard_normal((8 * 8 * 3, DIM)).astype(np.float32)
        self.fingerprint = fingerprint or f"{seed:016x}"
        self.card = _Card(f"randproj-{seed}", _Pre(mean=(mean, mean, mean)))
        self.calls: list[int] = []

    def embed(self, images, modality, batch_size=16):
        assert modality in ("satellite", "uav")
        self.calls.append(len(images))
        x = np.stack([cv2.resize(im, (8, 8), interpolation=cv2.INTER_AREA) for im in images]).astype(np.float32)
        x = x.reshape(len(images), -1) / 255.0 - 0.5
        e = x @ self.proj
        return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)


def _image(rng):
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return cv2.resize(small, (TILE_PX, TILE_PX), interpolation=cv2.INTER_LINEAR)


def make_tiles(n_side=GRID, seed=1):
    rng = np.random.default_rng(seed)
    to_ll = get_transformer(CRS, "EPSG:4326")
    tiles = []
    for r in range(n_side):
        for c in range(n_side):
            x0, y0 = E0 + c * TILE_M, N0 - r * TILE_M
            lon, lat = to_ll.transform(x0 + TILE_M / 2, y0 - TILE_M / 2)
            tiles.append(
                Tile(
                    tile_id=f"r{r:03d}c{c:03d}",
                    image=_image(rng),
                    crs=CRS,
                    x0=x0,
                    y0=y0,
                    gsd_m=TILE_M / TILE_PX,
                    size_m=TILE_M,
                    center_lat=float(lat),
                    center_lon=float(lon),
                    sources=("ortho.tif", f"patch{r % 3}"),
                    valid_fraction=1.0 - 0.01 * (c % 5),
                )
            )
    return tiles


@pytest.fixture(scope="module")
def tiles():
    return make_tiles()


@pytest.fixture(scope="module")
def backend():
    return RandProjBackend()


@pytest.fixture(scope="module")
def built(tiles, backend):
    return {kind: TileIndex.build(tiles, backend, kind=kind, progress=False) for kind in INDEX_KINDS}


@pytest.fixture(scope="module")
def saved(built, tmp_path_factory):
    d = tmp_path_factory.mktemp("idx") / "flat"
    built["flat"].save(d)
    return d


# ---------------------------------------------------------------- build / save / load
def test_build_streams_in_batches_and_records_manifest(tiles, backend):
    b = RandProjBackend()
    idx = TileIndex.build(iter(tiles[:70]), b, batch_size=32, progress=False, map_info={"name": "test-map"})
    assert b.calls == [32, 32, 6]
    assert (idx.kind, idx.dim, idx.n_tiles, len(idx)) == ("flat", DIM, 70, 70)
    m = idx.manifest
    assert m["format_version"] == FORMAT_VERSION
    assert m["encoder"]["fingerprint"] == b.fingerprint == idx.fingerprint
    assert m["encoder"]["card"]["name"] == "randproj-0"
    assert m["preprocessing"] == {"size": 8, "mean": [0.5, 0.5, 0.5]}
    assert m["tile_spec"] == {"size_m": TILE_M, "gsd_m": TILE_M / TILE_PX, "crs": CRS, "image_px": TILE_PX}
    assert m["map_info"] == {"name": "test-map"}


def test_round_trip_preserves_search_images_and_metadata(tiles, backend, built, saved):
    idx = built["flat"]
    out = saved
    names = sorted(p.name for p in out.iterdir())
    assert names == ["manifest.json", "tiles.npz", "tiles.pack", "vectors.faiss"]  # no temp files left
    man = json.loads((out / "manifest.json").read_text())
    for name in ("vectors.faiss", "tiles.npz", "tiles.pack"):
        assert man["files"][name]["size"] == (out / name).stat().st_size
        assert len(man["files"][name]["sha256"]) == 64
    assert "created" in man

    loaded = TileIndex.load(out, backend=backend)
    assert (loaded.kind, loaded.dim, loaded.n_tiles, loaded.fingerprint) == ("flat", DIM, len(tiles), idx.fingerprint)
    q = backend.embed([t.image for t in tiles[5:25]], "uav")
    a, b = idx.search(q, k=5), loaded.search(q, k=5)
    assert [[h.tile_id for h in row] for row in a] == [[h.tile_id for h in row] for row in b]
    np.testing.assert_allclose([[h.score for h in row] for row in a], [[h.score for h in row] for row in b], atol=1e-6)

    for i in (0, 17, len(tiles) - 1):
        orig, got = tiles[i], loaded.tile(i)
        assert got.image.shape == orig.image.shape and got.image.dtype == np.uint8
        diff = np.abs(got.image.astype(int) - orig.image.astype(int))
        assert diff.mean() < 3.0 and diff.max() < 40
        for f in ("tile_id", "crs", "x0", "y0", "gsd_m", "size_m", "center_lat", "center_lon", "valid_fraction"):
            assert getattr(got, f) == getattr(orig, f), f
        assert tuple(got.sources) == tuple(orig.sources)
        np.testing.assert_allclose(loaded.corners_latlon(i), orig.corners_latlon())
        assert loaded.tile_by_id(orig.tile_id).tile_id == orig.tile_id
        assert loaded.tile(i) is got  # LRU cache
        assert not got.image.flags.writeable
    assert loaded.tile_ids == [t.tile_id for t in tiles]
    with pytest.raises(InputError):
        loaded.tile_by_id("nope")
    with pytest.raises(InputError):
        loaded.tile(len(tiles))


def test_in_memory_tile_matches_loaded_tile(tiles, built):
    t = built["hnsw"].tile(3)
    assert np.abs(t.image.astype(int) - tiles[3].image.astype(int)).mean() < 2.0


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_each_kind_finds_stored_vector_at_rank_one(kind, tiles, backend, built, tmp_path):
    idx = built[kind]
    assert idx.kind == kind and idx.n_tiles == len(tiles) == GRID * GRID
    sel = list(range(0, len(tiles), 13))
    q = backend.embed([tiles[i].image for i in sel], "satellite")
    for idx_ in (idx, TileIndex.load(idx.save(tmp_path / kind), backend=backend)):
        res = idx_.search(q, k=3)
        assert len(res) == len(sel)
        for i, row in zip(sel, res):
            assert isinstance(row[0], SearchHit)
            assert [h.rank for h in row] == [1, 2, 3]
            assert row[0].tile_idx == i and row[0].tile_id == tiles[i].tile_id
            assert row[0].distance_m is None and row[0].rotation == -1
            assert row[0].score > row[1].score
            assert (row[0].center_lat, row[0].center_lon) == (tiles[i].center_lat, tiles[i].center_lon)
            if kind != "ivfpq":
                assert row[0].score == pytest.approx(1.0, abs=1e-4)
    # a single 1-D query is accepted
    one = idx.search(q[0], k=1)
    assert len(one) == 1 and one[0][0].tile_idx == sel[0]


def test_ivfpq_parameters_and_tiny_set_fallback(tiles, backend, built, caplog):
    p = built["ivfpq"].manifest["index_params"]
    assert DIM % p["pq_m"] == 0 and p["ivf_nlist"] >= 1
    with caplog.at_level(logging.WARNING, logger="gleam_ros.core.index"):
        tiny = TileIndex.build(tiles[:20], backend, kind="ivfpq", progress=False)
    assert tiny.kind == "flat" and tiny.manifest["kind"] == "flat"
    assert tiny.manifest["index_params"]["requested_kind"] == "ivfpq"
    assert any("IVF-PQ" in r.getMessage() for r in caplog.records)
    q = backend.embed([tiles[7].image], "satellite")
    assert tiny.search(q, k=1)[0][0].tile_idx == 7
    with pytest.raises(ConfigError):
        TileIndex.build(tiles[:20], backend, kind="ivfpq", pq_m=7, progress=False)


def test_build_rejects_bad_input(tiles, backend):
    with pytest.raises(ConfigError):
        TileIndex.build([], backend, progress=False)
    with pytest.raises(ConfigError):
        TileIndex.build(tiles[:3], backend, kind="lsh", progress=False)
    with pytest.raises(ConfigError):
        TileIndex.build([tiles[0], tiles[1], tiles[0]], backend, progress=False)


def test_store_images_false(tiles, backend, tmp_path):
    idx = TileIndex.build(tiles[:10], backend, store_images=False, progress=False)
    out = idx.save(tmp_path / "noimg")
    assert not (out / "tiles.pack").exists()
    loaded = TileIndex.load(out, backend=backend)
    assert not loaded.has_images
    t = loaded.tile(4)
    assert t.image.shape == (0, 0, 3) and t.tile_id == tiles[4].tile_id


# ---------------------------------------------------------------- prior-restricted search
@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_prior_radius_search(kind, tiles, backend, built):
    _check_prior_search(built[kind], tiles, backend)


def test_prior_radius_search_hnsw_selector_path(tiles, backend, built, monkeypatch):
    # large candidate sets use the filtered HNSW graph search instead of brute force over the subset
    monkeypatch.setattr(index_mod, "_HNSW_BRUTE_MAX", 5)
    _check_prior_search(built["hnsw"], tiles, backend)


def _check_prior_search(idx, tiles, backend):
    t_i = 5 * GRID + 7
    t = tiles[t_i]
    q = backend.embed([t.image], "uav")
    lat, lon = t.center_lat + 0.0003, t.center_lon - 0.0002  # ~35 m away
    radius = 260.0
    inside = idx.tiles_within(lat, lon, radius)
    clat = np.array([x.center_lat for x in tiles])
    clon = np.array([x.center_lon for x in tiles])
    d_all = distance_m(np.full_like(clat, lat), np.full_like(clon, lon), clat, clon)
    np.testing.assert_array_equal(inside, np.flatnonzero(d_all <= radius))  # ENU vs geodesic agree at this scale
    assert 10 < len(inside) < 40 and t_i in inside

    hits = idx.search(q, k=len(tiles), prior=(lat, lon, radius))[0]
    assert len(hits) == len(inside)  # k larger than the candidates -> fewer hits
    assert hits[0].tile_idx == t_i
    assert {h.tile_idx for h in hits} == set(inside.tolist())
    for h in hits:
        assert h.distance_m is not None and h.distance_m <= radius
        assert h.distance_m == pytest.approx(float(d_all[h.tile_idx]), abs=0.5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    # the true tile outside a small radius elsewhere is never returned
    far = tiles[0]
    hits = idx.search(q, k=5, prior=(far.center_lat, far.center_lon, 150.0))[0]
    assert hits and all(h.tile_idx != t_i and h.distance_m <= 150.0 for h in hits)

    # empty candidate set
    assert idx.search(np.vstack([q, q]), k=5, prior=(lat + 1.0, lon, 100.0)) == [[], []]
    assert idx.search_multi(np.vstack([q, q]), k=5, prior=(lat + 1.0, lon, 100.0)) == []


def test_bad_prior_is_rejected(built, backend, tiles):
    q = backend.embed([tiles[0].image], "uav")
    for prior in [(91.0, 0.0, 10.0), (42.0, 21.0, -1.0), (42.0, 21.0, float("nan")), (42.0, 21.0)]:
        with pytest.raises(InputError):
            built["flat"].search(q, prior=prior)


# ---------------------------------------------------------------- search_multi
@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_search_multi_picks_tile_and_rotation(kind, tiles, backend, built):
    idx = built[kind]
    for t_i, true_rot in ((40, 3), (211, 1), (300, 2)):
        # frame = tile rotated by (4 - true_rot) quarter turns; rotating the frame back by true_rot recovers the tile
        frame = np.rot90(tiles[t_i].image, k=4 - true_rot)
        rots = [np.ascontiguousarray(np.rot90(frame, k=r)) for r in range(4)]
        q = backend.embed(rots, "uav")
        hits = idx.search_multi(q, k=5)
        assert len(hits) == 5 and len({h.tile_idx for h in hits}) == 5
        assert hits[0].tile_idx == t_i and hits[0].rotation == true_rot
        assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert all(0 <= h.rotation < 4 for h in hits)
        # max-over-rotations agrees with the per-rotation searches
        per_rot = idx.search(q, k=5)
        assert hits[0].score == pytest.approx(max(row[0].score for row in per_rot), abs=1e-6)
        t = tiles[t_i]
        ph = idx.search_multi(q, k=3, prior=(t.center_lat, t.center_lon, 120.0))
        assert ph[0].tile_idx == t_i and ph[0].rotation == true_rot and ph[0].distance_m < 1.0


# ---------------------------------------------------------------- load failures
def _copy(src, dst):
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_mismatched_encoder(saved, tmp_path):
    other = RandProjBackend(seed=1, fingerprint="deadbeefdeadbeef")
    with pytest.raises(IndexMismatchError) as ei:
        TileIndex.load(saved, backend=other)
    msg = str(ei.value)
    assert "deadbeefdeadbeef" in msg and f"{0:016x}" in msg and "gleam index build" in msg
    assert "randproj-0" in msg and "randproj-1" in msg
    with pytest.raises(IndexMismatchError, match="0123456789abcdef"):
        TileIndex.load(saved, expected_fingerprint="0123456789abcdef")
    # same weights fingerprint but other preprocessing
    with pytest.raises(IndexMismatchError, match="preprocessing"):
        TileIndex.load(saved, backend=RandProjBackend(seed=0, mean=0.45))
    # an ONNX backend of the same weights (same fingerprint and preprocessing) is accepted
    onnx = RandProjBackend(seed=0)
    onnx.name = "onnx"
    assert TileIndex.load(saved, backend=onnx, expected_fingerprint=f"{0:016x}").n_tiles == GRID * GRID


@pytest.mark.parametrize("name", ["vectors.faiss", "tiles.pack", "tiles.npz"])
@pytest.mark.parametrize("verify", [True, False])
def test_truncated_file(name, verify, saved, tmp_path):
    d = _copy(saved, tmp_path / "idx")
    data = (d / name).read_bytes()
    (d / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFormatError, match=name.replace(".", r"\.")):
        TileIndex.load(d, verify_checksums=verify)


@pytest.mark.parametrize("name", ["vectors.faiss", "tiles.pack"])
def test_corrupt_file_same_size(name, saved, tmp_path):
    d = _copy(saved, tmp_path / "idx")
    data = bytearray((d / name).read_bytes())
    data[:16] = b"\x00garbage-garbage"
    (d / name).write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=r"sha256.*|checksum"):
        TileIndex.load(d)
    if name == "vectors.faiss":  # without checksums, FAISS itself rejects the header
        with pytest.raises(IndexFormatError, match=r"vectors\.faiss"):
            TileIndex.load(d, verify_checksums=False)


def test_missing_or_bad_manifest(saved, tmp_path):
    with pytest.raises(IndexFormatError, match="does not exist"):
        TileIndex.load(tmp_path / "nowhere")
    d = _copy(saved, tmp_path / "idx")
    (d / "manifest.json").unlink()
    with pytest.raises(IndexFormatError, match=r"manifest\.json"):
        TileIndex.load(d)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match=r"manifest\.json"):
        TileIndex.load(d)


def test_wrong_format_version(saved, tmp_path):
    d = _copy(saved, tmp_path / "idx")
    man = json.loads((d / "manifest.json").read_text())
    man["format_version"] = FORMAT_VERSION + 1
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(IndexFormatError, match="format_version"):
        TileIndex.load(d)


def test_missing_data_file(saved, tmp_path):
    d = _copy(saved, tmp_path / "idx")
    (d / "tiles.npz").unlink()
    with pytest.raises(IndexFormatError, match=r"tiles\.npz"):
        TileIndex.load(d)


# ---------------------------------------------------------------- bad queries
def test_bad_queries(built):
    idx = built["flat"]
    good = np.zeros((2, DIM), np.float32)
    good[:, 0] = 1.0
    assert len(idx.search(good, k=2)) == 2
    bad_nan = good.copy()
    bad_nan[1, 3] = np.nan
    for q in (np.ones((2, DIM + 1), np.float32), np.ones((2, 2, DIM), np.float32), bad_nan,
              np.zeros((1, DIM), np.float32), np.full(DIM, np.inf, np.float32), "text"):
        with pytest.raises(InputError):
            idx.search(q)
        with pytest.raises(InputError):
            idx.search_multi(q)
    with pytest.raises(InputError):
        idx.search(good, k=0)


def test_non_unit_queries_are_normalised(built, backend, tiles):
    q = backend.embed([tiles[9].image], "uav") * 7.5
    hit = built["flat"].search(q, k=1)[0][0]
    assert hit.tile_idx == 9 and hit.score == pytest.approx(1.0, abs=1e-4)
    assert math.isfinite(hit.score)
