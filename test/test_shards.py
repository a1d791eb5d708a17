"""Tests of gleam_ros.core.shards: sharded (torchrun) resumable builds, streaming merge, prior-local search.

A tiny deterministic stand-in encoder (random projection of 8x8 pixels) keeps these about sharding, not embedding.
The worker scripts that torchrun / subprocesses start import this module for the world and the encoder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from gleam_ros.core import shards
from gleam_ros.core.errors import ConfigError, IndexMismatchError
from gleam_ros.core.geo import get_transformer, offset_latlon
from gleam_ros.core.index import TileIndex
from gleam_ros.core.maps import map_from_array, open_map, write_geotiff
from gleam_ros.core.shards import CellSearcher, CellTable, build_shard, merge_shards
from gleam_ros.core.tiles import TileSpec, iter_tiles

CRS = "EPSG:32634"
E0, N0 = 500_000.0, 4_650_000.0
MAP_PX, MAP_GSD = 350, 2.0  # 700 m square world
SPEC = TileSpec(size_m=100.0, overlap=0.5, gsd_m=4.0, min_valid=0.9)  # 13 x 13 grid, 25 px tiles
CHUNK = 4  # 4 x 4 cells per chunk -> 16 chunks
DIM = 32
HERE = Path(__file__).resolve().parent


class RandProjBackend:
    """Deterministic stand-in encoder; ``fail_after`` raises on that embed call, ``slow`` sleeps per call."""

    name = "randproj"
    dim = DIM
    card = None

    def __init__(self, seed: int = 0, fail_after: int | None = None, slow: float = 0.0) -> None:
        self.proj = np.random.default_rng(seed).standard_normal((8 * 8 * 3, DIM)).astype(np.float32)
        self.fingerprint = f"{seed:016x}"
        self.fail_after, self.slow = fail_after, slow
        self.calls: list[int] = []

    def embed(self, images, modality, batch_size=16):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("simulated crash")
        if self.slow:
            time.sleep(self.slow)
        self.calls.append(len(images))
        x = np.stack([cv2.resize(im, (8, 8), interpolation=cv2.INTER_AREA) for im in images]).astype(np.float32)
        e = (x.reshape(len(images), -1) / 255.0 - 0.5) @ self.proj
        return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)


def world_rgb(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rgb = cv2.resize(rng.integers(0, 256, (60, 60, 3), dtype=np.uint8), (MAP_PX, MAP_PX), interpolation=cv2.INTER_CUBIC)
    valid = np.ones((MAP_PX, MAP_PX), bool)
    valid[:130, :130] = False  # a 260 m hole in the north-west: chunk 0 is all holes
    return rgb, valid


def make_world(seed: int = 1, name: str = "world", east: float = 0.0):
    rgb, valid = world_rgb(seed)
    return map_from_array(rgb, CRS, (MAP_GSD, 0, E0 + east, 0, -MAP_GSD, N0), name=name, valid=valid)


WORKER = """
import sys
sys.path[:0] = [{root!r}, {here!r}]  # this checkout's gleam_ros, whatever the environment has installed
import os
from test_shards import SPEC, CHUNK, RandProjBackend, make_world
from gleam_ros.core.shards import build_shard, rank_from_env

rank, world, _ = rank_from_env()
rank = int(os.environ.get("FORCE_RANK", rank))
world = int(os.environ.get("FORCE_WORLD", world))
st = build_shard([make_world()], SPEC, RandProjBackend(slow=float(os.environ.get("SLOW", "0"))), sys.argv[1],
                 rank=rank, world_size=world, chunk_cells=CHUNK, batch_size=8)
