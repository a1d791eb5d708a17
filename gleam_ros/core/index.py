"""Tile index: satellite tile embeddings in a FAISS index plus tile metadata and JPEG images.

An index directory holds

* ``manifest.json`` - format version, index kind, embedding dimension, encoder fingerprint / backend / model card,
  preprocessing, tile spec summary, map info, creation time, and size + sha256 of every other file;
* ``vectors.faiss`` - the FAISS index (inner product on unit-norm embeddings, i.e. cosine similarity);
* ``tiles.npz`` - per-tile metadata (ids, CRS, origin, GSD, size, centre, corners, sources, pack offsets);
* ``tiles.pack`` - the tile images, JPEG-encoded and concatenated (absent when built with ``store_images=False``).

The manifest is written last, so a directory whose manifest parses and whose checksums match is complete.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import mmap
import os
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import faiss
import numpy as np
from tqdm import tqdm

from .errors import ConfigError, IndexFormatError, IndexMismatchError, InputError, ModelError
from .geo import LocalFrame
from .tiles import Tile

LOG = logging.getLogger(__name__)

FORMAT_VERSION = 1
INDEX_KINDS = ("flat", "hnsw", "ivfpq")

MANIFEST_NAME = "manifest.json"
VECTORS_NAME = "vectors.faiss"
TILES_NAME = "tiles.npz"
PACK_NAME = "tiles.pack"

# Minimum number of vectors to train IVF-PQ (fewer -> flat fallback); PQ codebooks use up to 8 bits.
_MIN_IVFPQ_TRAIN = 128
# HNSW prior search: brute force over the candidate subset when it has at most this many tiles.
_HNSW_BRUTE_MAX = 8192
_TILE_CACHE_SIZE = 64
_NPZ_KEYS = (
    "tile_ids", "crs", "x0", "y0", "gsd_m", "size_m", "center_lat", "center_lon", "corners", "sources",
    "valid_fraction", "offsets", "image_shape",
)


@dataclass
class SearchHit:
    """One retrieved tile.

    ``rank`` is 1-based (1 = best). ``score`` is the inner product of unit-norm embeddings (cosine similarity;
    approximate for IVF-PQ). ``distance_m`` is the distance of the tile centre from the prior position, or None when
    the search had no prior. ``rotation`` is the index of the best query rotation for :meth:`TileIndex.search_multi`
    and -1 otherwise.
    """

    rank: int
    tile_idx: int
    tile_id: str
    score: float
    center_lat: float
    center_lon: float
    distance_m: float | None = None
    rotation: int = -1


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _jsonable(obj: Any, what: str) -> Any:
    """Round-trip through JSON so in-memory dicts compare equal to loaded ones (tuples -> lists, numpy -> python)."""
    try:
        return json.loads(json.dumps(obj, default=_json_default, sort_keys=True))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} is not JSON serialisable: {exc}") from None


def _backend_info(backend: Any) -> tuple[str, str, int, dict, dict]:
    """(fingerprint, backend name, dim, card dict, preprocessing dict) of an encoder backend."""
    try:
        fingerprint = str(backend.fingerprint)
        dim = int(backend.dim)
    except AttributeError as exc:
        raise ModelError(f"encoder backend {backend!r} lacks fingerprint/dim: {exc}") from None
    name = str(getattr(backend, "name", type(backend).__name__))
    card = getattr(backend, "card", None)
    card_dict: dict = {}
    pre_dict: dict = {}
    if card is not None:
        if hasattr(card, "to_dict"):
            card_dict = _jsonable(card.to_dict(), "model card")
        if hasattr(card, "preprocess_config"):
            pre_dict = _jsonable(card.preprocess_config().to_dict(), "preprocessing config")
    return fingerprint, name, dim, card_dict, pre_dict


def _sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _uniform_or_list(values: np.ndarray) -> Any:
    uniq = sorted(set(values.tolist()))
    return uniq[0] if len(uniq) == 1 else uniq


# From this many tiles on (and with the defaults), IVF-PQ is built on an OPQ rotation to <= 256 dimensions with
# ~4 sqrt(n) lists. At 1M synthetic 1280-d tiles, same 78 B/tile: recall@1 0.999 at nprobe = nlist / 4 (12.9 ms)
# against 0.878 (16.5 ms) for PQ on the raw dimensions (docs/bench/index_bench.md). Below it OPQ is not worth training.
OPQ_MIN_TILES = 50_000
_OPQ_NITER = 20  # faiss's default 50 makes OPQ training dominate the build; 20 gave the recall above


def opq_ivf_shape(dim: int, n: int) -> tuple[int, int, int]:
    """(OPQ output dimension <= 256, PQ sub-quantizers <= 64, IVF lists ~ 4 sqrt(n) as a power of two with >= 39
    training points per list) of the OPQ IVF-PQ layout for ``n`` vectors of dimension ``dim``."""
    d_opq = min(256, dim - dim % 16)
    nlist = int(2 ** round(math.log2(max(1.0, 4 * math.sqrt(n)))))
    while nlist > 1 and nlist > n / 39:
        nlist //= 2
    return d_opq, min(64, d_opq // 4), nlist


def ivfpq_layout(dim: int, n: int, ivf_nlist: int | None = None, pq_m: int | None = None) -> dict | None:
    """IVF-PQ parameters for ``n`` vectors of dimension ``dim``, or None when there are too few to train it.

    Keys: ``ivf_nlist``, ``pq_m``, ``pq_nbits``, ``train_size`` (vectors to train on) and, for large indexes built
    with the defaults, ``factory`` (an OPQ + IVF + PQ ``faiss.index_factory`` string). Raises ConfigError for a
    ``pq_m`` that does not divide ``dim``.
    """
    if pq_m is not None and (int(pq_m) < 1 or dim % int(pq_m) != 0):
        raise ConfigError(f"pq_m must be a positive divisor of the embedding dimension {dim}, got {pq_m}")
    if ivf_nlist is None and pq_m is None and n >= OPQ_MIN_TILES and dim >= 64:
        d_opq, m, nlist = opq_ivf_shape(dim, n)
        return {"ivf_nlist": nlist, "pq_m": m, "pq_nbits": 8, "opq_dim": d_opq,
                "factory": f"OPQ{m}_{d_opq},IVF{nlist},PQ{m}", "train_size": int(min(n, max(OPQ_MIN_TILES, 40 * nlist)))}
    nlist = int(ivf_nlist) if ivf_nlist is not None else int(np.clip(round(math.sqrt(n)), 1, max(1, n // 39)))
    nbits = min(8, math.floor(math.log2(n / 8.0))) if n >= 8 else 0
    if n < _MIN_IVFPQ_TRAIN or n < nlist or nbits < 4:
        return None
    m = int(pq_m) if pq_m is not None else _largest_divisor_at_most(dim, min(64, max(1, dim // 4)))
    return {"ivf_nlist": nlist, "pq_m": m, "pq_nbits": nbits, "train_size": int(n)}


def make_ivfpq(dim: int, layout: dict) -> Any:
    """The untrained faiss IVF-PQ index of an :func:`ivfpq_layout` (inner product)."""
    if "factory" in layout:
        index = faiss.index_factory(dim, layout["factory"], faiss.METRIC_INNER_PRODUCT)
        pre = faiss.downcast_index(index)
        for i in range(pre.chain.size()):
            vt = faiss.downcast_VectorTransform(pre.chain.at(i))
            if isinstance(vt, faiss.OPQMatrix):
                vt.niter = _OPQ_NITER
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        ivf.do_polysemous_training = False  # index_factory turns it on for 8-bit PQ: slow, and unused
        return index
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, layout["ivf_nlist"], layout["pq_m"], layout["pq_nbits"],
                             faiss.METRIC_INNER_PRODUCT)
    index.cp.min_points_per_centroid = 1
    index.pq.cp.min_points_per_centroid = 1
    return index


def train_sample(vectors: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """At most ``size`` rows of ``vectors`` (a fixed random subset when there are more)."""
    if len(vectors) <= size:
        return vectors
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), size, replace=False))
    return np.ascontiguousarray(vectors[rows])


def _largest_divisor_at_most(n: int, limit: int) -> int:
    for m in range(max(1, min(n, limit)), 0, -1):
        if n % m == 0:
            return m
    return 1


def check_reference_std(value: float, where: str = "reference_std_m") -> float:
    """``value`` as the registration accuracy of a map (metres, finite, >= 0); ConfigError naming ``where``."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        f = math.nan
    if isinstance(value, bool) or not (math.isfinite(f) and f >= 0.0):
        raise ConfigError(f"{where} must be a finite number >= 0 (metres), got {value!r}")
    return f


