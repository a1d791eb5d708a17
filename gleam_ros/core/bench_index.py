"""Index scale benchmark: flat vs HNSW vs IVF-PQ variants on synthetic embeddings at 10k, 100k and 1M tiles.

Synthetic vectors (:class:`SynthSpec`) imitate pooled CNN tile embeddings: unit vectors in the encoder's dimension
(1280) made of a shared mean direction, one of ``n_clusters`` cluster centres (land-cover types), a low-rank
within-cluster part with a decaying spectrum and a little isotropic noise. A query is a database vector perturbed
in the same low-rank subspace plus noise (another view / season of the same place), re-normalised.

Per size and variant: build time (train + add), query time (p50 / p90 per query single-threaded, and per query in
one batch over all threads), recall@1 and @10 against exact inner-product search (``recall@10`` is the overlap of
the top 10 with the exact top 10), ``source@1`` (top 1 is the vector the query was made from), bytes per tile
(serialised index size / n) and RAM (process RSS after the build minus before it).

Memory is streamed: the database is generated chunk by chunk into a float32 file in a work folder and read back a
chunk at a time; the exact ground truth is computed chunk by chunk; one index exists at a time. Results go to
``index_bench.json``, ``index_bench.md`` and ``index_bench.png`` in the output folder.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .errors import ConfigError
from .index import _largest_divisor_at_most, opq_ivf_shape

DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (10_000,)
DEFAULT_VARIANTS = ("flat", "hnsw32", "ivfpq-tileindex", "opq64-ivfpq64", "opq64-ivfpq128fs", "opq64-ivfpq64-rflat",
                    "opq112-ivfpq112")
GOALS = {"n": 1_000_000, "query_ms": 2.0, "recall_at_1": 0.98, "bytes_per_tile": 128}
_GEN_CHUNK = 25_000  # vectors per generated chunk (the chunk index seeds it: reproducible in any order)


@dataclass(frozen=True)
class SynthSpec:
    """Parameters of the synthetic embedding distribution (see the module docstring)."""

    dim: int = 1280
    n_clusters: int = 1024
    latent_rank: int = 128
    spectrum_decay: float = 0.5  # std of latent component i is proportional to (i + 1) ** -decay
    mean_weight: float = 1.0  # pooled ReLU features share a large common direction
    cluster_weight: float = 0.8
    latent_weight: float = 1.0
    noise_weight: float = 0.3
    query_latent: float = 0.35  # a query: the same place seen again (low-rank change + noise)
    query_noise: float = 0.2
    seed: int = 0


class SyntheticVectors:
    """Deterministic generator of database chunks and queries of a :class:`SynthSpec`."""

    def __init__(self, spec: SynthSpec) -> None:
        if spec.dim < 8 or spec.latent_rank < 1 or spec.latent_rank > spec.dim or spec.n_clusters < 1:
            raise ConfigError(f"bad synthetic spec {spec}")
        self.spec = spec
        rng = np.random.default_rng([spec.seed, 0])
        d, r = spec.dim, spec.latent_rank
        self.mean = _unit(rng.standard_normal(d).astype(np.float32))
        self.centres = _unit(rng.standard_normal((spec.n_clusters, d)).astype(np.float32))
        self.basis = np.linalg.qr(rng.standard_normal((d, r)))[0].astype(np.float32).T.copy()  # (r, d) orthonormal
        s = (np.arange(r, dtype=np.float64) + 1.0) ** -spec.spectrum_decay
        self.scale = (s / np.linalg.norm(s)).astype(np.float32)  # E ||latent part||^2 = 1

    def _latent(self, rng: np.random.Generator, n: int) -> np.ndarray:
        z = rng.standard_normal((n, self.spec.latent_rank), dtype=np.float32) * self.scale
        return z @ self.basis

    def _noise(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.standard_normal((n, self.spec.dim), dtype=np.float32) / np.float32(math.sqrt(self.spec.dim))

    def chunk(self, c: int, n: int) -> np.ndarray:
        """Database chunk ``c`` (vectors ``c * 25000 ...``), the first ``n`` of its rows, unit norm float32."""
        sp = self.spec
        rng = np.random.default_rng([sp.seed, 1, int(c)])
        labels = rng.integers(0, sp.n_clusters, size=_GEN_CHUNK)[:n]
        x = sp.latent_weight * self._latent(rng, _GEN_CHUNK)[:n]
        x += sp.mean_weight * self.mean + sp.cluster_weight * self.centres[labels]
        x += sp.noise_weight * self._noise(rng, n)
        return _unit(x)

    def iter_db(self, n: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, vectors)`` chunks of the first ``n`` database vectors."""
        for c in range(math.ceil(n / _GEN_CHUNK)):
            start = c * _GEN_CHUNK
            yield start, self.chunk(c, min(_GEN_CHUNK, n - start))

    def perturb(self, x: np.ndarray, seed: int) -> np.ndarray:
        """Queries made from database vectors ``x``."""
        rng = np.random.default_rng([self.spec.seed, 2, int(seed)])
        q = x + self.spec.query_latent * self._latent(rng, len(x)) + self.spec.query_noise * self._noise(rng, len(x))
        return _unit(q)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x