print("RANK_DONE", rank, st.chunks_built, st.chunks_skipped, st.tiles, flush=True)
"""


@pytest.fixture(scope="module")
def worker(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("worker") / "worker.py"
    p.write_text(textwrap.dedent(WORKER.format(root=str(HERE.parent), here=str(HERE))))
    return p


def _env(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture(scope="module")
def single():
    """The single-process reference: `gleam index build` on the same world."""
    return TileIndex.build(iter_tiles(make_world(), SPEC), RandProjBackend(), kind="flat", batch_size=8, progress=False)


@pytest.fixture(scope="module")
def merged(tmp_path_factory, worker):
    """Two ranks under torchrun, then a flat and an IVF-PQ merge."""
    d = tmp_path_factory.mktemp("torchrun")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(worker),
           str(d / "build")]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    flat = merge_shards(d / "build", d / "flat", kind="flat")
    ivf = merge_shards(d / "build", d / "ivfpq", kind="ivfpq", ivf_nlist=4, pq_m=8)
    return {"build": d / "build", "flat": flat, "ivfpq": ivf, "log": res.stdout + res.stderr}


def _queries(index_like, backend, seed=0):
    """Noisy copies of every stored tile image (Gaussian pixel noise), one per tile, in the index's order."""
    rng = np.random.default_rng(seed)
    imgs = [np.clip(index_like.tile(i).image.astype(int) + rng.normal(0, 12, index_like.tile(i).image.shape), 0, 255)
            .astype(np.uint8) for i in range(index_like.n_tiles)]
    return backend.embed(imgs, "uav")


# ---------------------------------------------------------------- sharded build == single-process build
def test_two_rank_torchrun_build_merges_like_single_process(merged, single):
    b = RandProjBackend()
    idx = TileIndex.load(merged["flat"], backend=b)
    assert idx.kind == "flat" and idx.n_tiles == single.n_tiles == 136
    assert sorted(idx.tile_ids) == sorted(single.tile_ids)  # same tile set, no duplicates
    assert len(set(idx.tile_ids)) == idx.n_tiles
    man = idx.manifest
    for key in ("format_version", "dim", "metric", "encoder", "preprocessing", "tile_spec", "has_images", "jpeg_quality"):
        assert man[key] == json.loads(json.dumps(single.manifest[key])), key
    assert man["sharded_build"]["n_chunks"] == 16 and man["spatial_cells"]["file"] == "cells.npz"
    # identical tiles: metadata and JPEG bytes
    for tid in single.tile_ids[::9]:
        i, j = idx.index_of(tid), single.index_of(tid)
        a, r = idx.tile(i), single.tile(j)
        assert (a.x0, a.y0, a.center_lat, a.center_lon, a.valid_fraction) == (r.x0, r.y0, r.center_lat, r.center_lon,
                                                                             r.valid_fraction)
        assert idx.jpeg_bytes(i) == single.jpeg_bytes(j)
    # same top-1 for every query (noisy copies of every tile)
    q = _queries(single, b)
    top_single = [row[0].tile_id for row in single.search(q, k=3)]
    top_merged = [row[0].tile_id for row in idx.search(q, k=3)]
    assert top_merged == top_single
    # each rank wrote its shard summary; together they built every chunk once
    summaries = [json.loads(p.read_text()) for p in sorted((merged["build"] / "shards").glob("rank*.json"))]
    assert [s["rank"] for s in summaries] == [0, 1] and all(s["finished"] for s in summaries)
    assert sum(s["chunks_built"] for s in summaries) == 16 and sum(s["tiles"] for s in summaries) == 136
    assert sum(s["holes"] for s in summaries) + 136 == 13 * 13


def test_ivfpq_merge_trains_on_sample_and_finds_tiles(merged):
    b = RandProjBackend()
    idx = TileIndex.load(merged["ivfpq"], backend=b)
    p = idx.manifest["index_params"]
    assert idx.kind == "ivfpq" and (p["ivf_nlist"], p["pq_m"]) == (4, 8) and p["train_size"] == 136
    q = b.embed([idx.tile(i).image for i in range(0, idx.n_tiles, 5)], "satellite")
    hits = idx.search(q, k=5)
    found = [any(h.tile_idx == i for h in row) for i, row in zip(range(0, idx.n_tiles, 5), hits)]
    assert np.mean(found) >= 0.9


