"""Country-scale tile indexes: sharded, resumable, bounded-memory builds, a streaming merge, prior-local search.

**Build** (:func:`build_shard`, one call per rank; ``torchrun`` sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``)
writes into one build directory::

    plan.json                       maps, tile spec, chunking, encoder fingerprint (the same for every rank)
    chunks/c0000123.pack            the JPEG tile images of chunk 123, concatenated
    chunks/c0000123.npz             its vectors + tile metadata; written last, so its presence commits the chunk
    shards/rank000-of-002.json      a rank's summary when it finishes (chunks built / skipped, tiles, peaks)

The work is cut into *chunks*: square blocks of ``chunk_cells`` x ``chunk_cells`` tile-grid cells of one map,
numbered map by map and block row by block row. Chunk ``j`` belongs to rank ``j % world_size``. A rank streams the
tiles of its chunks (render -> embed -> JPEG, ``batch_size`` images at a time) and commits every chunk atomically;
a restarted rank skips committed chunks (with any world size), so a crash costs at most one chunk per rank. Memory
is bounded by one chunk of JPEGs + vectors, one batch of tile images and the map's source cache
(``map_cache_bytes``), never by the size of the map. :class:`BuildStats` counts the peaks.

**Merge** (:func:`merge_shards`) streams the committed chunks into a standard :class:`~gleam_ros.core.index.TileIndex`
directory (``TileIndex.load`` opens it): flat, HNSW, IVF-PQ with the TileIndex defaults, or any IVF
``faiss.index_factory`` string such as ``"OPQ64_256,IVF65536,PQ64"``. IVF is trained on a bounded random sample
and the vectors are added chunk by chunk, so only the compressed codes accumulate. It also writes ``cells.npz``,
a spatial hash of the tile centres (:class:`CellTable`).

**Search** (:class:`CellSearcher`): wraps a TileIndex; a prior-constrained query (last fix + motion bound) looks up
the cells around the prior and scores only their tiles, so its cost grows with the prior's area, not with the
country. Without a prior it is the index's own (global, approximate for HNSW / IVF) search.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import json
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from . import geo
from .errors import ConfigError, IndexFormatError, IndexMismatchError, InputError
from .index import (
    _NPZ_KEYS,
    FORMAT_VERSION,
    INDEX_KINDS,
    MANIFEST_NAME,
    PACK_NAME,
    TILES_NAME,
    VECTORS_NAME,
    SearchHit,
    TileIndex,
    check_reference_std,
    _backend_info,
    _fsync_write,
    _json_default,
    _jsonable,
    ivfpq_layout,
    make_ivfpq,
    _sha256_file,
    _uniform_or_list,
)
from .maps import GeoMap, open_map
from .tiles import Tile, TileSpec, _axis_offsets, render_tile, tile_id_for

LOG = logging.getLogger(__name__)

PLAN_NAME = "plan.json"
CHUNKS_DIR = "chunks"
SHARDS_DIR = "shards"
CELLS_NAME = "cells.npz"
PLAN_VERSION = 1
VECTOR_DTYPES = ("float32", "float16")
DEFAULT_CELL_M = 500.0
_CHUNK_KEYS = tuple(k for k in _NPZ_KEYS if k != "offsets")
_KEY_BITS = 26  # cell coordinates are stored with a 2**25 offset in 26 bits each; the CRS id gets 10 bits
_KEY_OFF = 1 << (_KEY_BITS - 1)
_MAX_CRS = 1 << 10
_SCORE_BLOCK = 65536  # candidates scored per block (bounds the reconstructed vectors held at once)


# ============================================================================ plan


def rank_from_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the ``torchrun`` environment (``(0, 1, 0)`` without it)."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise ConfigError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers: {exc}") from None
    return rank, world, local


@dataclass
class _MapGrid:
    """One map's tile grid (as :func:`~gleam_ros.core.tiles.tile_grid`, computed lazily) and its chunk range."""

    geomap: GeoMap
    name: str
    path: str
    prefix: str
    xmin: float
    ymax: float
    cols: np.ndarray
    rows: np.ndarray
    block: int
    first_chunk: int = 0

    @property
    def n_brow(self) -> int:
        return -(-len(self.rows) // self.block)

    @property
    def n_bcol(self) -> int:
        return -(-len(self.cols) // self.block)

    @property
    def n_chunks(self) -> int:
        return self.n_brow * self.n_bcol

    def cells(self, local_chunk: int) -> Iterator[tuple[int, int, float, float]]:
        """``(row, col, x0, y0)`` of the grid cells of one chunk, row-major (as ``tile_grid`` orders them)."""
        br, bc = divmod(local_chunk, self.n_bcol)
        b = self.block
        for r in range(br * b, min((br + 1) * b, len(self.rows))):
            for c in range(bc * b, min((bc + 1) * b, len(self.cols))):
                yield r, c, float(self.xmin + self.cols[c]), float(self.ymax - self.rows[r])

    def describe(self) -> dict:
        return {"name": self.name, "path": self.path, "prefix": self.prefix, "rows": len(self.rows),
                "cols": len(self.cols), "first_chunk": self.first_chunk, "n_chunks": self.n_chunks}


def _open_maps(maps: Sequence[Any], spec: TileSpec, chunk_cells: int, map_cache_bytes: int | None) -> list[_MapGrid]:
    if not maps:
        raise ConfigError("no maps to index")
    grids: list[_MapGrid] = []
    names: set[str] = set()
    for m in maps:
        if isinstance(m, GeoMap):
            gm, path = m, f"<{m.name}>"
        else:
            gm, path = open_map(m), str(Path(m).resolve())
        if map_cache_bytes is not None:
            gm.cache_bytes = int(map_cache_bytes)
        name, k = gm.name, 2
        while name in names:
            name, k = f"{gm.name}#{k}", k + 1
        names.add(name)
        xmin, ymin, xmax, ymax = gm.bounds()
        cols = _axis_offsets(xmax - xmin, spec.size_m, spec.stride_m)
        rows = _axis_offsets(ymax - ymin, spec.size_m, spec.stride_m)
        grids.append(_MapGrid(gm, name, path, "", float(xmin), float(ymax), cols, rows, int(chunk_cells)))
    first = 0
    for g in grids:
        g.prefix = f"{g.name}:" if len(grids) > 1 else ""  # one map: the ids of `gleam index build`
        g.first_chunk = first
        first += g.n_chunks
    return grids


def _spec_dict(spec: TileSpec) -> dict:
    return {"size_m": float(spec.size_m), "overlap": float(spec.overlap), "gsd_m": float(spec.gsd_m),
            "min_valid": float(spec.min_valid)}


def _make_plan(grids: list[_MapGrid], spec: TileSpec, chunk_cells: int, backend: Any, vector_dtype: str,
               store_images: bool, jpeg_quality: int) -> dict:
    fingerprint, backend_name, dim, card, pre = _backend_info(backend)
    return {
        "plan_version": PLAN_VERSION,
        "maps": [g.describe() for g in grids],
        "tile_spec": _spec_dict(spec),
        "chunk_cells": int(chunk_cells),
        "n_chunks": sum(g.n_chunks for g in grids),
        "grid_cells": sum(len(g.rows) * len(g.cols) for g in grids),
        "dim": dim,
        "encoder": {"fingerprint": fingerprint, "backend": backend_name, "card": card},
        "preprocessing": pre,
        "vector_dtype": vector_dtype,
        "store_images": bool(store_images),
        "jpeg_quality": int(jpeg_quality) if store_images else None,
    }


def _atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        _fsync_write(tmp, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_plan(build_dir: str | os.PathLike) -> dict:
    """The ``plan.json`` of a shard build directory (IndexFormatError when missing or unreadable)."""
    p = Path(build_dir) / PLAN_NAME
    if not p.is_file():
        raise IndexFormatError(f"{p}: missing build plan (not a `gleam index shard-build` directory?)")
    try:
        plan = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFormatError(f"{p}: unreadable build plan: {exc}") from None
    if not isinstance(plan, dict) or plan.get("plan_version") != PLAN_VERSION:
        raise IndexFormatError(f"{p}: unsupported build plan (plan_version {plan.get('plan_version')!r})")
    return plan


def _ensure_plan(build_dir: Path, plan: dict) -> None:
    """Write the plan, or check that an existing one (an earlier run, another rank) describes the same build."""
    p = build_dir / PLAN_NAME
    if not p.exists():
        _atomic_write_json(p, plan)
        return
    old = read_plan(build_dir)
    fp_old, fp_new = old.get("encoder", {}).get("fingerprint"), plan["encoder"]["fingerprint"]
    if fp_old != fp_new:
        raise IndexMismatchError(
            f"{p}: the build was started with encoder fingerprint {fp_old}, this rank has {fp_new}; "
            "use the same encoder or a new output directory"
        )
    new = _jsonable(plan, "build plan")
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        raise ConfigError(f"{p}: the build was started with other settings (differs in {diff}); "
                          "resume with the same maps and options or use a new output directory")


def chunk_paths(build_dir: str | os.PathLike, chunk: int) -> tuple[Path, Path]:
    """``(npz, pack)`` paths of chunk ``chunk`` in a build directory."""
    d = Path(build_dir) / CHUNKS_DIR
    return d / f"c{chunk:07d}.npz", d / f"c{chunk:07d}.pack"


def chunk_done(build_dir: str | os.PathLike, chunk: int) -> bool:
    """Whether chunk ``chunk`` is committed: its npz is readable and its pack has the recorded size."""
    npz, pack = chunk_paths(build_dir, chunk)
    if not npz.is_file():
        return False
    try:
        with np.load(npz, allow_pickle=False) as z:
            size = int(z["pack_size"])
            ok = int(z["chunk"]) == chunk
    except Exception:  # any unreadable or truncated file: the chunk is redone
        return False
    if not ok:
        return False
    return size == 0 or (pack.is_file() and pack.stat().st_size == size)


def missing_chunks(build_dir: str | os.PathLike) -> list[int]:
    """Chunk numbers of the plan that are not committed yet (all ranks)."""
    plan = read_plan(build_dir)
    return [j for j in range(int(plan["n_chunks"])) if not chunk_done(build_dir, j)]


def wait_for_chunks(build_dir: str | os.PathLike, timeout_s: float, poll_s: float = 5.0) -> None:
    """Block until every chunk of the plan is committed (ConfigError after ``timeout_s`` seconds)."""
    t_end = time.monotonic() + float(timeout_s)
    done: set[int] = set()
    while True:
        plan = read_plan(build_dir)
        todo = [j for j in range(int(plan["n_chunks"])) if j not in done]
        for j in todo:
            if chunk_done(build_dir, j):
                done.add(j)
        left = int(plan["n_chunks"]) - len(done)
        if left == 0:
            return
        if time.monotonic() > t_end:
            raise ConfigError(f"{build_dir}: {left} chunks still missing after {timeout_s:.0f} s (a rank failed?)")
        time.sleep(poll_s)


# ============================================================================ build


@dataclass
class BuildStats:
    """What one :func:`build_shard` call did, and the memory instrumentation of its streaming.

    ``peak_live_images``: tile images (decoded RGB arrays) alive at once - the streaming bound is
    ``batch_size + 1`` (one batch being embedded plus the tile just rendered). ``peak_chunk_tiles``: tiles held
    at once as JPEG + vector (at most one chunk). ``peak_map_cache_bytes``: map pixels cached (all sources, all
    pyramid levels) after each chunk.
    """

    rank: int = 0
    world_size: int = 1
    chunks_total: int = 0
    chunks_mine: int = 0
    chunks_built: int = 0
    chunks_skipped: int = 0
    cells: int = 0
    tiles: int = 0
    holes: int = 0
    rendered: int = 0
    peak_live_images: int = 0
    peak_chunk_tiles: int = 0
    peak_map_cache_bytes: int = 0
    stopped_early: bool = False
    wall_s: float = 0.0
    _live: int = field(default=0, repr=False)
    _lock: Any = field(default_factory=threading.Lock, repr=False)

    def _image_born(self, image: np.ndarray) -> None:
        with self._lock:
            self._live += 1
            self.rendered += 1
            self.peak_live_images = max(self.peak_live_images, self._live)
        weakref.finalize(image, self._image_died)

    def _image_died(self) -> None:
        with self._lock:
            self._live -= 1

    def to_dict(self) -> dict:
        """JSON-ready dict of the public counters."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


def _chunk_of(grids: list[_MapGrid], firsts: list[int], chunk: int) -> tuple[_MapGrid, int]:
    k = bisect.bisect_right(firsts, chunk) - 1
    if k < 0 or chunk >= grids[k].first_chunk + grids[k].n_chunks:
        raise ConfigError(f"chunk {chunk} out of range")
    return grids[k], chunk - grids[k].first_chunk


def _chunk_tiles(g: _MapGrid, local: int, spec: TileSpec, stats: BuildStats, counts: dict) -> Iterator[Tile]:
    for r, c, x0, y0 in g.cells(local):
        counts["cells"] += 1
        tile = render_tile(g.geomap, spec, x0, y0, g.prefix + tile_id_for(r, c))
        if tile is None:
            counts["holes"] += 1
            continue
        stats._image_born(tile.image)
        yield tile


def _write_chunk(build_dir: Path, chunk: int, part: TileIndex | None, vector_dtype: str, counts: dict) -> int:
    """Commit one chunk (pack first, npz last, both atomically); returns its tile count."""
    npz, pack = chunk_paths(build_dir, chunk)
    tag = f".tmp-{os.getpid()}-{threading.get_ident()}"
    tmp_pack, tmp_npz = pack.with_name(pack.name + tag), npz.with_name(npz.name + tag)
    n = 0 if part is None else part.n_tiles
    try:
        arrays: dict[str, np.ndarray] = {}
        size = 0
        if part is not None:
            meta = part.meta_arrays()
            arrays = {k: meta[k] for k in _NPZ_KEYS}
            arrays["vectors"] = part.faiss_index.reconstruct_n(0, n).astype(vector_dtype)
            if part.has_images:
                with open(tmp_pack, "wb") as fh:
                    fh.writelines(part.jpeg_bytes(i) for i in range(n))
                    fh.flush()
                    os.fsync(fh.fileno())
                size = tmp_pack.stat().st_size
        arrays.update(chunk=np.int64(chunk), n_tiles=np.int64(n), pack_size=np.int64(size),
                      cells=np.int64(counts["cells"]), holes=np.int64(counts["holes"]))
        with open(tmp_npz, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        if size:
            os.replace(tmp_pack, pack)
        else:
            pack.unlink(missing_ok=True)
        os.replace(tmp_npz, npz)
    finally:
        tmp_pack.unlink(missing_ok=True)
        tmp_npz.unlink(missing_ok=True)
    return n


def _map_cache_bytes(grids: list[_MapGrid]) -> int:
    return sum(s.nbytes for g in grids for s in g.geomap.sources)


def build_shard(
    maps: Sequence[Any],
    spec: TileSpec,
    backend: Any,
    out_dir: str | os.PathLike,
    rank: int = 0,
    world_size: int = 1,
    chunk_cells: int = 16,
    batch_size: int = 32,
    store_images: bool = True,
    jpeg_quality: int = 95,
    vector_dtype: str = "float32",
    map_cache_bytes: int | None = 512 * 1024**2,
    max_chunks: int | None = None,
    progress: bool = False,
) -> BuildStats:
    """Embed this rank's chunks of the tiles of ``maps`` into the build directory ``out_dir``; resumable.

    ``maps``: map paths (anything :func:`~gleam_ros.core.maps.open_map` reads) or :class:`GeoMap` objects; with
    several maps tile ids are prefixed ``"<map name>:"``. ``chunk_cells``: side of a chunk in grid cells (a chunk
    is the unit of work, checkpoint and memory). Chunks ``j`` with ``j % world_size == rank`` are this rank's;
    committed chunks are skipped. ``vector_dtype`` ``"float16"`` halves the checkpoint size (the merged index is
    then built from rounded vectors). ``map_cache_bytes`` caps each map's source cache (None: the map's own).
    ``max_chunks`` stops after building that many chunks (a partial run, as if the rank were stopped).

    Raises ConfigError for bad settings or a build directory started with other settings, IndexMismatchError when
    it was started with another encoder.
    """
    t0 = time.perf_counter()
    rank, world_size, chunk_cells = int(rank), int(world_size), int(chunk_cells)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank must be in [0, world_size), got rank={rank} world_size={world_size}")
    if chunk_cells < 1:
        raise ConfigError(f"chunk_cells must be >= 1, got {chunk_cells}")
    if vector_dtype not in VECTOR_DTYPES:
        raise ConfigError(f"vector_dtype must be one of {VECTOR_DTYPES}, got {vector_dtype!r}")
    if max_chunks is not None and int(max_chunks) < 0:
        raise ConfigError(f"max_chunks must be >= 0, got {max_chunks}")
    out = Path(out_dir)
    (out / CHUNKS_DIR).mkdir(parents=True, exist_ok=True)
    grids = _open_maps(maps, spec, chunk_cells, map_cache_bytes)
    plan = _make_plan(grids, spec, chunk_cells, backend, vector_dtype, store_images, jpeg_quality)
    _ensure_plan(out, plan)
    n_chunks = int(plan["n_chunks"])
    mine = range(rank, n_chunks, world_size)
    firsts = [g.first_chunk for g in grids]
    stats = BuildStats(rank=rank, world_size=world_size, chunks_total=n_chunks, chunks_mine=len(mine))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(mine), unit="chunk", desc=f"rank {rank}/{world_size}")
    current: _MapGrid | None = None
    try:
        for j in mine:
            if chunk_done(out, j):
                stats.chunks_skipped += 1
                if bar is not None:
                    bar.update(1)
                continue
            if max_chunks is not None and stats.chunks_built >= int(max_chunks):
                stats.stopped_early = True
                break
            for stale in (out / CHUNKS_DIR).glob(f"c{j:07d}.*.tmp-*"):  # left by a killed run of this rank
                stale.unlink(missing_ok=True)
            g, local = _chunk_of(grids, firsts, j)
            if current is not None and current is not g:
                current.geomap.unload()  # done with that map's area: free its sources
            current = g
            counts = {"cells": 0, "holes": 0}
            tiles = _peek(_chunk_tiles(g, local, spec, stats, counts))
            part = None
            if tiles is not None:  # TileIndex.build refuses an empty chunk (all holes)
                part = TileIndex.build(
                    tiles, backend, kind="flat", batch_size=batch_size, progress=False,
                    store_images=store_images, jpeg_quality=jpeg_quality,
                )
            del tiles
            n = _write_chunk(out, j, part, vector_dtype, counts)
            stats.peak_chunk_tiles = max(stats.peak_chunk_tiles, n)
            del part
            stats.chunks_built += 1
            stats.tiles += n
            stats.cells += counts["cells"]
            stats.holes += counts["holes"]
            stats.peak_map_cache_bytes = max(stats.peak_map_cache_bytes, _map_cache_bytes(grids))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        for g in grids:
            g.geomap.unload()
    stats.wall_s = time.perf_counter() - t0
    (out / SHARDS_DIR).mkdir(exist_ok=True)
    summary = stats.to_dict()
    summary["finished"] = not stats.stopped_early
    summary["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    _atomic_write_json(out / SHARDS_DIR / f"rank{rank:03d}-of-{world_size:03d}.json", summary)
    LOG.info("rank %d/%d: %d chunks built, %d skipped, %d tiles", rank, world_size, stats.chunks_built,
             stats.chunks_skipped, stats.tiles)
    return stats


def _peek(it: Iterator[Tile]) -> Iterator[Tile] | None:
    """None for an empty iterator, else an iterator over the same items (the first one is not kept alive)."""
    try:
        first = next(it)
    except StopIteration:
        return None
    return _prepend(first, it)


def _prepend(first: Tile, rest: Iterator[Tile]) -> Iterator[Tile]:
    yield first
    del first
    yield from rest


# ============================================================================ spatial cells


class CellTable:
    """Spatial hash of tile centres: square cells of ``cell_m`` metres in each tile's own (projected) CRS.

    ``keys`` are the sorted non-empty cells (CRS id, cell row, cell column packed in an int64), tiles of cell ``i``
    are ``order[starts[i]:starts[i + 1]]``. :meth:`candidates` returns the tiles of the cells that a circle around
    a point can reach, looking up only those cells: ``O(cells in the circle x log(cells))``.
    """

    def __init__(self, cell_m: float, crs: Sequence[str], keys: np.ndarray, starts: np.ndarray, order: np.ndarray,
                 n_tiles: int) -> None:
        self.cell_m = float(cell_m)
        self.crs = [str(c) for c in crs]
        self.keys = np.asarray(keys, dtype=np.int64)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.order = np.asarray(order)
        self.n_tiles = int(n_tiles)
        if len(self.starts) != len(self.keys) + 1 or len(self.order) != self.n_tiles:
            raise IndexFormatError("cell table arrays are inconsistent")

    @staticmethod
    def _pack(crs_id: np.ndarray, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
        return (crs_id.astype(np.int64) << (2 * _KEY_BITS)) | ((iy + _KEY_OFF) << _KEY_BITS) | (ix + _KEY_OFF)

    @classmethod
    def from_meta(cls, meta: dict[str, np.ndarray], cell_m: float = DEFAULT_CELL_M) -> CellTable:
        """Cell table of the tiles in ``meta`` (arrays ``crs``, ``x0``, ``y0``, ``size_m``, as in ``tiles.npz``)."""
        if not (math.isfinite(cell_m) and cell_m >= 1.0):
            raise ConfigError(f"cell_m must be >= 1 metre, got {cell_m}")
        crs_names, crs_id = np.unique(np.asarray(meta["crs"]), return_inverse=True)
        if len(crs_names) > _MAX_CRS:
            raise ConfigError(f"{len(crs_names)} tile CRSs; at most {_MAX_CRS} are supported")
        size = np.asarray(meta["size_m"], dtype=np.float64)
        cx = np.asarray(meta["x0"], dtype=np.float64) + size / 2.0
        cy = np.asarray(meta["y0"], dtype=np.float64) - size / 2.0
        ix = np.floor(cx / cell_m).astype(np.int64)
        iy = np.floor(cy / cell_m).astype(np.int64)
        if len(ix) and max(np.abs(ix).max(), np.abs(iy).max()) >= _KEY_OFF:
            raise ConfigError(f"cell_m={cell_m} is too small for the tile coordinates (more than 2**25 cells per axis)")
        key = cls._pack(crs_id.reshape(-1), iy, ix)
        n = len(key)
        order = np.argsort(key, kind="stable").astype(np.int32 if n < 2**31 else np.int64)
        sk = key[order]
        first = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]]) if n else np.zeros(0, np.int64)
        return cls(cell_m, crs_names.tolist(), sk[first], np.r_[first, n].astype(np.int64), order, n)

    def save(self, path: str | os.PathLike) -> None:
        """Write the table as an npz file."""
        with open(path, "wb") as fh:
            np.savez(fh, cell_m=np.float64(self.cell_m), crs=np.array(self.crs, dtype=str), keys=self.keys,
                     starts=self.starts, order=self.order, n_tiles=np.int64(self.n_tiles))
            fh.flush()
            os.fsync(fh.fileno())

    @classmethod
    def load(cls, path: str | os.PathLike) -> CellTable:
        """Read a table written by :meth:`save` (IndexFormatError when unreadable)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(float(z["cell_m"]), [str(c) for c in z["crs"]], z["keys"], z["starts"], z["order"],
                           int(z["n_tiles"]))
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise IndexFormatError(f"{path}: unreadable cell table: {exc}") from None

    @property
    def n_cells(self) -> int:
        """Number of non-empty cells."""
        return len(self.keys)

    def candidates(self, lat: float, lon: float, radius_m: float) -> tuple[np.ndarray, int]:
        """``(tile indices, cells looked up)``: every tile whose centre may lie within ``radius_m`` of (lat, lon).

        A superset (whole cells, with a 1 % + 1 m margin for the projection's scale error); callers filter by the
        exact distance. ``radius_m`` must be finite.
        """
        out: list[np.ndarray] = []
        looked = 0
        rr = float(radius_m) * 1.01 + 1.0
        c = self.cell_m
        for cid, crs in enumerate(self.crs):
            x, y = geo.transform(lon, lat, geo.WGS84, crs)
            x, y = float(x), float(y)
            if not (math.isfinite(x) and math.isfinite(y)):
                continue
            ix0, ix1 = math.floor((x - rr) / c), math.floor((x + rr) / c)
            iy0, iy1 = math.floor((y - rr) / c), math.floor((y + rr) / c)
            ncell = (ix1 - ix0 + 1) * (iy1 - iy0 + 1)
            lo, hi = np.searchsorted(self.keys, [cid << (2 * _KEY_BITS), (cid + 1) << (2 * _KEY_BITS)])
            if ncell >= hi - lo:  # the circle covers more cells than this CRS has: scan its cells instead
                keys = self.keys[lo:hi]
                iy = ((keys >> _KEY_BITS) & ((1 << _KEY_BITS) - 1)) - _KEY_OFF
                ix = (keys & ((1 << _KEY_BITS) - 1)) - _KEY_OFF
                pos = lo + np.flatnonzero((ix >= ix0) & (ix <= ix1) & (iy >= iy0) & (iy <= iy1))
                looked += int(hi - lo)
            else:
                ys, xs = np.meshgrid(np.arange(iy0, iy1 + 1), np.arange(ix0, ix1 + 1), indexing="ij")
                want = self._pack(np.full(xs.size, cid), ys.ravel(), xs.ravel())
                pos = np.searchsorted(self.keys, want)
                pos = pos[(pos < len(self.keys)) & (self.keys[np.minimum(pos, len(self.keys) - 1)] == want)]
                looked += int(ncell)
            out.extend(self.order[self.starts[p]:self.starts[p + 1]] for p in pos)
        if not out:
            return np.zeros(0, dtype=np.int64), looked
        return np.sort(np.concatenate(out).astype(np.int64)), looked


# ============================================================================ merge


@dataclass
class MergeStats:
    """What :func:`merge_shards` held: ``peak_float_vectors`` float vectors at once (training sample + one chunk)."""

    chunks: int = 0
    tiles: int = 0
    train_vectors: int = 0
    peak_float_vectors: int = 0
    wall_s: float = 0.0


def _make_faiss_index(kind: str, factory: str | None, dim: int, n: int, hnsw_m: int, ivf_nlist: int | None,
                      pq_m: int | None) -> tuple[Any, str, dict]:
    """(untrained faiss index, TileIndex kind, index_params) - the same defaults as ``TileIndex.build``."""
    params: dict[str, Any] = {"requested_kind": kind}
    if factory:
        if "refine" in factory.lower() or "rflat" in factory.lower():
            raise ConfigError(f"factory {factory!r}: refine stages do not take the IVF search parameters TileIndex uses")
        try:
            index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ConfigError(f"faiss cannot build index factory {factory!r}: {str(exc).strip().splitlines()[-1]}") from None
        try:
            ivf = faiss.extract_index_ivf(index)
        except RuntimeError:
            raise ConfigError(f"factory {factory!r} is not an IVF index (use kind flat/hnsw for those)") from None
        ivf = faiss.downcast_index(ivf)
        if "FastScan" in type(ivf).__name__:  # faiss segfaults on reconstruct of packed 4-bit codes
            raise ConfigError(f"factory {factory!r}: fast-scan codes ('x4fs') cannot be reconstructed, and the "
                              "prior-constrained search scores candidates from reconstructed vectors; use 8-bit PQ")
        if hasattr(ivf, "do_polysemous_training"):
            ivf.do_polysemous_training = False  # index_factory turns it on for 8-bit PQ: slow and unused
        params.update(factory=factory, ivf_nlist=int(ivf.nlist))
        return index, "ivfpq", params
    if kind not in INDEX_KINDS:
        raise ConfigError(f"index kind must be one of {INDEX_KINDS}, got {kind!r}")
    actual = kind
    if kind == "ivfpq":
        layout = ivfpq_layout(dim, n, ivf_nlist, pq_m)
        if layout is None:
            LOG.warning("only %d tiles: too few to train IVF-PQ; building a flat index instead", n)
            actual = "flat"
        else:
            params.update({k: v for k, v in layout.items() if k != "train_size"})
    if actual == "flat":
        return faiss.IndexFlatIP(dim), "flat", params
    if actual == "hnsw":
        if int(hnsw_m) < 2:
            raise ConfigError(f"hnsw_m must be >= 2, got {hnsw_m}")
        index = faiss.IndexHNSWFlat(dim, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = max(40, 2 * int(hnsw_m))
        params["hnsw_m"] = int(hnsw_m)
        return index, "hnsw", params
    return make_ivfpq(dim, layout), "ivfpq", params


def _chunk_vectors(build_dir: Path, j: int) -> np.ndarray:
    npz, _ = chunk_paths(build_dir, j)
    with np.load(npz, allow_pickle=False) as z:
        if int(z["n_tiles"]) == 0:
            return np.zeros((0, 0), np.float32)
        v = np.ascontiguousarray(z["vectors"], dtype=np.float32)
    faiss.normalize_L2(v)  # float16 checkpoints: re-normalise after rounding (no-op for float32)
    return v


def merge_shards(
    build_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    kind: str = "flat",
    factory: str | None = None,
    hnsw_m: int = 32,
    ivf_nlist: int | None = None,
    pq_m: int | None = None,
    train_size: int | None = None,
    nprobe: int | None = None,
    cell_m: float = DEFAULT_CELL_M,
    seed: int = 0,
    progress: bool = False,
    stats: MergeStats | None = None,
    reference_std_m: float = 0.0,
) -> Path:
    """Merge the committed chunks of a shard build into a TileIndex directory ``out_dir`` (+ ``cells.npz``).

    ``kind`` flat / hnsw / ivfpq (IVF-PQ with the defaults of ``TileIndex.build``: nlist ~ sqrt(n), ``pq_m`` a
    divisor of the dimension <= 64), or ``factory``: an IVF ``faiss.index_factory`` string (e.g.
    ``"OPQ64_256,IVF65536,PQ64"``; stored as kind ivfpq). IVF indexes are trained on ``train_size`` vectors drawn
    at random from all chunks (default ``min(n, max(100000, 40 * nlist))``); vectors are then added chunk by chunk.
    ``nprobe`` is recorded in the manifest (``index_params.nprobe``) for :class:`CellSearcher` to apply. Tiles are
    in chunk order. ``cell_m`` is the cell size of the spatial table. ``reference_std_m``: the imagery's
    registration accuracy (1-sigma per axis, metres), stored in ``map_info`` as ``gleam index build
    --reference-std-m`` does. Raises ConfigError when chunks are missing or a setting is invalid.
    """
    reference_std_m = check_reference_std(reference_std_m)
    t0 = time.perf_counter()
    st = stats if stats is not None else MergeStats()
    bdir, out = Path(build_dir), Path(out_dir)
    plan = read_plan(bdir)
    n_chunks = int(plan["n_chunks"])
    missing = [j for j in range(n_chunks) if not chunk_done(bdir, j)]
    if missing:
        raise ConfigError(
            f"{bdir}: {len(missing)} of {n_chunks} chunks are not built yet (first: {missing[:5]}); run the missing "
            f"ranks of `gleam index shard-build` (chunk j belongs to rank j % world_size)"
        )
    if not (math.isfinite(cell_m) and cell_m >= 1.0):
        raise ConfigError(f"cell_m must be >= 1 metre, got {cell_m}")
    out.mkdir(parents=True, exist_ok=True)
    dim = int(plan["dim"])
    has_images = bool(plan["store_images"])
    tag = f".tmp-{os.getpid()}-{threading.get_ident()}"
    tmp: dict[str, Path] = {name: out / (name + tag) for name in (VECTORS_NAME, TILES_NAME, CELLS_NAME, MANIFEST_NAME)}
    if has_images:
        tmp[PACK_NAME] = out / (PACK_NAME + tag)
    bar = None
    try:
        # pass 1: metadata + image pack, streamed chunk by chunk
        lists: dict[str, list[np.ndarray]] = {k: [] for k in _CHUNK_KEYS}
        offsets = [np.zeros(1, np.int64)]
        counts = np.zeros(n_chunks, np.int64)
        base = 0
        pack_fh = open(tmp[PACK_NAME], "wb") if has_images else None
        try:
            for j in range(n_chunks):
                npz, pack = chunk_paths(bdir, j)
                with np.load(npz, allow_pickle=False) as z:
                    n = int(z["n_tiles"])
                    counts[j] = n
                    if n == 0:
                        continue
                    for k in _CHUNK_KEYS:
                        lists[k].append(np.asarray(z[k]))
                    offs = np.asarray(z["offsets"], dtype=np.int64)
                offsets.append(offs[1:] + base)
                base += int(offs[-1])
                if pack_fh is not None:
                    with open(pack, "rb") as src:
                        while block := src.read(1 << 22):
                            pack_fh.write(block)
            if pack_fh is not None:
                pack_fh.flush()
                os.fsync(pack_fh.fileno())
        finally:
            if pack_fh is not None:
                pack_fh.close()
        n_total = int(counts.sum())
        if n_total == 0:
            raise ConfigError(f"{bdir}: the build holds no tiles (every grid cell was a hole)")
        meta = {k: np.concatenate(v) for k, v in lists.items()}
        lists.clear()
        meta["offsets"] = np.concatenate(offsets)
        ids, dup_counts = np.unique(meta["tile_ids"], return_counts=True)
        if (dup_counts > 1).any():
            raise IndexFormatError(f"{bdir}: duplicate tile ids across chunks, e.g. {ids[dup_counts > 1][:3].tolist()}")

        # pass 2: vectors (IVF: train on a bounded random sample first)
        index, actual, params = _make_faiss_index(kind, factory, dim, n_total, hnsw_m, ivf_nlist, pq_m)
        if not index.is_trained:
            nlist = int(params.get("ivf_nlist", 1))
            ts = int(train_size) if train_size is not None else min(n_total, max(100_000, 40 * nlist))
            ts = max(1, min(ts, n_total))
            pick = np.sort(np.random.default_rng(seed).choice(n_total, size=ts, replace=False))
            sample = np.empty((ts, dim), np.float32)
            got, start = 0, 0
            for j in range(n_chunks):
                lo, hi = np.searchsorted(pick, [start, start + counts[j]])
                if hi > lo:
                    v = _chunk_vectors(bdir, j)
                    sample[got:got + hi - lo] = v[pick[lo:hi] - start]
                    got += int(hi - lo)
                    st.peak_float_vectors = max(st.peak_float_vectors, ts + len(v))
                    del v
                start += int(counts[j])
            try:
                index.train(sample)
            except RuntimeError as exc:  # e.g. fewer training vectors than a quantizer's centroids
                msg = str(exc).strip().splitlines()[-1]
                raise ConfigError(f"cannot train the {factory or kind} index on {ts} vectors: {msg}") from None
            st.train_vectors = ts
            params["train_size"] = ts
            del sample
        if nprobe is not None:
            params["nprobe"] = int(nprobe)
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=n_chunks, unit="chunk", desc="merging")
        for j in range(n_chunks):
            if counts[j]:
                v = _chunk_vectors(bdir, j)
                st.peak_float_vectors = max(st.peak_float_vectors, len(v))
                index.add(v)
                del v
            if bar is not None:
                bar.update(1)
        faiss.write_index(index, str(tmp[VECTORS_NAME]))
        with open(tmp[TILES_NAME], "wb") as fh:
            np.savez(fh, **{k: meta[k] for k in _NPZ_KEYS})
            fh.flush()
            os.fsync(fh.fileno())
        cells = CellTable.from_meta(meta, cell_m)
        cells.save(tmp[CELLS_NAME])

        spec = plan["tile_spec"]
        maps = plan["maps"]
        map_info = {"tile_size_m": spec["size_m"], "overlap": spec["overlap"], "gsd_m": spec["gsd_m"],
                    "min_valid": spec["min_valid"], "reference_std_m": reference_std_m}
        if len(maps) == 1:
            map_info.update(name=maps[0]["name"], path=maps[0]["path"])
        else:
            map_info["maps"] = [{"name": m["name"], "path": m["path"]} for m in maps]
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": actual,
            "dim": dim,
            "n_tiles": n_total,
            "metric": "inner_product",
            "index_params": params,
            "encoder": plan["encoder"],
            "preprocessing": plan["preprocessing"],
            "tile_spec": {
                "size_m": _uniform_or_list(meta["size_m"]),
                "gsd_m": _uniform_or_list(meta["gsd_m"]),
                "crs": _uniform_or_list(meta["crs"]),
                "image_px": _uniform_or_list(meta["image_shape"][:, 0]),
            },
            "has_images": has_images,
            "jpeg_quality": plan["jpeg_quality"],
            "map_info": map_info,
            "sharded_build": {"build_dir": str(bdir.resolve()), "n_chunks": n_chunks, "chunk_cells": plan["chunk_cells"],
                              "vector_dtype": plan["vector_dtype"], "grid_cells": plan["grid_cells"]},
            "spatial_cells": {"file": CELLS_NAME, "cell_m": float(cell_m), "n_cells": cells.n_cells},
        }
        manifest["files"] = {name: {"size": p.stat().st_size, "sha256": _sha256_file(p)}
                             for name, p in tmp.items() if name != MANIFEST_NAME}
        manifest["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        _fsync_write(tmp[MANIFEST_NAME], (json.dumps(manifest, indent=2, default=_json_default) + "\n").encode())
        for name in (VECTORS_NAME, TILES_NAME, PACK_NAME, CELLS_NAME, MANIFEST_NAME):
            if name in tmp:
                os.replace(tmp.pop(name), out / name)
        if not has_images:
            (out / PACK_NAME).unlink(missing_ok=True)
    finally:
        if bar is not None:
            bar.close()
        for p in tmp.values():
            p.unlink(missing_ok=True)
    st.chunks, st.tiles, st.wall_s = n_chunks, n_total, time.perf_counter() - t0
    LOG.info("merged %d chunks (%d tiles) into a %s index at %s", n_chunks, n_total, actual, out)
    return out


# ============================================================================ prior-local search


def open_index(index_dir: str | os.PathLike, backend: Any = None, expected_fingerprint: str | None = None,
               verify_checksums: bool = True) -> TileIndex | CellSearcher:
    """The index for a localizer: a :class:`CellSearcher` when the directory has a cell table (``cells.npz``,
    written by :func:`merge_shards`: a large index whose prior-constrained search must stay local), else the
    :class:`TileIndex` itself (whose prior search filters all tile centres, fine up to ~10^5 tiles)."""
    if (Path(index_dir) / CELLS_NAME).is_file():
        return CellSearcher.load(index_dir, backend=backend, expected_fingerprint=expected_fingerprint,
                                 verify_checksums=verify_checksums)
    return TileIndex.load(index_dir, backend=backend, expected_fingerprint=expected_fingerprint,
                          verify_checksums=verify_checksums)


@dataclass
class SearchStats:
    """Work done by :class:`CellSearcher` prior searches: cells looked up and candidate tiles scored."""

    queries: int = 0
    last_cells: int = 0
    last_candidates: int = 0
    last_scored: int = 0
    total_scored: int = 0


class CellSearcher:
    """A :class:`TileIndex` whose prior-constrained search touches only the cells around the prior.

    ``search`` / ``search_multi`` / ``tiles_within`` have the signatures and results of ``TileIndex``'s. With a
    finite prior the candidates come from :class:`CellTable` and are filtered by the exact ENU distance (the same
    rule as ``TileIndex``); their vectors are reconstructed from the index and scored exactly (flat, HNSW) or by
    their PQ codes (IVF-PQ, the score IVF-PQ search gives). Without a prior (or an infinite radius) the index's own
    search runs. Everything else (``tile``, ``fingerprint``, ``has_images``, ...) is the wrapped index's, so it can
    stand in for a TileIndex (e.g. in :class:`~gleam_ros.core.localizer.Localizer`). ``stats`` counts the work.
    """

    def __init__(self, index: TileIndex, cells: CellTable | None = None, cell_m: float = DEFAULT_CELL_M) -> None:
        self.index = index
        meta = index.meta_arrays()
        self.cells = cells if cells is not None else CellTable.from_meta(meta, cell_m)
        if self.cells.n_tiles != index.n_tiles:
            raise IndexFormatError(f"cell table covers {self.cells.n_tiles} tiles, the index has {index.n_tiles}")
        self._lat = np.asarray(meta["center_lat"], dtype=np.float64)
        self._lon = np.asarray(meta["center_lon"], dtype=np.float64)
        self._ids = meta["tile_ids"]
        self.stats = SearchStats()
        self._lock = threading.Lock()
        self.reference_std_m = index.reference_std_m  # registration accuracy of the imagery (see TileIndex)
        nprobe = (index.manifest.get("index_params") or {}).get("nprobe")
        if nprobe is not None and index.kind == "ivfpq":
            index.nprobe = int(nprobe)
        if index.kind == "ivfpq":  # reconstruct(id) needs the id -> (list, offset) map (8 bytes per tile)
            faiss.extract_index_ivf(index.faiss_index).make_direct_map(True)

    @classmethod
    def load(cls, index_dir: str | os.PathLike, backend: Any = None, expected_fingerprint: str | None = None,
             verify_checksums: bool = True, cell_m: float = DEFAULT_CELL_M) -> CellSearcher:
        """Open an index directory (``TileIndex.load`` checks) and its ``cells.npz`` (built here when absent)."""
        index = TileIndex.load(index_dir, backend=backend, expected_fingerprint=expected_fingerprint,
                               verify_checksums=verify_checksums)
        p = Path(index_dir) / CELLS_NAME
        cells = None
        if p.is_file():
            info = (index.manifest.get("files") or {}).get(CELLS_NAME)
            if isinstance(info, dict):
                if p.stat().st_size != int(info.get("size", -1)) or (verify_checksums and _sha256_file(p) != info.get("sha256")):
                    raise IndexFormatError(f"{p}: size or sha256 differs from the manifest (corrupt file)")
            cells = CellTable.load(p)
        return cls(index, cells, cell_m=cell_m)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("index", "cells"):
            raise AttributeError(name)
        return getattr(self.index, name)

    def __len__(self) -> int:
        return self.index.n_tiles

    def __repr__(self) -> str:
        return f"CellSearcher({self.index!r}, cells={self.cells.n_cells} of {self.cells.cell_m:g} m)"

    # ------------------------------------------------------------------ candidates
    def _local(self, lat: float, lon: float, radius: float) -> tuple[np.ndarray, np.ndarray]:
        """(candidate tile indices within ``radius``, their distances in metres), ascending indices."""
        cand, looked = self.cells.candidates(lat, lon, radius)
        if len(cand):
            e, n, _ = geo.LocalFrame(lat, lon).to_enu(self._lat[cand], self._lon[cand], 0.0)
            d = np.hypot(e, n)
            keep = d <= radius
            inside, dist = cand[keep], d[keep]
        else:
            inside, dist = cand, np.zeros(0)
        with self._lock:
            self.stats.last_cells = looked
            self.stats.last_candidates = len(cand)
        return inside, dist

    def tiles_within(self, lat: float, lon: float, radius_m: float) -> np.ndarray:
        """Ascending int64 indices of the tiles whose centre lies within ``radius_m`` of (lat, lon)."""
        lat, lon, radius_m = TileIndex._check_prior((lat, lon, radius_m))
        if math.isinf(radius_m):
            return self.index.tiles_within(lat, lon, radius_m)
        return self._local(lat, lon, radius_m)[0]

    # ------------------------------------------------------------------ search
    def _score(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, positions into ``cand``) per query row, exact over the reconstructed candidate vectors."""
        nq = q.shape[0]
        kk = min(k, len(cand))
        best_s = np.full((nq, 0), -np.inf, np.float32)
        best_p = np.zeros((nq, 0), np.int64)
        for start in range(0, len(cand), _SCORE_BLOCK):
            c = cand[start:start + _SCORE_BLOCK]
            vec = self.index.faiss_index.reconstruct_batch(np.ascontiguousarray(c, dtype=np.int64))
            s = q @ vec.T
            all_s = np.concatenate([best_s, s], axis=1)
            all_p = np.concatenate([best_p, np.broadcast_to(np.arange(start, start + len(c)), s.shape)], axis=1)
            top = np.argsort(-all_s, axis=1, kind="stable")[:, :kk]
            best_s = np.take_along_axis(all_s, top, axis=1)
            best_p = np.take_along_axis(all_p, top, axis=1)
        with self._lock:
            self.stats.queries += nq
            self.stats.last_scored = len(cand)
            self.stats.total_scored += len(cand) * nq
        return best_s, best_p

    def _hit(self, rank: int, i: int, score: float, dist: float, rotation: int = -1) -> SearchHit:
        return SearchHit(rank=rank, tile_idx=int(i), tile_id=str(self._ids[i]), score=float(score),
                         center_lat=float(self._lat[i]), center_lon=float(self._lon[i]), distance_m=float(dist),
                         rotation=rotation)

    def _prior(self, k: int, prior: Any) -> tuple[float, float, float] | None:
        if int(k) < 1:
            raise InputError(f"k must be >= 1, got {k}")
        if prior is None:
            return None
        p = TileIndex._check_prior(prior)
        return None if math.isinf(p[2]) else p

    def search(self, queries: np.ndarray, k: int = 5, prior: tuple[float, float, float] | None = None
               ) -> list[list[SearchHit]]:
        """Top-``k`` tiles per query embedding, best first (as :meth:`TileIndex.search`), prior-local."""
        p = self._prior(k, prior)
        if p is None:
            return self.index.search(queries, k=k, prior=prior)
        q = self.index._check_queries(queries)
        if q.shape[0] == 0:
            return []
        cand, dist = self._local(*p)
        if len(cand) == 0:
            return [[] for _ in range(q.shape[0])]
        scores, pos = self._score(q, cand, int(k))
        return [[self._hit(r + 1, cand[j], s, dist[j]) for r, (s, j) in enumerate(zip(srow, prow))]
                for srow, prow in zip(scores, pos)]

    def search_multi(self, queries_per_frame: np.ndarray, k: int = 5, prior: tuple[float, float, float] | None = None
                     ) -> list[SearchHit]:
        """Top-``k`` tiles for one frame at R rotations, each tile once (as :meth:`TileIndex.search_multi`)."""
        p = self._prior(k, prior)
        if p is None:
            return self.index.search_multi(queries_per_frame, k=k, prior=prior)
        q = self.index._check_queries(queries_per_frame)
        cand, dist = self._local(*p)
        if q.shape[0] == 0 or len(cand) == 0:
            return []
        scores, pos = self._score(q, cand, int(k))
        best: dict[int, tuple[float, int]] = {}
        for r in range(q.shape[0]):
            for s, j in zip(scores[r], pos[r]):
                j = int(j)
                if j not in best or float(s) > best[j][0]:
                    best[j] = (float(s), r)
        order = sorted(best.items(), key=lambda kv: (-kv[1][0], cand[kv[0]]))[:min(int(k), len(cand))]
        return [self._hit(rank + 1, cand[j], s, dist[j], rotation=r) for rank, (j, (s, r)) in enumerate(order)]