# ============================================================================ database file + ground truth


class _DbFile:
    """The first ``n`` database vectors as a raw float32 file, read back one chunk at a time (no mmap: RSS stays
    the chunk, not the file)."""

    def __init__(self, gen: SyntheticVectors, n: int, path: Path) -> None:
        self.n, self.dim, self.path = int(n), gen.spec.dim, path
        t0 = time.perf_counter()
        with open(path, "wb") as fh:
            for _, x in gen.iter_db(n):
                fh.write(x.tobytes())
        self.gen_s = time.perf_counter() - t0

    def chunks(self, size: int = _GEN_CHUNK * 2) -> Iterator[tuple[int, np.ndarray]]:
        with open(self.path, "rb") as fh:
            for start in range(0, self.n, size):
                m = min(size, self.n - start)
                buf = np.empty((m, self.dim), np.float32)
                fh.readinto(memoryview(buf).cast("B"))
                yield start, buf

    def rows(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), self.dim), np.float32)
        row = self.dim * 4
        with open(self.path, "rb") as fh:
            for k, i in enumerate(ids):
                fh.seek(int(i) * row)
                fh.readinto(memoryview(out[k]).cast("B"))
        return out

    def sample(self, m: int, seed: int) -> np.ndarray:
        ids = np.sort(np.random.default_rng(seed).choice(self.n, size=min(m, self.n), replace=False))
        return self.rows(ids)