# ---------------------------------------------------------------- resume
def test_resume_after_crash_mid_chunk_has_no_duplicate_or_missing_tiles(tmp_path, single):
    d = tmp_path / "build"
    world = make_world()
    crashing = RandProjBackend(fail_after=5)  # 8-tile batches: dies inside the 2nd or 3rd non-empty chunk
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_shard([world], SPEC, crashing, d, rank=0, world_size=2, chunk_cells=CHUNK, batch_size=8)
    done = [j for j in range(16) if shards.chunk_done(d, j)]
    assert done and all(j % 2 == 0 for j in done) and len(done) < 8
    assert not list((d / "chunks").glob("*.tmp-*"))  # the chunk being embedded left nothing behind
    tiles_done = sum(int(np.load(shards.chunk_paths(d, j)[0])["n_tiles"]) for j in done)

    todo = next(j for j in range(0, 16, 2) if j not in done)
    stale = d / "chunks" / f"c{todo:07d}.npz.tmp-99999-1"  # as a rank SIGKILLed while writing leaves it
    stale.write_bytes(b"partial")
    again = RandProjBackend()
    st = build_shard([world], SPEC, again, d, rank=0, world_size=2, chunk_cells=CHUNK, batch_size=8)
    assert not stale.exists() and shards.chunk_done(d, todo)
    assert st.chunks_skipped == len(done) and st.chunks_built == 8 - len(done)
    assert sum(again.calls) == st.tiles  # committed tiles are not embedded again
    assert st.tiles + tiles_done == sum(len(c) for c in _rank_cells(single, 0))
    with pytest.raises(ConfigError, match="not built yet"):
        merge_shards(d, tmp_path / "idx")  # rank 1 has not run
    st1 = build_shard([world], SPEC, RandProjBackend(), d, rank=1, world_size=2, chunk_cells=CHUNK, batch_size=8)
    assert st1.chunks_built == 8
    idx = TileIndex.load(merge_shards(d, tmp_path / "idx"))
    assert sorted(idx.tile_ids) == sorted(single.tile_ids) and len(set(idx.tile_ids)) == idx.n_tiles