def reference_std_from_manifest(manifest: dict, where: object = None) -> float:
    """The reference imagery's registration accuracy (1-sigma per horizontal axis, metres) in ``map_info``.

    ``map_info["reference_std_m"]``, written by ``gleam index build --reference-std-m``: how far the
    orthophoto itself may be from the truth (its stated accuracy). A registration error is common to every
    fix against that imagery, so no per-frame quantity reveals it; the localizers add it to the covariance
    they publish. Absent means 0 (the imagery is taken as exact, as before). Raises IndexFormatError for a
    value that is not a finite number >= 0.
    """
    v = (manifest.get("map_info") or {}).get("reference_std_m", 0.0)
    try:
        return check_reference_std(v, f"{where or 'index manifest'}: map_info.reference_std_m")
    except ConfigError as exc:
        raise IndexFormatError(str(exc)) from None


class TileIndex:
    """Searchable index of satellite tile embeddings with tile metadata and (optionally) the tile images.

    Build with :meth:`build`, persist with :meth:`save`, reopen with :meth:`load`; query with :meth:`search`
    (one embedding per query) or :meth:`search_multi` (several rotations of one frame).

    Attributes: ``manifest`` (dict, as in manifest.json), ``kind`` (one of :data:`INDEX_KINDS`), ``dim`` (embedding
    dimension), ``n_tiles``; ``nprobe`` (IVF lists probed without a prior) and ``ef_search`` (HNSW search depth)
    may be changed to trade speed for recall.
    """

    def __init__(
        self,
        manifest: dict,
        faiss_index: Any,
        meta: dict[str, np.ndarray],
        images: list[bytes] | None = None,
        pack: Any = None,
    ) -> None:
        self.manifest = manifest
        self.kind: str = manifest["kind"]
        self.dim: int = int(manifest["dim"])
        self.n_tiles: int = int(manifest["n_tiles"])
        self._index = faiss_index
        self._meta = meta
        self._images = images  # build: list of JPEG bytes
        self._pack = pack  # load: mmap / bytes of tiles.pack
        self._dir: Path | None = None
        self._offsets = meta["offsets"].astype(np.int64)
        self._ids = [str(t) for t in meta["tile_ids"]]
        self._id_to_idx = {t: i for i, t in enumerate(self._ids)}
        self._lat = meta["center_lat"].astype(np.float64)
        self._lon = meta["center_lon"].astype(np.float64)
        self._cache: OrderedDict[int, Tile] = OrderedDict()
        self._lock = threading.Lock()
        self.ef_search = 128
        if self.kind == "ivfpq":
            nlist = int(faiss.extract_index_ivf(self._index).nlist)
            self.nprobe = int(min(nlist, max(16, math.ceil(nlist / 4))))
        else:
            self.nprobe = 1
        self.reference_std_m: float = reference_std_from_manifest(manifest, self._dir)

    # ------------------------------------------------------------------ build
    @classmethod
    def build(
        cls,
        tiles: Iterable[Tile],
        backend: Any,
        kind: str = "flat",
        batch_size: int = 32,
        total: int | None = None,
        progress: bool = True,
        hnsw_m: int = 32,
        ivf_nlist: int | None = None,
        pq_m: int | None = None,
        store_images: bool = True,
        jpeg_quality: int = 95,
        map_info: dict | None = None,
    ) -> TileIndex:
        """Embed ``tiles`` with ``backend`` (modality "satellite") and build an index of the given ``kind``.

        Tiles are streamed: images are embedded ``batch_size`` at a time and (with ``store_images``) kept only as
        JPEG bytes of quality ``jpeg_quality`` (4:4:4, no chroma subsampling). ``total`` sizes the progress
        bar (taken from ``len(tiles)`` when available). ``hnsw_m`` is the HNSW graph degree; ``ivf_nlist``
        (default ~sqrt(n)) and ``pq_m`` (default a divisor of the dimension, at most 64) configure IVF-PQ, which falls
        back to a flat index with a warning when there are too few tiles to train it. ``map_info`` (JSON-serialisable)
        is stored in the manifest.

        Raises ConfigError for bad parameters, duplicate tile ids or no tiles, InputError for an unusable tile image
        and ModelError when the backend returns embeddings of the wrong shape.
        """
        if kind not in INDEX_KINDS:
            raise ConfigError(f"index kind must be one of {INDEX_KINDS}, got {kind!r}")
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if int(hnsw_m) < 2:
            raise ConfigError(f"hnsw_m must be >= 2, got {hnsw_m}")
        if not 1 <= int(jpeg_quality) <= 100:
            raise ConfigError(f"jpeg_quality must be in [1, 100], got {jpeg_quality}")
        if ivf_nlist is not None and int(ivf_nlist) < 1:
            raise ConfigError(f"ivf_nlist must be >= 1, got {ivf_nlist}")
        map_info = _jsonable(dict(map_info or {}), "map_info")
        fingerprint, backend_name, dim, card_dict, pre_dict = _backend_info(backend)
        if pq_m is not None and (int(pq_m) < 1 or dim % int(pq_m) != 0):
            raise ConfigError(f"pq_m must be a positive divisor of the embedding dimension {dim}, got {pq_m}")
        if total is None and hasattr(tiles, "__len__"):
            total = len(tiles)  # type: ignore[arg-type]

        meta_lists: dict[str, list] = {k: [] for k in _NPZ_KEYS if k != "offsets"}
        jpegs: list[bytes] | None = [] if store_images else None
        vec_chunks: list[np.ndarray] = []
        seen: set[str] = set()
        batch: list[np.ndarray] = []
        enc_params = [int(cv2.IMWRITE_JPEG_QUALITY), int(jpeg_quality)]
        if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR"):  # no chroma subsampling: keeps thin coloured features
            enc_params += [int(cv2.IMWRITE_JPEG_SAMPLING_FACTOR), int(cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444)]

        def flush() -> None:
            if not batch:
                return
            emb = np.asarray(backend.embed(batch, "satellite", batch_size=int(batch_size)), dtype=np.float32)
            if emb.shape != (len(batch), dim):
                raise ModelError(f"encoder returned embeddings of shape {emb.shape}, expected {(len(batch), dim)}")
            if not np.isfinite(emb).all():
                raise ModelError("encoder returned non-finite embeddings")
            emb = np.ascontiguousarray(emb)
            faiss.normalize_L2(emb)
            vec_chunks.append(emb)
            batch.clear()

        bar = tqdm(total=total, unit="tile", desc="indexing tiles", disable=not progress)
        try:
            for tile in tiles:
                tid = str(tile.tile_id)
                if tid in seen:
                    raise ConfigError(f"duplicate tile id {tid!r}")
                seen.add(tid)
                img = np.asarray(tile.image)
                if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or img.shape[0] == 0 or img.shape[1] == 0:
                    raise InputError(f"tile {tid}: image must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
                corners = np.asarray(tile.corners_latlon(), dtype=np.float64)
                if corners.shape != (4, 2):
                    raise InputError(f"tile {tid}: corners_latlon() must be (4, 2), got {corners.shape}")
                meta_lists["tile_ids"].append(tid)
                meta_lists["crs"].append(str(tile.crs))
                meta_lists["x0"].append(float(tile.x0))
                meta_lists["y0"].append(float(tile.y0))
                meta_lists["gsd_m"].append(float(tile.gsd_m))
                meta_lists["size_m"].append(float(tile.size_m))
                meta_lists["center_lat"].append(float(tile.center_lat))
                meta_lists["center_lon"].append(float(tile.center_lon))
                meta_lists["corners"].append(corners)
                meta_lists["sources"].append(json.dumps([str(s) for s in getattr(tile, "sources", ())]))
                meta_lists["valid_fraction"].append(float(getattr(tile, "valid_fraction", 1.0)))
                meta_lists["image_shape"].append(img.shape)
                if jpegs is not None:
                    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), enc_params)
                    if not ok:
                        raise InputError(f"tile {tid}: JPEG encoding failed")
                    jpegs.append(buf.tobytes())
                batch.append(img)
                if len(batch) >= int(batch_size):
                    flush()
                bar.update(1)
            flush()
        finally:
            bar.close()

        n = len(meta_lists["tile_ids"])
        if n == 0:
            raise ConfigError("no tiles to index (the tile source is empty)")
        vectors = np.concatenate(vec_chunks, axis=0)
        vec_chunks.clear()

        params: dict[str, Any] = {"requested_kind": kind}
        actual = kind
        if kind == "ivfpq":
            layout = ivfpq_layout(dim, n, ivf_nlist, pq_m)
            if layout is None:
                LOG.warning("only %d tiles: too few to train IVF-PQ (needs >= %d and >= nlist); building a flat index "
                            "instead", n, _MIN_IVFPQ_TRAIN)
                actual = "flat"
            else:
                params.update({k: v for k, v in layout.items() if k != "train_size"})
        if actual == "flat":
            index = faiss.IndexFlatIP(dim)
        elif actual == "hnsw":
            index = faiss.IndexHNSWFlat(dim, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = max(40, 2 * int(hnsw_m))
            params["hnsw_m"] = int(hnsw_m)
        else:
            index = make_ivfpq(dim, layout)
            index.train(train_sample(vectors, layout["train_size"]))
        index.add(vectors)
        del vectors

        meta = {
            "tile_ids": np.array(meta_lists["tile_ids"], dtype=str),
            "crs": np.array(meta_lists["crs"], dtype=str),
            "x0": np.array(meta_lists["x0"], dtype=np.float64),
            "y0": np.array(meta_lists["y0"], dtype=np.float64),
            "gsd_m": np.array(meta_lists["gsd_m"], dtype=np.float64),
            "size_m": np.array(meta_lists["size_m"], dtype=np.float64),
            "center_lat": np.array(meta_lists["center_lat"], dtype=np.float64),
            "center_lon": np.array(meta_lists["center_lon"], dtype=np.float64),
            "corners": np.stack(meta_lists["corners"]).astype(np.float64),
            "sources": np.array(meta_lists["sources"], dtype=str),
            "valid_fraction": np.array(meta_lists["valid_fraction"], dtype=np.float64),
            "image_shape": np.array(meta_lists["image_shape"], dtype=np.int64).reshape(n, 3),
        }
        sizes = [len(b) for b in jpegs] if jpegs is not None else [0] * n
        meta["offsets"] = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": actual,
            "dim": dim,
            "n_tiles": n,
            "metric": "inner_product",
            "index_params": params,
            "encoder": {"fingerprint": fingerprint, "backend": backend_name, "card": card_dict},
            "preprocessing": pre_dict,
            "tile_spec": {
                "size_m": _uniform_or_list(meta["size_m"]),
                "gsd_m": _uniform_or_list(meta["gsd_m"]),
                "crs": _uniform_or_list(meta["crs"]),
                "image_px": _uniform_or_list(meta["image_shape"][:, 0]),
            },
            "has_images": bool(store_images),
            "jpeg_quality": int(jpeg_quality) if store_images else None,
            "map_info": map_info,
        }
        LOG.info("built %s index of %d tiles (dim %d)", actual, n, dim)
        return cls(manifest, index, meta, images=jpegs)

    # ------------------------------------------------------------------ save / load
    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write the index to ``out_dir`` (created if needed) and return its path.

        Every file is written under a temporary name, fsynced and renamed into place; ``manifest.json`` (with the
        size and sha256 of every other file) goes last.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tag = f".tmp-{os.getpid()}-{threading.get_ident()}"
        tmp: dict[str, Path] = {}
        try:
            tmp[VECTORS_NAME] = out / (VECTORS_NAME + tag)
            faiss.write_index(self._index, str(tmp[VECTORS_NAME]))
            tmp[TILES_NAME] = out / (TILES_NAME + tag)
            with open(tmp[TILES_NAME], "wb") as fh:
                np.savez(fh, **{k: self._meta[k] for k in _NPZ_KEYS})
                fh.flush()
                os.fsync(fh.fileno())
            if self.has_images:
                tmp[PACK_NAME] = out / (PACK_NAME + tag)
                with open(tmp[PACK_NAME], "wb") as fh:
                    fh.writelines(self._jpeg(i) for i in range(self.n_tiles))
                    fh.flush()
                    os.fsync(fh.fileno())
            files = {name: {"size": p.stat().st_size, "sha256": _sha256_file(p)} for name, p in tmp.items()}
            manifest = dict(self.manifest)
            manifest["files"] = files
            manifest["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
            tmp[MANIFEST_NAME] = out / (MANIFEST_NAME + tag)
            _fsync_write(tmp[MANIFEST_NAME], (json.dumps(manifest, indent=2, default=_json_default) + "\n").encode())
            for name in (VECTORS_NAME, TILES_NAME, PACK_NAME, MANIFEST_NAME):
                if name in tmp:
                    os.replace(tmp.pop(name), out / name)
            if not self.has_images and (out / PACK_NAME).exists():
                (out / PACK_NAME).unlink()  # stale pack of an earlier index in the same directory
        finally:
            for p in tmp.values():
                p.unlink(missing_ok=True)
        self.manifest = manifest
        LOG.info("saved %s index of %d tiles to %s", self.kind, self.n_tiles, out)
        return out

    @classmethod
    def load(
        cls,
        index_dir: str | os.PathLike,
        backend: Any = None,
        expected_fingerprint: str | None = None,
        verify_checksums: bool = True,
    ) -> TileIndex:
        """Open an index directory written by :meth:`save`.

        Raises IndexFormatError (naming the file) for a missing directory or file, unreadable manifest, unknown
        format version, a file whose size or sha256 (``verify_checksums``) differs from the manifest, or a file
        FAISS / numpy cannot read. Raises IndexMismatchError when ``backend`` (or ``expected_fingerprint``) has
        another encoder fingerprint, dimension or preprocessing than the index was built with.
        """
        d = Path(index_dir)
        if not d.is_dir():
            raise IndexFormatError(f"index directory {d} does not exist")
        mpath = d / MANIFEST_NAME
        if not mpath.is_file():
            raise IndexFormatError(f"{mpath}: missing index manifest (not an index directory?)")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IndexFormatError(f"{mpath}: unreadable manifest: {exc}") from None
        if not isinstance(manifest, dict):
            raise IndexFormatError(f"{mpath}: manifest is not a JSON object")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise IndexFormatError(
                f"{mpath}: index format_version {version!r} is not supported (expected {FORMAT_VERSION}); "
                "rebuild the index with `gleam index build`"
            )
        try:
            kind = manifest["kind"]
            dim = int(manifest["dim"])
            n = int(manifest["n_tiles"])
            files = manifest["files"]
            enc = manifest["encoder"]
            fp_index = str(enc["fingerprint"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFormatError(f"{mpath}: manifest lacks a valid field {exc}") from None
        reference_std_from_manifest(manifest, mpath)
        if kind not in INDEX_KINDS:
            raise IndexFormatError(f"{mpath}: unknown index kind {kind!r}")
        has_images = bool(manifest.get("has_images", PACK_NAME in files))
        required = [VECTORS_NAME, TILES_NAME] + ([PACK_NAME] if has_images else [])
        for name in required:
            p = d / name
            info = files.get(name) if isinstance(files, dict) else None
            if not isinstance(info, dict) or "size" not in info:
                raise IndexFormatError(f"{mpath}: manifest has no size/checksum entry for {name}")
            if not p.is_file():
                raise IndexFormatError(f"{p}: missing index file")
            size = p.stat().st_size
            if size != int(info["size"]):
                raise IndexFormatError(
                    f"{p}: size {size} bytes differs from the manifest's {info['size']} (truncated or replaced)"
                )
            if verify_checksums and _sha256_file(p) != info.get("sha256"):
                raise IndexFormatError(f"{p}: sha256 checksum differs from the manifest (corrupt file)")

        # Encoder compatibility, before the (possibly large) vectors are read.
        model_index = (enc.get("card") or {}).get("name") or "?"
        if expected_fingerprint is not None and str(expected_fingerprint) != fp_index:
            raise IndexMismatchError(
                f"index {d} was built with encoder {model_index} (fingerprint {fp_index}) but fingerprint "
                f"{expected_fingerprint} was expected; the index must be rebuilt with `gleam index build`"
            )
        if backend is not None:
            fp_b, name_b, dim_b, card_b, pre_b = _backend_info(backend)
            model_b = card_b.get("name") or name_b
            if fp_b != fp_index:
                raise IndexMismatchError(
                    f"index {d} was built with encoder {model_index} (fingerprint {fp_index}) but the loaded encoder "
                    f"is {model_b} (fingerprint {fp_b}); the index must be rebuilt with `gleam index build`"
                )
            if dim_b != dim:
                raise IndexMismatchError(
                    f"index {d} has {dim}-d embeddings but encoder {model_b} (fingerprint {fp_b}) produces {dim_b}-d; "
                    "the index must be rebuilt with `gleam index build`"
                )
            pre_i = manifest.get("preprocessing") or {}
            if pre_b and pre_i != pre_b:
                keys = sorted(k for k in set(pre_i) | set(pre_b) if pre_i.get(k) != pre_b.get(k))
                raise IndexMismatchError(
                    f"index {d} was built with other preprocessing than encoder {model_b} uses (differs in {keys}; "
                    f"index fingerprint {fp_index}, encoder fingerprint {fp_b}); the index must be rebuilt with "
                    "`gleam index build`"
                )

        vpath = d / VECTORS_NAME
        try:
            index = faiss.read_index(str(vpath))
        except (RuntimeError, MemoryError, OSError) as exc:  # faiss raises RuntimeError with a C++ message
            raise IndexFormatError(f"{vpath}: FAISS cannot read the index: {str(exc).strip().splitlines()[0]}") from None
        if index.d != dim or index.ntotal != n or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise IndexFormatError(
                f"{vpath}: holds {index.ntotal} vectors of dim {index.d} (metric {index.metric_type}), "
                f"manifest says {n} of dim {dim} (inner product)"
            )
        tpath = d / TILES_NAME
        try:
            with np.load(tpath, allow_pickle=False) as z:
                meta = {k: np.array(z[k]) for k in _NPZ_KEYS}
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as exc:
            raise IndexFormatError(f"{tpath}: unreadable tile metadata: {exc}") from None
        for k, v in meta.items():
            want = n + 1 if k == "offsets" else n
            if len(v) != want:
                raise IndexFormatError(f"{tpath}: array {k!r} has {len(v)} entries, expected {want}")
        offs = meta["offsets"]
        if offs[0] != 0 or np.any(np.diff(offs) < 0):
            raise IndexFormatError(f"{tpath}: pack offsets are not monotonic")
        pack: Any = None
        if has_images:
            ppath = d / PACK_NAME
            psize = ppath.stat().st_size
            if int(offs[-1]) != psize:
                raise IndexFormatError(f"{ppath}: {psize} bytes but the tile offsets need {int(offs[-1])}")
            if psize == 0:
                pack = b""
            else:
                with open(ppath, "rb") as fh:
                    pack = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        obj = cls(manifest, index, meta, images=None, pack=pack)
        obj._dir = d
        LOG.info("loaded %s index of %d tiles from %s", kind, n, d)
        return obj

    # ------------------------------------------------------------------ metadata / tiles
    @property
    def fingerprint(self) -> str:
        """Encoder fingerprint the index was built with."""
        return str(self.manifest["encoder"]["fingerprint"])

    @property
    def has_images(self) -> bool:
        """Whether tile images are stored (``store_images`` at build time)."""
        return bool(self.manifest.get("has_images", True))

    @property
    def tile_ids(self) -> list[str]:
        """Tile ids in index order."""
        return list(self._ids)

    @property
    def centers_latlon(self) -> np.ndarray:
        """(n_tiles, 2) tile centres as (lat, lon) degrees."""
        return np.stack([self._lat, self._lon], axis=1)

    def __len__(self) -> int:
        return self.n_tiles

    def __repr__(self) -> str:
        return f"TileIndex(kind={self.kind!r}, n_tiles={self.n_tiles}, dim={self.dim}, fingerprint={self.fingerprint})"

    def _check_idx(self, idx: int) -> int:
        i = int(idx)
        if not 0 <= i < self.n_tiles:
            raise InputError(f"tile index {idx} out of range [0, {self.n_tiles})")
        return i

    def _jpeg(self, i: int) -> bytes:
        if self._images is not None:
            return self._images[i]
        a, b = int(self._offsets[i]), int(self._offsets[i + 1])
        return bytes(self._pack[a:b])

    def tile(self, idx: int) -> Tile:
        """The tile at index position ``idx`` with its image decoded from the pack (LRU-cached).

        The image is read-only (the cached tile is shared; copy it before modifying). Without stored images the
        tile's image is an empty (0, 0, 3) array.
        """
        i = self._check_idx(idx)
        with self._lock:
            if i in self._cache:
                self._cache.move_to_end(i)
                return self._cache[i]
            if self.has_images:
                buf = np.frombuffer(self._jpeg(i), dtype=np.uint8)
                bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
                if bgr is None:
                    raise IndexFormatError(f"{PACK_NAME}: JPEG of tile {self._ids[i]} cannot be decoded")
                image = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            else:
                image = np.zeros((0, 0, 3), dtype=np.uint8)
            image.setflags(write=False)  # shared through the cache
            m = self._meta
            t = Tile(
                tile_id=self._ids[i],
                image=image,
                crs=str(m["crs"][i]),
                x0=float(m["x0"][i]),
                y0=float(m["y0"][i]),
                gsd_m=float(m["gsd_m"][i]),
                size_m=float(m["size_m"][i]),
                center_lat=float(m["center_lat"][i]),
                center_lon=float(m["center_lon"][i]),
                sources=tuple(json.loads(str(m["sources"][i]))),
                valid_fraction=float(m["valid_fraction"][i]),
            )
            self._cache[i] = t
            if len(self._cache) > _TILE_CACHE_SIZE:
                self._cache.popitem(last=False)
            return t

    def tile_by_id(self, tile_id: str) -> Tile:
        """The tile with id ``tile_id`` (InputError when unknown)."""
        try:
            return self.tile(self._id_to_idx[str(tile_id)])
        except KeyError:
            raise InputError(f"unknown tile id {tile_id!r}") from None

    def index_of(self, tile_id: str) -> int:
        """Index position of ``tile_id`` (InputError when unknown)."""
        try:
            return self._id_to_idx[str(tile_id)]
        except KeyError:
            raise InputError(f"unknown tile id {tile_id!r}") from None

    def corners_latlon(self, idx: int) -> np.ndarray:
        """(4, 2) corners of tile ``idx`` as stored at build time (``Tile.corners_latlon()``)."""
        return self._meta["corners"][self._check_idx(idx)].copy()

    def _center_distances(self, lat: float, lon: float) -> np.ndarray:
        e, n, _ = LocalFrame(lat, lon).to_enu(self._lat, self._lon, 0.0)
        return np.hypot(e, n)

    @staticmethod
    def _check_prior(prior: Any) -> tuple[float, float, float]:
        try:
            lat, lon, radius = (float(v) for v in prior)
        except (TypeError, ValueError):
            raise InputError(f"prior must be (lat, lon, radius_m), got {prior!r}") from None
        if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
            raise InputError(f"prior position out of range: ({lat}, {lon})")
        if math.isnan(radius) or radius < 0:
            raise InputError(f"prior radius must be >= 0 metres, got {radius}")
        return lat, lon, radius

    def tiles_within(self, lat: float, lon: float, radius_m: float) -> np.ndarray:
        """Ascending int64 indices of the tiles whose centre lies within ``radius_m`` of (lat, lon).

        Distances are horizontal, in the local ENU plane at (lat, lon); ``radius_m=inf`` selects every tile.
        """
        lat, lon, radius_m = self._check_prior((lat, lon, radius_m))
        return np.flatnonzero(self._center_distances(lat, lon) <= radius_m).astype(np.int64)

    # ------------------------------------------------------------------ search
    def _check_queries(self, queries: Any) -> np.ndarray:
        try:
            q = np.array(queries, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InputError(f"queries must be a numeric array: {exc}") from None
        if q.ndim == 1:
            q = q.reshape(1, -1)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise InputError(f"queries must have shape (Q, {self.dim}) or ({self.dim},), got {np.shape(queries)}")
        if not np.isfinite(q).all():
            raise InputError("queries contain NaN or infinite values")
        norms = np.linalg.norm(q, axis=1)
        if q.shape[0] and not (norms > 0).all():
            raise InputError("queries contain an all-zero embedding")
        q = np.ascontiguousarray(q / norms[:, None], dtype=np.float32)
        return q

    def _search_arrays(self, q: np.ndarray, k: int, cand: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query, optionally restricted to candidate ids; missing entries have id -1."""
        nq = q.shape[0]
        if cand is None:
            if self.kind == "flat":
                return self._index.search(q, k)
            if self.kind == "hnsw":
                return self._index.search(q, k, params=faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k)))
            return self._index.search(q, k, params=faiss.SearchParametersIVF(nprobe=int(self.nprobe)))
        sel = faiss.IDSelectorBatch(cand)
        if self.kind == "flat":
            return self._index.search(q, k, params=faiss.SearchParameters(sel=sel))
        if self.kind == "ivfpq":
            nlist = int(faiss.extract_index_ivf(self._index).nlist)
            return self._index.search(q, k, params=faiss.SearchParametersIVF(sel=sel, nprobe=nlist))
        # HNSW: exact brute force over a small subset, else filtered graph search with brute-force fallback.
        if len(cand) > _HNSW_BRUTE_MAX:
            ef = max(self.ef_search, 4 * k)
            scores, ids = self._index.search(q, k, params=faiss.SearchParametersHNSW(sel=sel, efSearch=ef))
            if ((ids >= 0).sum(axis=1) >= min(k, len(cand))).all():
                return scores, ids
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        ids = np.full((nq, k), -1, dtype=np.int64)
        kk = min(k, len(cand))
        for start in range(0, len(cand), _HNSW_BRUTE_MAX):
            c = cand[start:start + _HNSW_BRUTE_MAX]
            vec = self._index.reconstruct_batch(c)
            s = q @ vec.T
            all_s = np.concatenate([scores, s], axis=1)
            all_i = np.concatenate([ids, np.broadcast_to(c, s.shape)], axis=1)
            top = np.argsort(-all_s, axis=1, kind="stable")[:, :kk]
            scores[:, :kk] = np.take_along_axis(all_s, top, axis=1)
            ids[:, :kk] = np.take_along_axis(all_i, top, axis=1)
        return scores, ids

    def _prepare(self, k: int, prior: Any) -> tuple[int, np.ndarray | None, np.ndarray | None]:
        if int(k) < 1:
            raise InputError(f"k must be >= 1, got {k}")
        if prior is None:
            return min(int(k), self.n_tiles), None, None
        lat, lon, radius = self._check_prior(prior)
        dist = self._center_distances(lat, lon)
        cand = np.flatnonzero(dist <= radius).astype(np.int64)
        return min(int(k), max(len(cand), 1)), cand, dist

    def _hit(self, rank: int, i: int, score: float, dist: np.ndarray | None, rotation: int = -1) -> SearchHit:
        return SearchHit(
            rank=rank,
            tile_idx=int(i),
            tile_id=self._ids[i],
            score=float(score),
            center_lat=float(self._lat[i]),
            center_lon=float(self._lon[i]),
            distance_m=None if dist is None else float(dist[i]),
            rotation=rotation,
        )

    def search(
        self, queries: np.ndarray, k: int = 5, prior: tuple[float, float, float] | None = None
    ) -> list[list[SearchHit]]:
        """Top-``k`` tiles for each query embedding, best first.

        ``queries`` is (Q, D) (or (D,) for one query) float; each row is L2-normalised. With ``prior`` =
        (lat, lon, radius_m) only tiles whose centre lies within the radius are candidates and hits carry
        ``distance_m``; a query with no candidate gets an empty list, and fewer than ``k`` candidates give fewer hits.
        Raises InputError for a wrong dimension, NaN/inf, an all-zero row, ``k < 1`` or a malformed prior.
        """
        q = self._check_queries(queries)
        kk, cand, dist = self._prepare(k, prior)
        if q.shape[0] == 0:
            return []
        if cand is not None and len(cand) == 0:
            return [[] for _ in range(q.shape[0])]
        scores, ids = self._search_arrays(q, kk, cand)
        out: list[list[SearchHit]] = []
        for srow, irow in zip(scores, ids):
            valid = [(float(s), int(i)) for s, i in zip(srow, irow) if i >= 0]
            out.append([self._hit(r + 1, i, s, dist) for r, (s, i) in enumerate(valid)])
        return out

    def search_multi(
        self, queries_per_frame: np.ndarray, k: int = 5, prior: tuple[float, float, float] | None = None
    ) -> list[SearchHit]:
        """Top-``k`` tiles for one frame embedded at R rotations (unknown yaw), each tile once, best first.

        ``queries_per_frame`` is (R, D). A tile's score is its maximum over the rotations and ``hit.rotation`` the
        index of the rotation attaining it. Searching each rotation for its own top-k is sufficient: a tile in the
        overall top-k is in the top-k of its best rotation. ``prior`` as in :meth:`search`.
        """
        q = self._check_queries(queries_per_frame)
        kk, cand, dist = self._prepare(k, prior)
        if q.shape[0] == 0 or (cand is not None and len(cand) == 0):
            return []
        scores, ids = self._search_arrays(q, kk, cand)
        best: dict[int, tuple[float, int]] = {}
        for r in range(q.shape[0]):
            for s, i in zip(scores[r], ids[r]):
                i = int(i)
                if i < 0:
                    continue
                if i not in best or float(s) > best[i][0]:
                    best[i] = (float(s), r)
        order = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:kk]
        return [self._hit(rank + 1, i, s, dist, rotation=r) for rank, (i, (s, r)) in enumerate(order)]

    def close(self) -> None:
        """Release the memory map of the tile pack (the index is unusable for :meth:`tile` afterwards)."""
        if isinstance(self._pack, mmap.mmap):
            self._pack.close()
        self._pack = None

    # ------------------------------------------------------------------ parts (sharded builds: gleam_ros.core.shards)
    # Added for the sharded / merged country-scale index; nothing above uses these.
    @property
    def faiss_index(self) -> Any:
        """The underlying FAISS index (for reading: reconstruct, serialise; adding vectors breaks the metadata)."""
        return self._index

    def meta_arrays(self) -> dict[str, np.ndarray]:
        """The per-tile metadata arrays as stored in ``tiles.npz`` (shared with the index: do not modify)."""
        return {k: self._meta[k] for k in _NPZ_KEYS}

    def jpeg_bytes(self, idx: int) -> bytes:
        """The stored JPEG bytes of tile ``idx`` (``b""`` when the index holds no images)."""
        i = self._check_idx(idx)
        return self._jpeg(i) if self.has_images else b""

    @classmethod
    def from_parts(cls, manifest: dict, faiss_index: Any, meta: dict[str, np.ndarray], pack: Any = None) -> TileIndex:
        """Assemble an index from the parts :meth:`save` writes: manifest dict, FAISS index, metadata arrays, pack.

        ``pack`` (bytes or an mmap of ``tiles.pack``) is needed when ``manifest["has_images"]``. Raises
        IndexFormatError when the parts disagree (kind, dimension, tile count, metric, array lengths, pack size).
        """
        try:
            kind, dim, n = manifest["kind"], int(manifest["dim"]), int(manifest["n_tiles"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFormatError(f"manifest lacks a valid field {exc}") from None
        if kind not in INDEX_KINDS:
            raise IndexFormatError(f"unknown index kind {kind!r}")
        if faiss_index.d != dim or faiss_index.ntotal != n or faiss_index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise IndexFormatError(
                f"FAISS index holds {faiss_index.ntotal} vectors of dim {faiss_index.d} (metric {faiss_index.metric_type}), "
                f"manifest says {n} of dim {dim} (inner product)"
            )
        missing = [k for k in _NPZ_KEYS if k not in meta]
        if missing:
            raise IndexFormatError(f"tile metadata lacks arrays {missing}")
        for k in _NPZ_KEYS:
            want = n + 1 if k == "offsets" else n
            if len(meta[k]) != want:
                raise IndexFormatError(f"tile metadata array {k!r} has {len(meta[k])} entries, expected {want}")
        if bool(manifest.get("has_images", True)):
            if pack is None or len(pack) != int(meta["offsets"][-1]):
                size = None if pack is None else len(pack)
                raise IndexFormatError(f"tile pack of {size} bytes but the tile offsets need {int(meta['offsets'][-1])}")
        return cls(manifest, faiss_index, {k: np.asarray(meta[k]) for k in _NPZ_KEYS}, images=None, pack=pack)