def exact_topk(db: _DbFile, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k of ``q`` over the database file, streamed chunk by chunk: (scores, ids)."""
    nq = len(q)
    best_s = np.full((nq, 0), -np.inf, np.float32)
    best_i = np.zeros((nq, 0), np.int64)
    for start, x in db.chunks():
        s = q @ x.T
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        cs = np.take_along_axis(s, part, axis=1)
        all_s = np.concatenate([best_s, cs], axis=1)
        all_i = np.concatenate([best_i, part + start], axis=1)
        top = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(all_s, top, axis=1), np.take_along_axis(all_i, top, axis=1)
    return best_s, best_i


# ============================================================================ variants


@dataclass
class Variant:
    """One index configuration: a faiss factory string plus build / search parameters."""

    name: str
    factory: str
    search: dict = field(default_factory=dict)  # nprobe, efSearch, k_factor
    build: dict = field(default_factory=dict)  # efConstruction, opq_niter
    train_size: int = 0


def make_variants(n: int, dim: int, names: Sequence[str] = DEFAULT_VARIANTS, quick: bool = False) -> list[Variant]:
    """The benchmark's index configurations for ``n`` vectors of dimension ``dim``.

    ``ivfpq-tileindex`` is what ``TileIndex.build(kind="ivfpq")`` makes below ``OPQ_MIN_TILES`` (nlist ~ sqrt(n), PQ
    with <= 64 sub-quantizers, nprobe = max(16, nlist / 4)); above it, TileIndex builds ``opq64-ivfpq64`` and probes a
    quarter of the lists. The ``opq*`` variants rotate + reduce with OPQ to 256 (or ``dim``)
    dimensions, use nlist ~ 4 sqrt(n) (a power of two, >= 39 training points per list) and nprobe 32; ``-rflat``
    re-ranks the IVF-PQ shortlist (k_factor 16) with the exact vectors, which it stores (so it is big).
    ``opq64-ivfpq128fs`` keeps the 64 bytes of code per tile but as 128 4-bit sub-quantizers scanned with faiss's
    SIMD "fast scan" (distance tables in registers): several times faster per code, so it can afford nprobe 256.
    """
    nlist_sqrt = int(np.clip(round(math.sqrt(n)), 1, max(1, n // 39)))
    d_opq, m64, nlist = opq_ivf_shape(dim, n)  # the layout TileIndex uses from OPQ_MIN_TILES on
    m_ti = _largest_divisor_at_most(dim, min(64, max(1, dim // 4)))
    d112 = min(224, dim - dim % 16)
    m112 = _largest_divisor_at_most(d112, min(112, d112 // 2))
    train = min(n, max(50_000, 40 * nlist))
    opq_build = {"opq_niter": 10 if quick else 20}  # faiss default 50: training dominates the build on small boxes
    table = {
        "flat": Variant("flat", "Flat"),
        "hnsw32": Variant("hnsw32", "HNSW32", {"efSearch": 128}, {"efConstruction": 64}),
        "ivfpq-tileindex": Variant("ivfpq-tileindex", f"IVF{nlist_sqrt},PQ{m_ti}",
                                   {"nprobe": int(min(nlist_sqrt, max(16, math.ceil(nlist_sqrt / 4))))},
                                   train_size=min(n, max(50_000, 40 * nlist_sqrt))),
        "opq64-ivfpq64": Variant("opq64-ivfpq64", f"OPQ{m64}_{d_opq},IVF{nlist},PQ{m64}", {"nprobe": 32}, dict(opq_build),
                                 train_size=train),
        "opq64-ivfpq128fs": Variant("opq64-ivfpq128fs", f"OPQ{m64}_{d_opq},IVF{nlist},PQ{2 * m64}x4fs", {"nprobe": 256},
                                    dict(opq_build), train_size=train),
        "opq64-ivfpq64-rflat": Variant("opq64-ivfpq64-rflat", f"OPQ{m64}_{d_opq},IVF{nlist},PQ{m64},RFlat",
                                       {"nprobe": 32, "k_factor": 16}, dict(opq_build), train_size=train),
        "opq112-ivfpq112": Variant("opq112-ivfpq112", f"OPQ{m112}_{d112},IVF{nlist},PQ{m112}", {"nprobe": 32},
                                   dict(opq_build), train_size=train),
    }
    unknown = [v for v in names if v not in table]
    if unknown:
        raise ConfigError(f"unknown benchmark variants {unknown}; choose from {sorted(table)}")
    return [table[v] for v in names]


def _configure_build(index: Any, v: Variant) -> None:
    idx = faiss.downcast_index(index)
    if isinstance(idx, faiss.IndexRefine):
        idx = faiss.downcast_index(idx.base_index)
    if "efConstruction" in v.build:
        idx.hnsw.efConstruction = int(v.build["efConstruction"])
    if isinstance(idx, faiss.IndexPreTransform):
        for i in range(idx.chain.size()):
            vt = faiss.downcast_VectorTransform(idx.chain.at(i))
            if isinstance(vt, faiss.OPQMatrix) and "opq_niter" in v.build:
                vt.niter = int(v.build["opq_niter"])
        idx = faiss.downcast_index(idx.index)
    if hasattr(idx, "do_polysemous_training"):
        idx.do_polysemous_training = False  # index_factory turns it on for 8-bit PQ: slow, and unused here


def _search_params(index: Any, v: Variant) -> Any:
    if "efSearch" in v.search:
        return faiss.SearchParametersHNSW(efSearch=int(v.search["efSearch"]))
    if "nprobe" in v.search:
        ivf = faiss.SearchParametersIVF(nprobe=int(v.search["nprobe"]))
        if "k_factor" in v.search:
            return faiss.IndexRefineSearchParameters(k_factor=float(v.search["k_factor"]), base_index_params=ivf)
        return ivf
    return None


def _sweep_values(index: Any, v: Variant) -> tuple[str, list[int]]:
    if "efSearch" in v.search:
        return "efSearch", [16, 32, 64, 128, 256, 512]
    if "nprobe" in v.search:
        nlist = int(faiss.extract_index_ivf(index).nlist)
        return "nprobe", sorted({p for p in (4, 8, 16, 32, 64, 128, 256, 512, 1024) if p <= nlist} | {nlist})
    return "", []


def _sweep(index: Any, v: Variant, q: np.ndarray, gt: np.ndarray, k: int, threads: int, nq_single: int,
           budget_s: float = 6.0) -> list[dict]:
    """Recall and query time of the built index at other search settings (nprobe / efSearch): operating points."""
    name, values = _sweep_values(index, v)
    out = []
    for val in values:
        vv = Variant(v.name, v.factory, {**v.search, name: val})
        params = _search_params(index, vv)
        faiss.omp_set_num_threads(threads)
        t0 = time.perf_counter()
        _, ids = index.search(q, k, params=params)
        batch = (time.perf_counter() - t0) * 1e3 / len(q)
        times = _single_query_ms(index, q, k, params, nq_single, budget_s, 10, threads)
        r1, r10 = _recalls(ids, gt, k)
        out.append({name: val, "recall_at_1": r1, "recall_at_10": r10,
                    "query_p50_ms": _percentile(times, 50), "batch_ms_per_query": batch, "single_queries": len(times)})
    return out


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _recalls(ids: np.ndarray, gt: np.ndarray, k: int) -> tuple[float, float]:
    """(recall@1, recall@k) of search results ``ids`` against exact results ``gt``."""
    r1 = float(np.mean(ids[:, 0] == gt[:, 0]))
    rk = float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(ids, gt)]))
    return r1, rk


def _single_query_ms(index, q: np.ndarray, k: int, params, n: int, budget_s: float, min_n: int,
                     threads: int) -> list[float]:
    """Milliseconds per single query on one thread (up to ``n`` queries or ``budget_s``, at least ``min_n``)."""
    faiss.omp_set_num_threads(1)
    times: list[float] = []
    t_end = time.perf_counter() + budget_s
    for i in range(min(n, len(q))):
        t0 = time.perf_counter()
        index.search(q[i:i + 1], k, params=params)
        times.append((time.perf_counter() - t0) * 1e3)
        if time.perf_counter() > t_end and len(times) >= min_n:
            break
    faiss.omp_set_num_threads(threads)
    return times


def _percentile(xs: Sequence[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), p)) if len(xs) else float("nan")


def run_variant(db: _DbFile, v: Variant, q: np.ndarray, gt: np.ndarray, src: np.ndarray, workdir: Path,
                threads: int, k: int = 10, single_queries: int = 200, single_budget_s: float = 15.0,
                max_build_s: float | None = None, trained: dict | None = None, sweep: bool = True) -> dict:
    """Build, measure and drop one index; returns its result row.

    ``trained`` caches trained empty indexes by factory string (without ``,RFlat``), so a refine variant reuses the
    training of its base variant (``train_shared_with`` in the row). ``sweep`` adds ``row["sweep"]``: recall and
    query time at other nprobe / efSearch values of the same built index.
    """
    row: dict[str, Any] = {"n": db.n, "variant": v.name, "factory": v.factory, "search": dict(v.search),
                           "build": dict(v.build)}
    faiss.omp_set_num_threads(threads)
    gc.collect()
    rss0 = _rss()
    base_factory = v.factory[:-len(",RFlat")] if v.factory.endswith(",RFlat") else v.factory
    cached = None if trained is None else trained.get(base_factory)
    if cached is not None:  # same base as an earlier variant: reuse its training (and its training time)
        index = faiss.deserialize_index(cached["index"])
        train_s = cached["train_s"]
        row.update(train_size=cached["train_size"], train_shared_with=cached["variant"])
    else:
        index = faiss.index_factory(db.dim, base_factory, faiss.METRIC_INNER_PRODUCT)
        _configure_build(index, v)
        train_s = 0.0
        if not index.is_trained:
            sample = db.sample(v.train_size or db.n, seed=1)
            t0 = time.perf_counter()
            index.train(sample)
            train_s = time.perf_counter() - t0
            row["train_size"] = len(sample)
            del sample
            if trained is not None:
                trained[base_factory] = {"index": faiss.serialize_index(index), "train_s": train_s,
                                         "train_size": row["train_size"], "variant": v.name}
    if base_factory != v.factory:
        base = index
        index = faiss.IndexRefineFlat(base)
        index.referenced_objects = [base]  # the refine index does not own its base: keep it alive
    add_s = 0.0
    added = 0
    for _, x in db.chunks():
        t0 = time.perf_counter()
        index.add(x)
        add_s += time.perf_counter() - t0
        added += len(x)
        if max_build_s is not None and added < db.n and (train_s + add_s * db.n / added) > max_build_s:
            row.update(skipped=f"projected build time {train_s + add_s * db.n / added:.0f} s > budget {max_build_s:.0f} s "
                               f"(after {added} vectors)", train_s=train_s, add_s=add_s)
            del index
            gc.collect()
            return row
    del x
    gc.collect()
    row.update(train_s=train_s, add_s=add_s, build_s=train_s + add_s, ram_delta_mb=(_rss() - rss0) / 2**20)
    path = workdir / f"{v.name}.faiss"
    faiss.write_index(index, str(path))
    row["index_file_bytes"] = path.stat().st_size
    row["bytes_per_tile"] = path.stat().st_size / db.n
    path.unlink()
    params = _search_params(index, v)
    # batch: all queries at once, all threads
    t0 = time.perf_counter()
    _, ids = index.search(q, k, params=params)
    row["batch_ms_per_query"] = (time.perf_counter() - t0) * 1e3 / len(q)
    row["threads"] = threads
    row["recall_at_1"], row["recall_at_10"] = _recalls(ids, gt, k)
    row["source_at_1"] = float(np.mean(ids[:, 0] == src))
    times = _single_query_ms(index, q, k, params, single_queries, single_budget_s, 20, threads)
    row.update(query_p50_ms=_percentile(times, 50), query_p90_ms=_percentile(times, 90), single_queries=len(times))
    if sweep:
        row["sweep"] = _sweep(index, v, q, gt, k, threads, min(single_queries, 100))
    del index
    gc.collect()
    return row


# ============================================================================ driver + report


def run_benchmark(
    out_dir: str | os.PathLike,
    sizes: Sequence[int] = DEFAULT_SIZES,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    spec: SynthSpec | None = None,
    nq: int = 1000,
    k: int = 10,
    threads: int | None = None,
    single_queries: int = 200,
    max_build_s: float | None = None,
    workdir: str | os.PathLike | None = None,
    quick: bool = False,
    log: Any = print,
    command: str = "",
    only_up_to: dict[str, int] | None = None,
) -> dict:
    """Run the benchmark; writes ``index_bench.json`` / ``.md`` / ``.png`` into ``out_dir`` and returns the JSON.

    The JSON is rewritten after every variant, so an interrupted run keeps what it measured. ``max_build_s`` skips
    a variant whose projected build time exceeds it (recorded as ``skipped``); ``only_up_to`` maps variant names
    to the largest size they run at.
    """
    spec = spec or SynthSpec()
    if nq < 1 or k < 1 or any(int(n) < max(k, 100) for n in sizes):
        raise ConfigError(f"need nq >= 1, k >= 1 and sizes >= max(k, 100); got nq={nq} k={k} sizes={list(sizes)}")
    threads = int(threads or os.cpu_count() or 1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gen = SyntheticVectors(spec)
    result: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
                    "threads": threads, "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                    "faiss": faiss.__version__, "numpy": np.__version__},
        "synthetic": asdict(spec), "nq": nq, "k": k, "goals": GOALS, "only_up_to": only_up_to or {}, "rows": [],
    }
    tmp = Path(tempfile.mkdtemp(prefix="gleam-bench-index-", dir=workdir))
    try:
        for n in sizes:
            n = int(n)
            t0 = time.perf_counter()
            db = _DbFile(gen, n, tmp / f"db_{n}.f32")
            src = np.sort(np.random.default_rng([spec.seed, 3, n]).choice(n, size=nq, replace=nq > n))
            q = gen.perturb(db.rows(src), seed=n)
            faiss.omp_set_num_threads(threads)
            tg = time.perf_counter()
            _, gt = exact_topk(db, q, k)
            gt_s = time.perf_counter() - tg
            result.setdefault("sizes", []).append({"n": n, "generate_s": db.gen_s, "ground_truth_s": gt_s,
                                                   "exact_source_at_1": float(np.mean(gt[:, 0] == src))})
            log(f"n={n}: data {db.gen_s:.1f} s, exact ground truth {gt_s:.1f} s "
                f"(exact search finds the source vector for {np.mean(gt[:, 0] == src):.3f} of queries)")
            trained: dict = {}
            for v in make_variants(n, spec.dim, variants, quick=quick):
                if only_up_to and v.name in only_up_to and n > only_up_to[v.name]:
                    continue
                row = run_variant(db, v, q, gt, src, tmp, threads, k=k, single_queries=single_queries,
                                  max_build_s=max_build_s, trained=trained)
                result["rows"].append(row)
                log("  " + _row_line(row))
                write_reports(result, out)
            db.path.unlink()
            log(f"n={n} done in {time.perf_counter() - t0:.0f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    write_reports(result, out)
    return result


def _row_line(r: dict) -> str:
    if "skipped" in r:
        return f"{r['variant']:<22} skipped: {r['skipped']}"
    return (f"{r['variant']:<22} build {r['build_s']:8.1f} s  p50 {r['query_p50_ms']:8.3f} ms  batch "
            f"{r['batch_ms_per_query']:7.3f} ms/q  R@1 {r['recall_at_1']:.3f}  R@10 {r['recall_at_10']:.3f}  "
            f"{r['bytes_per_tile']:7.0f} B/tile  RAM +{r['ram_delta_mb']:.0f} MB")


def markdown_table(result: dict) -> str:
    """The result rows as a markdown table (plus the machine line and the goals)."""
    m = result["machine"]
    g = result["goals"]
    lines = [
        f"Index scale benchmark ({result['created']}; {m['cpu_count']} CPUs, {m['threads']} threads for batch, "
        f"faiss {m['faiss']}; load average at start {m.get('loadavg_start')}).",
        f"Synthetic {result['synthetic']['dim']}-d clustered unit vectors; {result['nq']} queries = perturbed database "
        f"vectors; recall against exact inner-product search. Goals at {g['n']:,} tiles: query <= {g['query_ms']} ms, "
        f"recall@1 >= {g['recall_at_1']}, <= {g['bytes_per_tile']} bytes/tile.",
    ]
    for run in result.get("runs", []):
        lines.append(f"- run {run['created']} (load average at start {run.get('loadavg_start')}): "
                     f"sizes {run['sizes']}, `{run['command']}`")
    lines += [
        "",
        "| tiles | variant | factory | build s | query p50 ms (1 thread) | batch ms/query | recall@1 | recall@10 | "
        "source@1 | bytes/tile | RAM MB |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['n']:,} | {r['variant']} | `{r['factory']}` | skipped: {r['skipped']} | | | | | | | |")
            continue
        lines.append(
            f"| {r['n']:,} | {r['variant']} | `{r['factory']}` | {r['build_s']:.1f} | {r['query_p50_ms']:.3f} | "
            f"{r['batch_ms_per_query']:.3f} | {r['recall_at_1']:.3f} | {r['recall_at_10']:.3f} | {r['source_at_1']:.3f} | "
            f"{r['bytes_per_tile']:.0f} | {r['ram_delta_mb']:.0f} |"
        )
    sw = [r for r in result["rows"] if r.get("sweep")]
    if sw:
        lines += ["", "Operating points of the same built indexes (search setting swept; query p50 single thread):", "",
                  "| tiles | variant | setting | recall@1 | recall@10 | query p50 ms | batch ms/query |",
                  "|---:|---|---|---:|---:|---:|---:|"]
        for r in sw:
            for p in r["sweep"]:
                key = "nprobe" if "nprobe" in p else "efSearch"
                lines.append(f"| {r['n']:,} | {r['variant']} | {key}={p[key]} | {p['recall_at_1']:.3f} | "
                             f"{p['recall_at_10']:.3f} | {p['query_p50_ms']:.3f} | {p['batch_ms_per_query']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> Path | None:
    """Query time, recall@1 and bytes per tile against the number of tiles, one line per variant."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [r for r in result["rows"] if "skipped" not in r]
    if not rows:
        return None
    fig, axes = plt.subplots(1, 4, figsize=(21, 4.8))
    g = result["goals"]
    for name in dict.fromkeys(r["variant"] for r in rows):
        rs = sorted((r for r in rows if r["variant"] == name), key=lambda r: r["n"])
        ns = [r["n"] for r in rs]
        axes[0].plot(ns, [r["query_p50_ms"] for r in rs], "o-", label=name)
        axes[1].plot(ns, [r["recall_at_1"] for r in rs], "o-", label=name)
        axes[2].plot(ns, [r["bytes_per_tile"] for r in rs], "o-", label=name)
    axes[0].axhline(g["query_ms"], color="k", ls=":", lw=1)
    axes[1].axhline(g["recall_at_1"], color="k", ls=":", lw=1)
    axes[2].axhline(g["bytes_per_tile"], color="k", ls=":", lw=1)
    for ax, title, log_y in ((axes[0], "query p50, 1 thread (ms)", True), (axes[1], "recall@1 vs exact", False),
                             (axes[2], "bytes per tile (index file / n)", True)):
        ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("tiles")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    n_max = max(r["n"] for r in rows)
    for r in (r for r in rows if r["n"] == n_max):
        pts = r.get("sweep") or [{"query_p50_ms": r["query_p50_ms"], "recall_at_1": r["recall_at_1"]}]
        axes[3].plot([p["query_p50_ms"] for p in pts], [p["recall_at_1"] for p in pts], "o-", label=r["variant"])
    axes[3].axhline(g["recall_at_1"], color="k", ls=":", lw=1)
    axes[3].axvline(g["query_ms"], color="k", ls=":", lw=1)
    axes[3].set_xscale("log")
    axes[3].set_xlabel("query p50 ms (1 thread)")
    axes[3].set_title(f"recall@1 vs query p50 at {n_max:,} tiles (sweep)")
    axes[3].grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"gleam bench index ({result['machine']['cpu_count']} CPUs; dotted: goals at 1M tiles)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def combine_results(results: Sequence[dict]) -> dict:
    """One report from several runs (e.g. the small sizes and 1M run separately): rows in order, runs listed.

    An input that is itself a combined report contributes the runs it lists."""
    if not results:
        raise ConfigError("no results to combine")
    out = dict(results[-1])
    out["rows"] = [r for res in results for r in res["rows"]]
    out["sizes"] = [s for res in results for s in res.get("sizes", [])]
    out["runs"] = [run for res in results for run in (res.get("runs") or [
        {"created": res["created"], "command": res.get("command", ""), "machine": res["machine"],
         "loadavg_start": res["machine"].get("loadavg_start"), "loadavg_end": res.get("loadavg_end"),
         "sizes": sorted({r["n"] for r in res["rows"]})}])]
    return out


def write_reports(result: dict, out: Path) -> dict[str, Path]:
    """Write ``index_bench.json``, ``index_bench.md`` and (with matplotlib) ``index_bench.png``."""
    out = Path(out)
    paths = {"json": out / "index_bench.json", "md": out / "index_bench.md"}
    tmp = out / "index_bench.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=float) + "\n")
    os.replace(tmp, paths["json"])
    paths["md"].write_text(markdown_table(result))
    png = plot(result, out / "index_bench.png")
    if png is not None:
        paths["png"] = png
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gleam_ros.core.bench_index [options]``: the same as ``gleam bench index [options]``."""
    import sys

    from ..cli import main as cli_main

    return cli_main(["bench", "index", *(sys.argv[1:] if argv is None else argv)])


def run_from_args(a: Any, command: str = "", log: Any = print) -> dict:
    """Run the benchmark from the parsed options of ``gleam bench index``."""
    sizes = [int(float(s)) for s in a.sizes.split(",")] if a.sizes else list(QUICK_SIZES if a.quick else DEFAULT_SIZES)
    variants = [v.strip() for v in a.variants.split(",")] if a.variants else list(DEFAULT_VARIANTS)
    spec = SynthSpec(dim=int(a.dim), seed=int(a.seed), latent_rank=min(128, int(a.dim)))
    nq = min(int(a.nq), 200) if a.quick and a.nq == 1000 else int(a.nq)
    only: dict[str, int] = {}
    for item in filter(None, (getattr(a, "only_up_to", None) or "").split(",")):
        name, _, lim = item.partition("=")
        try:
            only[name.strip()] = int(float(lim))
        except ValueError:
            raise ConfigError(f"--only-up-to wants NAME=N[,NAME=N], got {item!r}") from None
    res = run_benchmark(a.out, sizes=sizes, variants=variants, spec=spec, nq=nq, threads=a.threads,
                        single_queries=a.single_queries, max_build_s=a.max_build_s, workdir=a.workdir, quick=a.quick,
                        log=log, command=command, only_up_to=only)
    log(markdown_table(res))
    log(f"results: {Path(a.out) / 'index_bench.json'}, index_bench.md, index_bench.png")
    return res


if __name__ == "__main__":
    raise SystemExit(main())