def _rank_cells(single, rank, world=2):
    """Tile ids of the reference index grouped by the chunk they belong to, for this rank's chunks."""
    by_chunk: dict[int, list[str]] = {}
    for tid in single.tile_ids:
        r, c = int(tid[1:5]), int(tid[7:11])
        j = (r // CHUNK) * 4 + c // CHUNK
        if j % world == rank:
            by_chunk.setdefault(j, []).append(tid)
    return list(by_chunk.values())


def test_sigkilled_rank_restarts_and_skips_committed_chunks(tmp_path, worker, single):
    d = tmp_path / "build"
    env = _env(FORCE_RANK=0, FORCE_WORLD=2, SLOW=1.0)
    proc = subprocess.Popen([sys.executable, str(worker), str(d)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        t_end = time.monotonic() + 120
        while time.monotonic() < t_end and not [j for j in range(0, 16, 2) if shards.chunk_done(d, j) and j > 0]:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)  # mid-way: at least one non-empty chunk committed, not all
    finally:
        proc.wait(timeout=30)
    done = [j for j in range(0, 16, 2) if shards.chunk_done(d, j)]
    assert 0 < len(done) < 8
    for rank in (0, 1):
        out = subprocess.run([sys.executable, str(worker), str(d)], env=_env(FORCE_RANK=rank, FORCE_WORLD=2),
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RANK_DONE"))
        _, r, built, skipped, _ = line.split()
        if rank == 0:
            assert int(skipped) == len(done) and int(built) == 8 - len(done)
    assert not list((d / "chunks").glob("*.tmp-*"))  # the killed rank's temp file was replaced on restart
    idx = TileIndex.load(merge_shards(d, tmp_path / "idx"))
    assert sorted(idx.tile_ids) == sorted(single.tile_ids) and len(set(idx.tile_ids)) == idx.n_tiles


def test_build_dir_refuses_other_settings_or_encoder(tmp_path):
    d = tmp_path / "build"
    build_shard([make_world()], SPEC, RandProjBackend(), d, rank=0, world_size=2, chunk_cells=CHUNK, max_chunks=1)
    with pytest.raises(ConfigError, match="other settings"):
        build_shard([make_world()], SPEC, RandProjBackend(), d, rank=0, world_size=2, chunk_cells=5)
    with pytest.raises(IndexMismatchError):
        build_shard([make_world()], SPEC, RandProjBackend(seed=3), d, rank=1, world_size=2, chunk_cells=CHUNK)
    with pytest.raises(ConfigError):
        build_shard([make_world()], SPEC, RandProjBackend(), d, rank=2, world_size=2, chunk_cells=CHUNK)
    assert shards.missing_chunks(d) == list(range(1, 16))  # max_chunks=1: only chunk 0 (all holes) committed


# ---------------------------------------------------------------- bounded memory
def test_streaming_holds_one_batch_of_images_and_one_chunk(tmp_path):
    # a mosaic of 4 GeoTIFF files whose source cache fits ~1 file: the build never holds the whole map
    rgb, _ = world_rgb(seed=5)
    folder = tmp_path / "mosaic"
    folder.mkdir()
    h = MAP_PX // 2
    for i in range(2):
        for j in range(2):
            write_geotiff(folder / f"part_{i}{j}.tif", np.ascontiguousarray(rgb[i * h:(i + 1) * h, j * h:(j + 1) * h]),
                          CRS, (MAP_GSD, 0, E0 + j * h * MAP_GSD, 0, -MAP_GSD, N0 - i * h * MAP_GSD))
    gm = open_map(folder)
    gm.sources[0].level(1)  # tiles sample the sources at pyramid level 1 (4 m tiles from 2 m pixels)
    one_source = gm.sources[0].nbytes  # bytes one cached source holds (all levels)
    gm.unload()
    batch, chunk = 4, 3
    stats = build_shard([folder], SPEC, RandProjBackend(), tmp_path / "build", chunk_cells=chunk, batch_size=batch,
                        map_cache_bytes=one_source)
    n_cells = 13 * 13
    assert stats.tiles == n_cells and stats.rendered == stats.tiles  # every tile rendered once, none re-rendered
    assert stats.peak_live_images <= batch + 1  # one batch being embedded + the tile just rendered
    assert stats.peak_chunk_tiles <= chunk * chunk < stats.tiles / 10
    assert 0 < stats.peak_map_cache_bytes <= 2 * one_source  # never all four sources at once

    ms = shards.MergeStats()
    out = merge_shards(tmp_path / "build", tmp_path / "idx", kind="ivfpq", ivf_nlist=4, pq_m=8, train_size=40, stats=ms)
    assert ms.train_vectors == 40 and ms.peak_float_vectors <= 40 + chunk * chunk  # sample + one chunk, never all
    assert TileIndex.load(out).n_tiles == n_cells


def test_two_maps_get_prefixed_ids_and_one_index(tmp_path):
    maps = [make_world(name="west"), make_world(seed=2, name="east", east=800.0)]
    st = build_shard(maps, SPEC, RandProjBackend(), tmp_path / "b", chunk_cells=7)
    idx = TileIndex.load(merge_shards(tmp_path / "b", tmp_path / "idx"))
    assert st.chunks_total == 8 and idx.n_tiles == 2 * 136
    assert {t.split(":")[0] for t in idx.tile_ids} == {"west", "east"}
    assert [m["name"] for m in idx.manifest["map_info"]["maps"]] == ["west", "east"]


# ---------------------------------------------------------------- prior-constrained search
@pytest.mark.parametrize("kind", ["flat", "ivfpq"])
def test_prior_search_scores_only_nearby_cells_and_finds_the_tile(merged, kind):
    b = RandProjBackend()
    s = CellSearcher.load(merged[kind], backend=b, cell_m=100.0)
    assert s.cells.cell_m == 500.0  # the merge's table (cells.npz) wins over the fallback size
    s = CellSearcher(s.index, cell_m=100.0)  # finer cells than the 700 m world, to see locality
    idx = s.index
    n = idx.n_tiles
    cand_counts = []
    for i in range(0, n, 11):
        t = idx.tile(i)
        q = b.embed([t.image], "uav")
        prior = (t.center_lat, t.center_lon, 120.0)
        hits = s.search(q, k=3, prior=prior)[0]
        assert hits[0].tile_idx == i and hits[0].distance_m < 1.0
        assert all(h.distance_m <= 120.0 for h in hits)
        ref = idx.search(q, k=3, prior=prior)[0]  # the TileIndex's own (full-scan) prior search
        assert [h.tile_id for h in hits] == [h.tile_id for h in ref]
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in ref], atol=1e-4)
        assert s.stats.last_cells <= 16  # the 242 m box around a 120 m circle spans at most 4 x 4 cells of 100 m
        # cells' tiles (<= 4 tile centres per 100 m cell at 50 m stride) -> exact distance filter -> scored
        assert s.stats.last_scored <= s.stats.last_candidates <= 16 * 4
        cand_counts.append(s.stats.last_candidates)
        within = idx.tiles_within(*prior)
        assert s.stats.last_scored == len(within) and np.array_equal(s.tiles_within(*prior), within)
        multi = s.search_multi(np.vstack([q, -q]), k=2, prior=prior)
        assert multi[0].tile_idx == i and multi[0].rotation == 0
    assert np.mean(cand_counts) < n / 3  # a small world; the country-size check is the next test
    # no prior: the index's global search
    t = idx.tile(7)
    assert s.search(b.embed([t.image], "uav"), k=1)[0][0].tile_idx == 7
    far = offset_latlon(t.center_lat, t.center_lon, 50_000.0, 0.0)
    assert s.search(b.embed([t.image], "uav"), k=1, prior=(*far, 100.0)) == [[]]
    assert s.stats.last_cells <= 16 and s.stats.last_candidates == 0


def test_localizer_opens_merged_indexes_with_cell_search(merged, tmp_path):
    from gleam_ros.core.localizer import Localizer, LocalizerConfig, PositionPrior

    b = RandProjBackend()
    s = shards.open_index(merged["flat"], backend=b)
    assert isinstance(s, CellSearcher)  # the merge wrote cells.npz
    plain = TileIndex.load(merged["flat"])
    plain.save(tmp_path / "plain")  # a TileIndex saved on its own has no cell table
    assert isinstance(shards.open_index(tmp_path / "plain", backend=b), TileIndex)
    loc = Localizer(b, s, LocalizerConfig(n_rotations=1))
    t = s.tile(30)
    prior = PositionPrior(t.center_lat, t.center_lon, 120.0)
    res = loc.localize(t.image, t=0.0, position_prior=prior)
    assert s.stats.queries == 1 and s.stats.last_scored == len(s.index.tiles_within(prior.lat, prior.lon, prior.radius_m))
    assert s.stats.last_scored < s.n_tiles / 3 and res.hypotheses[0].tile_id == t.tile_id


def _grid_meta(side: int) -> dict:
    """Metadata of side x side synthetic 100 m tiles at 50 m stride (no images)."""
    n = side * side
    r, c = np.divmod(np.arange(n), side)
    x0, y0 = E0 + c * 50.0, N0 - r * 50.0
    lon, lat = get_transformer(CRS, "EPSG:4326").transform(x0 + 50.0, y0 - 50.0)
    return {
        "tile_ids": np.array([f"r{a:04d}_c{b:04d}" for a, b in zip(r, c)]), "crs": np.full(n, CRS),
        "x0": x0, "y0": y0, "gsd_m": np.full(n, 1.0), "size_m": np.full(n, 100.0),
        "center_lat": np.asarray(lat), "center_lon": np.asarray(lon), "corners": np.zeros((n, 4, 2)),
        "sources": np.full(n, "[]"), "valid_fraction": np.ones(n), "offsets": np.zeros(n + 1, np.int64),
        "image_shape": np.tile([100, 100, 3], (n, 1)),
    }


def test_prior_search_cost_does_not_grow_with_the_country():
    """Synthetic indexes of 60x60 and 240x240 tiles (16x the area): the same prior scores the same tiles."""
    rng = np.random.default_rng(0)
    results = []
    for side in (60, 240):
        n = side * side
        meta = _grid_meta(side)
        lat, lon = meta["center_lat"], meta["center_lon"]
        vec = rng.standard_normal((n, 16)).astype(np.float32)
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        fi = __import__("faiss").IndexFlatIP(16)
        fi.add(vec)
        manifest = {"kind": "flat", "dim": 16, "n_tiles": n, "has_images": False, "encoder": {"fingerprint": "x"}}
        s = CellSearcher(TileIndex.from_parts(manifest, fi, meta), cell_m=100.0)
        target = 20 * side + 20  # the same ground tile in both worlds (row 20, col 20)
        hits = s.search(vec[target] + 0.05 * rng.standard_normal(16), k=1,
                        prior=(float(lat[target]), float(lon[target]), 150.0))
        assert hits[0][0].tile_idx == target
        results.append((s.stats.last_cells, s.stats.last_candidates))
    assert results[0] == results[1] and results[0][1] < 60 * 60 / 20


def test_cell_table_round_trip_and_superset(tmp_path, single):
    meta = single.meta_arrays()
    ct = CellTable.from_meta(meta, 150.0)
    ct.save(tmp_path / "c.npz")
    ct2 = CellTable.load(tmp_path / "c.npz")
    assert np.array_equal(ct.keys, ct2.keys) and np.array_equal(ct.order, ct2.order) and ct2.cell_m == 150.0
    lat, lon = single.centers_latlon[40]
    for radius in (10.0, 130.0, 400.0, 5000.0):
        cand, _ = ct2.candidates(lat, lon, radius)
        assert set(single.tiles_within(lat, lon, radius)) <= set(cand.tolist())
    with pytest.raises(ConfigError):
        CellTable.from_meta(meta, 0.5)


def test_merge_with_a_factory_string(merged, tmp_path):
    out = merge_shards(merged["build"], tmp_path / "pca", factory="PCA16,IVF4,PQ8x4", nprobe=2)
    s = CellSearcher.load(out, backend=RandProjBackend())
    p = s.manifest["index_params"]
    assert s.kind == "ivfpq" and p["factory"] == "PCA16,IVF4,PQ8x4" and p["nprobe"] == 2 and s.index.nprobe == 2
    assert not __import__("faiss").downcast_index(__import__("faiss").extract_index_ivf(s.faiss_index)).do_polysemous_training
    t = s.tile(20)
    q = RandProjBackend().embed([t.image], "uav")
    assert s.search(q, k=1, prior=(t.center_lat, t.center_lon, 60.0))[0][0].tile_idx == 20
    # refine stages, non-IVF indexes, nonsense, too few vectors for OPQ's 256-centroid training
    # ... and SIMD fast-scan PQ, whose packed codes the prior-constrained scoring cannot reconstruct
    for bad in ("PCA16,IVF4,PQ8x4,RFlat", "HNSW16", "NotAFactory", "OPQ8_32,IVF4,PQ8x4", "PCA16,IVF4,PQ8x4fs"):
        with pytest.raises(ConfigError):
            merge_shards(merged["build"], tmp_path / "bad", factory=bad)


def test_cli_shard_build_resume_and_merge(tmp_path, monkeypatch, capsys, single):
    from gleam_ros import cli
    from gleam_ros.core import encoder

    rgb, valid = world_rgb()
    tif = tmp_path / "world.tif"
    write_geotiff(tif, rgb, CRS, (MAP_GSD, 0, E0, 0, -MAP_GSD, N0), valid=valid)
    monkeypatch.setattr(encoder, "load_backend", lambda *a, **k: RandProjBackend())
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    base = ["index", "shard-build", "--map", str(tif), "--out", str(tmp_path / "b"), "--tile-size", "100", "--gsd", "4",
            "--chunk-cells", "4", "--batch-size", "8"]
    assert cli.main(base + ["--rank", "1", "--world-size", "2"]) == 0
    assert cli.main(base + ["--rank", "0", "--world-size", "2", "--max-chunks", "2"]) == 0  # stopped early
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it
    assert cli.main(base + ["--merge-to", str(tmp_path / "idx"), "--kind", "flat", "--cell-m", "200"]) == 0
    out = capsys.readouterr().out
    assert "2 already done" in out and "index: 136 tiles (flat" in out
    s = CellSearcher.load(tmp_path / "idx")
    assert s.cells.cell_m == 200.0 and sorted(s.tile_ids) == sorted(single.tile_ids)
    assert s.reference_std_m == 0.0  # not declared: the imagery is taken as exact
    assert cli.main(["index", "merge", "--shards", str(tmp_path / "b"), "--out", str(tmp_path / "idx2"),
                     "--kind", "ivfpq", "--nlist", "4", "--pq-m", "8", "--reference-std-m", "1.5"]) == 0
    idx2 = TileIndex.load(tmp_path / "idx2")
    assert idx2.kind == "ivfpq" and idx2.reference_std_m == 1.5  # what the localizers add to a fix's covariance
    assert CellSearcher.load(tmp_path / "idx2").reference_std_m == 1.5
    capsys.readouterr()
    for bad in ("-1", "nan"):
        assert cli.main(["index", "merge", "--shards", str(tmp_path / "b"), "--out", str(tmp_path / "idx3"),
                         "--reference-std-m", bad]) == 2
        assert "--reference-std-m must be a finite number >= 0" in capsys.readouterr().err
    assert not (tmp_path / "idx3").exists()
    assert cli.main(["index", "merge", "--shards", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "missing build plan" in capsys.readouterr().err


def test_large_ivfpq_default_is_opq_and_beats_plain_pq_with_prior_search():
    """From OPQ_MIN_TILES tiles the default IVF-PQ rotates with OPQ: at 50k clustered 64-d tiles it finds the exact top 1
    at least as often as PQ on the raw dimensions, and prior-filtered search (TileIndex and CellSearcher) works on it."""
    import faiss

    from gleam_ros.core.bench_index import SynthSpec, SyntheticVectors
    from gleam_ros.core.index import OPQ_MIN_TILES, ivfpq_layout, make_ivfpq, train_sample

    side = 224
    n = side * side
    assert n >= OPQ_MIN_TILES and ivfpq_layout(64, OPQ_MIN_TILES - 1).get("factory") is None
    gen = SyntheticVectors(SynthSpec(dim=64, latent_rank=32, n_clusters=64))
    vec = np.concatenate([gen.chunk(c, 25_000) for c in range(3)])[:n]
    queries = gen.perturb(vec[::n // 200][:200], seed=1)
    exact = faiss.IndexFlatIP(64)
    exact.add(vec)
    gt = exact.search(queries, 1)[1][:, 0]
    meta = _grid_meta(side)
    recall = {}
    for name, layout in (("opq", ivfpq_layout(64, n)), ("plain", ivfpq_layout(64, n, ivf_nlist=224))):
        fi = make_ivfpq(64, layout)
        fi.train(train_sample(vec, layout["train_size"]))
        fi.add(vec)
        manifest = {"kind": "ivfpq", "dim": 64, "n_tiles": n, "has_images": False, "encoder": {"fingerprint": "x"},
                    "index_params": {k: v for k, v in layout.items() if k != "train_size"}}
        idx = TileIndex.from_parts(manifest, fi, meta)
        hits = idx.search(queries, k=1)
        recall[name] = float(np.mean([h[0].tile_idx == g for h, g in zip(hits, gt)]))
        if name == "opq":
            assert layout["factory"] == "OPQ16_64,IVF1024,PQ16" and idx.nprobe == 256
            t = int(gt[0])
            prior = (float(meta["center_lat"][t]), float(meta["center_lon"][t]), 150.0)
            for searcher in (idx, CellSearcher(idx, cell_m=100.0)):
                found = searcher.search(queries[:1], k=5, prior=prior)[0]
                assert found[0].tile_idx == t and all(h.distance_m <= 150.0 for h in found)
    assert recall["opq"] >= recall["plain"], recall
