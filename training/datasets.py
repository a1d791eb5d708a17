"""Cross-view data sets: readers for published layouts, the pair data set and its augmentation.

Every reader returns a :class:`SourceData`: training :class:`Pair` s (query view, satellite view, a
*label* naming the place; pairs with the same label share their positive) and evaluation
:class:`RetrievalSet` s (queries, gallery, positives per query). Labels are prefixed with the
data set name so that sets can be mixed. Layouts (``root`` is the folder given in the config):

``university1652`` (University-1652, Zheng et al. 2020; ``University-Release``)::

    train/drone/<id>/*.jpeg      train/satellite/<id>/<id>.jpg      train/street/<id>/*.jpg
    test/query_drone/<id>/*      test/gallery_satellite/<id>/*      (drone -> satellite)
    test/query_satellite/<id>/*  test/gallery_drone/<id>/*          (satellite -> drone)
    test/query_street/<id>/*     test/gallery_street/<id>/*         (with modalities: [uav, ground])

  Building ``<id>`` is the label; ``modalities`` picks drone (``uav``) and/or street (``ground``) queries.

``vigor`` (VIGOR, Zhu et al. 2021)::

    <City>/panorama/<pano>.jpg   <City>/satellite/<sat>.png   (City: Chicago NewYork SanFrancisco Seattle)
    splits/<City>/satellite_list.txt                 one satellite file name per line
    splits/<City>/same_area_balanced_train.txt       same-area training panoramas
    splits/<City>/same_area_balanced_test.txt        same-area test panoramas
    splits/<City>/pano_label_balanced.txt            all panoramas of the city (cross-area splits)

  A split line is ``pano sat dx dy sat_sp1 dx dy sat_sp2 dx dy sat_sp3 dx dy`` (whitespace separated):
  the positive satellite, then three semi-positives, each with the panorama's pixel offset from the
  tile centre. ``split: same_area`` trains on ``same_area_balanced_train`` of every city and tests on
  ``same_area_balanced_test`` against all cities' satellites; ``cross_area`` trains on all panoramas of
  Chicago + NewYork and tests on SanFrancisco + Seattle against their satellites (as Sample4Geo reads it).

``cvusa`` (CVUSA, the 35,532 / 8,884 subset of CVM-Net)::

    splits/train-19zl.csv  splits/val-19zl.csv     lines ``bingmap/19/0000001.jpg,streetview/panos/0000001.jpg[,annotations/...]``

``cvact`` (CVACT): ``splits/train.csv`` / ``splits/val.csv`` in the CVUSA line format (satellite, panorama,
relative paths), or the release's ``ACT_data.mat`` (``panoIds``; 1-based indices ``trainSet.trainInd`` and
``valSet.valInd``) with ``ANU_data_small/streetview/<id>_grdView.jpg`` and
``ANU_data_small/satview_polish/<id>_satView_polish.jpg`` (``.png`` accepted too).

``pairs_folder`` (e.g. street-map <-> satellite): ``[train|test]/<query_dir>/<stem>.<ext>`` paired with
``[train|test]/satellite/<stem>.<ext>`` (without ``train``/``test`` sub-folders everything is training data).

``pairs_csv`` (e.g. ground photo <-> satellite): ``train.csv`` / ``test.csv`` with a header and columns
``query,satellite[,label][,modality][,heading_deg]``; paths relative to the CSV's folder; a missing
``label`` is the satellite path (photos of the same tile are positives of each other).

``simulated``: camera-simulator views vs their tiles over procedural worlds or real maps, see
:mod:`training.simdata`.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from gleam_ros.core.errors import ConfigError, InputError
from gleam_ros.core.preprocess import MODALITIES, PreprocessConfig, prepare, rotated_square
from gleam_ros.core.sim.camera_sim import apply_photometric, random_photometric

from .config import AugmentConfig

__all__ = [
    "IMAGE_EXTS",
    "READERS",
    "Pair",
    "PairDataset",
    "RetrievalSet",
    "SourceData",
    "augment_pair",
    "build_source",
    "collate_pairs",
    "read_cvact",
    "read_cvusa",
    "read_pairs_csv",
    "read_pairs_folder",
    "read_rgb",
    "read_university1652",
    "read_vigor",
    "tta_side",
]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIGOR_CITIES = ("Chicago", "NewYork", "SanFrancisco", "Seattle")


@dataclass(frozen=True)
class Pair:
    """One training pair: a query view and the satellite view of the same place.

    ``heading_deg``: the query camera's heading (clockwise from north), when known; augmentation then
    aligns the query with the north-up reference as the test-time yaw hypotheses would.
    """

    query: str
    ref: str
    modality: str
    label: str
    ref_modality: str = "satellite"
    dataset: str = ""
    heading_deg: float | None = None


@dataclass
class RetrievalSet:
    """An evaluation set: ``queries`` are matched against ``gallery``; ``positives[i]`` are gallery indices.

    ``semi`` (VIGOR semi-positives) stay negatives for R@K and AP but count for ``hit_rate``; ``junk``
    gallery items are ignored for that query. ``reverse``: also evaluate gallery -> query.
    """

    name: str
    query_modality: str
    gallery_modality: str
    queries: list[str]
    gallery: list[str]
    positives: list[np.ndarray]
    semi: list[np.ndarray] | None = None
    junk: list[np.ndarray] | None = None
    reverse: bool = True

    def __post_init__(self) -> None:
        if len(self.positives) != len(self.queries):
            raise InputError(f"retrieval set {self.name}: {len(self.queries)} queries but {len(self.positives)} positive lists")
        self.positives = [np.asarray(p, dtype=np.int64).reshape(-1) for p in self.positives]

    def reversed(self) -> RetrievalSet:
        """The gallery -> query direction: gallery items with a positive become queries, with the queries
        that listed them as positives (semi-positive / junk mentions become junk)."""
        pos: dict[int, list[int]] = {}
        junk: dict[int, list[int]] = {}
        for i, p in enumerate(self.positives):
            for g in p.tolist():
                pos.setdefault(g, []).append(i)
        for lists in (self.semi, self.junk):
            for i, p in enumerate(lists or []):
                for g in np.asarray(p).reshape(-1).tolist():
                    junk.setdefault(g, []).append(i)
        keys = sorted(pos)
        return RetrievalSet(
            name=self.name, query_modality=self.gallery_modality, gallery_modality=self.query_modality,
            queries=[self.gallery[g] for g in keys], gallery=list(self.queries),
            positives=[np.array(pos[g]) for g in keys],
            junk=[np.array(sorted(set(junk.get(g, [])) - set(pos[g])), dtype=np.int64) for g in keys],
            reverse=False,
        )

    def subset(self, max_queries: int | None, seed: int = 0) -> RetrievalSet:
        """At most ``max_queries`` queries (a seeded random subset, in original order); the gallery is kept."""
        if max_queries is None or len(self.queries) <= max_queries:
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self.queries), max_queries, replace=False))
        pick = lambda xs: None if xs is None else [xs[i] for i in keep]  # noqa: E731
        return replace(self, queries=pick(self.queries), positives=pick(self.positives), semi=pick(self.semi),
                       junk=pick(self.junk))


@dataclass
class SourceData:
    """What a reader found: training pairs and evaluation sets."""

    name: str
    train: list[Pair] = field(default_factory=list)
    eval: list[RetrievalSet] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- helpers


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as an RGB uint8 array (:class:`InputError` naming the file when unreadable)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"{path}: cannot read image (missing, corrupt or unsupported format)")
    return np.ascontiguousarray(img[:, :, ::-1])


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def _id_folders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir())


def _require_dir(root: Any, what: str) -> Path:
    if root is None:
        raise ConfigError(f"{what}: 'root' is required")
    p = Path(root).expanduser()
    if not p.is_dir():
        raise ConfigError(f"{what}: root folder not found: {p}")
    return p


def _check_modalities(mods: Any, allowed: Sequence[str], what: str) -> list[str]:
    mods = [mods] if isinstance(mods, str) else list(mods)
    bad = [m for m in mods if m not in allowed]
    if bad or not mods:
        raise ConfigError(f"{what}: modalities must be a non-empty subset of {list(allowed)}, got {mods}")
    return mods


def _labelled_set(name: str, qmod: str, gmod: str, queries: list[tuple[str, str]], gallery: list[tuple[str, str]],
                  reverse: bool) -> RetrievalSet | None:
    """Retrieval set from (path, label) lists; positives = gallery items with the query's label."""
    if not queries or not gallery:
        return None
    by_label: dict[str, list[int]] = {}
    for j, (_, lab) in enumerate(gallery):
        by_label.setdefault(lab, []).append(j)
    return RetrievalSet(
        name=name, query_modality=qmod, gallery_modality=gmod, queries=[q for q, _ in queries],
        gallery=[g for g, _ in gallery], positives=[np.array(by_label.get(lab, []), dtype=np.int64) for _, lab in queries],
        reverse=reverse,
    )


# --------------------------------------------------------------------------------------------- readers


def read_university1652(root: Any, name: str = "university1652", modalities: Any = ("uav",)) -> SourceData:
    """University-1652: drone (``uav``) and/or street (``ground``) views of buildings vs their satellite image."""
    r = _require_dir(root, f"datasets.{name}")
    mods = _check_modalities(modalities, ("uav", "ground"), f"datasets.{name}")
    folders = {"uav": "drone", "ground": "street"}
    out = SourceData(name)
    sats = {}
    for d in _id_folders(r / "train" / "satellite"):
        imgs = _images(d)
        if imgs:
            sats[d.name] = str(imgs[0])
    for m in mods:
        for d in _id_folders(r / "train" / folders[m]):
            if d.name not in sats:
                continue
            for img in _images(d):
                out.train.append(Pair(str(img), sats[d.name], m, f"{name}:{d.name}", dataset=name))

    def labelled(sub: str) -> list[tuple[str, str]]:
        return [(str(img), d.name) for d in _id_folders(r / "test" / sub) for img in _images(d)]

    for m in mods:
        f = folders[m]
        for s in (
            _labelled_set(name, m, "satellite", labelled(f"query_{f}"), labelled("gallery_satellite"), reverse=False),
            _labelled_set(name, "satellite", m, labelled("query_satellite"), labelled(f"gallery_{f}"), reverse=False),
        ):
            if s is not None:
                out.eval.append(s)
    if not out.train and not out.eval:
        raise ConfigError(f"datasets.{name}: no University-1652 data under {r} (expected train/drone, "
                          "train/satellite, test/query_drone, test/gallery_satellite ...)")
    return out


def _read_table(path: Path, sep: str | None) -> list[list[str]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            rows.append([c.strip() for c in (line.split(sep) if sep else line.split())])
    return rows


def read_vigor(root: Any, name: str = "vigor", split: str = "same_area", train_cities: Any = None,
               test_cities: Any = None) -> SourceData:
    """VIGOR: panoramas vs satellite tiles with positives and semi-positives, same-area or cross-area split."""
    r = _require_dir(root, f"datasets.{name}")
    if split not in ("same_area", "cross_area"):
        raise ConfigError(f"datasets.{name}.split must be same_area or cross_area, got {split!r}")
    if split == "same_area":
        train_c = list(train_cities or VIGOR_CITIES)
        test_c = list(test_cities or train_c)
        train_file, test_file = "same_area_balanced_train.txt", "same_area_balanced_test.txt"
    else:
        train_c = list(train_cities or VIGOR_CITIES[:2])
        test_c = list(test_cities or VIGOR_CITIES[2:])
        train_file = test_file = "pano_label_balanced.txt"

    def sat_list(cities: list[str]) -> tuple[list[str], dict[tuple[str, str], int]]:
        paths, index = [], {}
        for c in cities:
            f = r / "splits" / c / "satellite_list.txt"
            if not f.is_file():
                raise ConfigError(f"datasets.{name}: {f} not found (VIGOR layout: splits/<City>/satellite_list.txt)")
            for row in _read_table(f, None):
                index[(c, row[0])] = len(paths)
                paths.append(str(r / c / "satellite" / row[0]))
        return paths, index

    def pano_rows(cities: list[str], fname: str) -> list[tuple[str, list[str]]]:
        rows = []
        for c in cities:
            f = r / "splits" / c / fname
            if not f.is_file():
                raise ConfigError(f"datasets.{name}: {f} not found")
            for row in _read_table(f, None):
                if len(row) < 2:
                    raise ConfigError(f"{f}: line {row!r} has fewer than 2 fields")
                sats = [row[k] for k in (1, 4, 7, 10) if k < len(row)]
                rows.append((c, [row[0], *sats]))
        return rows

    out = SourceData(name)
    for c, row in pano_rows(train_c, train_file):
        out.train.append(Pair(str(r / c / "panorama" / row[0]), str(r / c / "satellite" / row[1]), "panorama",
                              f"{name}:{c}/{row[1]}", dataset=name))
    gallery, index = sat_list(test_c)
    queries, pos, semi = [], [], []
    for c, row in pano_rows(test_c, test_file):
        if (c, row[1]) not in index:
            raise ConfigError(f"datasets.{name}: satellite {c}/{row[1]} of panorama {row[0]} is not in satellite_list.txt")
        queries.append(str(r / c / "panorama" / row[0]))
        pos.append(np.array([index[(c, row[1])]]))
        semi.append(np.array([index[(c, s)] for s in row[2:] if (c, s) in index], dtype=np.int64))
    if queries:
        out.eval.append(RetrievalSet(f"{name}/{split}", "panorama", "satellite", queries, gallery, pos, semi=semi))
    return out


def _csv_pairs(root: Path, csv_path: Path, name: str, qmod: str) -> list[tuple[str, str]]:
    """(satellite, ground) absolute paths of a CVUSA-style CSV (satellite first, then the ground view)."""
    pairs = []
    for row in _read_table(csv_path, ","):
        if len(row) < 2:
            raise ConfigError(f"{csv_path}: line {row!r} needs satellite,{qmod} paths")
        pairs.append((str(root / row[0]), str(root / row[1])))
    return pairs


def _pano_source(name: str, train: list[tuple[str, str]], test: list[tuple[str, str]]) -> SourceData:
    out = SourceData(name)
    for sat, pano in train:
        out.train.append(Pair(pano, sat, "panorama", f"{name}:{sat}", dataset=name))
    if test:
        sats = sorted({s for s, _ in test})
        idx = {s: i for i, s in enumerate(sats)}
        out.eval.append(RetrievalSet(f"{name}/val", "panorama", "satellite", [p for _, p in test], sats,
                                     [np.array([idx[s]]) for s, _ in test]))
    return out


def read_cvusa(root: Any, name: str = "cvusa", train_csv: str = "splits/train-19zl.csv",
               val_csv: str = "splits/val-19zl.csv") -> SourceData:
    """CVUSA: ``bingmap/19/*.jpg`` satellite vs ``streetview/panos/*.jpg`` panoramas from the CSV splits."""
    r = _require_dir(root, f"datasets.{name}")
    tr, va = r / train_csv, r / val_csv
    if not tr.is_file() and not va.is_file():
        raise ConfigError(f"datasets.{name}: neither {tr} nor {va} exists (CVUSA layout: splits/train-19zl.csv)")
    train = _csv_pairs(r, tr, name, "panorama") if tr.is_file() else []
    test = _csv_pairs(r, va, name, "panorama") if va.is_file() else []
    return _pano_source(name, train, test)


def read_cvact(root: Any, name: str = "cvact", train_csv: str = "splits/train.csv", val_csv: str = "splits/val.csv",
               mat: str = "ACT_data.mat") -> SourceData:
    """CVACT: CSV splits (CVUSA line format) or the release's ``ACT_data.mat`` with ``ANU_data_small/``."""
    r = _require_dir(root, f"datasets.{name}")
    tr, va = r / train_csv, r / val_csv
    if tr.is_file() or va.is_file():
        train = _csv_pairs(r, tr, name, "panorama") if tr.is_file() else []
        test = _csv_pairs(r, va, name, "panorama") if va.is_file() else []
        return _pano_source(name, train, test)
    m = r / mat
    if not m.is_file():
        raise ConfigError(f"datasets.{name}: found neither {tr} / {va} nor {m}")
    try:
        import scipy.io as sio
    except ImportError:
        raise ConfigError(f"datasets.{name}: reading {m} needs scipy (or provide CSV splits)") from None
    try:
        data = sio.loadmat(str(m))
        raw = np.asarray(data["panoIds"])
        ids = [str(v).strip() for v in raw.reshape(-1)] if raw.dtype.kind == "U" else \
            [str(np.asarray(v).reshape(-1)[0]).strip() for v in raw.reshape(-1)]

        def split_ids(key: str, field: str) -> list[str]:
            st = data[key]
            ind = st[field][0][0] if field in (st.dtype.names or ()) else st[0][0][1]  # Sample4Geo reads field 1
            return [ids[int(i) - 1] for i in np.asarray(ind).reshape(-1)]

        train_ids, val_ids = split_ids("trainSet", "trainInd"), split_ids("valSet", "valInd")
    except (KeyError, IndexError, ValueError, TypeError, OSError) as exc:
        raise ConfigError(f"{m}: not a CVACT ACT_data.mat (panoIds, trainSet.trainInd, valSet.valInd): {exc}") from None

    def img(folder: str, stem: str) -> str:
        p = r / "ANU_data_small" / folder / f"{stem}.jpg"
        return str(p if p.is_file() or not p.with_suffix(".png").is_file() else p.with_suffix(".png"))

    def pairs(ids_: list[str]) -> list[tuple[str, str]]:
        return [(img("satview_polish", f"{i}_satView_polish"), img("streetview", f"{i}_grdView")) for i in ids_]

    return _pano_source(name, pairs(train_ids), pairs(val_ids))


def read_pairs_folder(root: Any, name: str = "pairs", query_dir: str = "map", query_modality: str = "map",
                      ref_dir: str = "satellite") -> SourceData:
    """A folder of pairs: ``[train|test]/<query_dir>/<stem>.*`` with ``[train|test]/<ref_dir>/<stem>.*``."""
    r = _require_dir(root, f"datasets.{name}")
    _check_modalities([query_modality], MODALITIES, f"datasets.{name}.query_modality")

    def scan(base: Path) -> list[tuple[str, str, str]]:
        refs = {p.stem: str(p) for p in _images(base / ref_dir)}
        return [(str(q), refs[q.stem], q.stem) for q in _images(base / query_dir) if q.stem in refs]

    has_split = (r / "train").is_dir() or (r / "test").is_dir()
    train = scan(r / "train") if has_split else scan(r)
    test = scan(r / "test") if has_split else []
    if not train and not test:
        raise ConfigError(f"datasets.{name}: no pairs under {r} (expected {query_dir}/<stem>.png next to {ref_dir}/<stem>.png)")
    out = SourceData(name, [Pair(q, s, query_modality, f"{name}:{stem}", dataset=name) for q, s, stem in train])
    if test:
        s = _labelled_set(name, query_modality, "satellite",
                          [(q, stem) for q, _, stem in test], [(g, stem) for _, g, stem in test], reverse=True)
        out.eval.append(s)
    return out


def _read_pairs_csv_file(path: Path, name: str, default_modality: str) -> list[Pair]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        if "query" not in cols or "satellite" not in cols:
            raise ConfigError(f"{path}: needs a header with 'query' and 'satellite' columns, got {cols}")
        out = []
        for k, row in enumerate(reader):
            row = {(a or "").strip(): (b or "").strip() for a, b in row.items()}
            mod = row.get("modality") or default_modality
            if mod not in MODALITIES:
                raise ConfigError(f"{path}: row {k + 2}: unknown modality {mod!r}")
            sat = str(path.parent / row["satellite"])
            head = row.get("heading_deg")
            out.append(Pair(str(path.parent / row["query"]), sat, mod, f"{name}:{row.get('label') or row['satellite']}",
                            dataset=name, heading_deg=float(head) if head not in (None, "") else None))
    return out


def read_pairs_csv(root: Any = None, name: str = "pairs_csv", train_csv: str | None = None, test_csv: str | None = None,
                   modality: str = "ground") -> SourceData:
    """Ground photos (or any modality) vs satellite from CSVs with a ``query,satellite[,label,modality,heading_deg]`` header."""
    _check_modalities([modality], MODALITIES, f"datasets.{name}.modality")
    base = Path(root).expanduser() if root is not None else Path(".")
    tr = Path(train_csv) if train_csv else base / "train.csv"
    te = Path(test_csv) if test_csv else base / "test.csv"
    if train_csv and not tr.is_absolute():
        tr = base / tr
    if test_csv and not te.is_absolute():
        te = base / te
    if not tr.is_file() and not te.is_file():
        raise ConfigError(f"datasets.{name}: neither {tr} nor {te} exists")
    out = SourceData(name, _read_pairs_csv_file(tr, name, modality) if tr.is_file() else [])
    if te.is_file():
        test = _read_pairs_csv_file(te, name, modality)
        for mod in sorted({p.modality for p in test}):
            sub = [p for p in test if p.modality == mod]
            gal = sorted({(p.ref, p.label) for p in test})
            s = _labelled_set(name, mod, "satellite", [(p.query, p.label) for p in sub],
                              [(g, lab) for g, lab in gal], reverse=True)
            out.eval.append(s)
    return out


def _read_simulated(name: str = "simulated", **spec: Any) -> SourceData:
    from .simdata import read_simulated_source

    return read_simulated_source(name, spec)


READERS: dict[str, Callable[..., SourceData]] = {
    "university1652": read_university1652,
    "vigor": read_vigor,
    "cvusa": read_cvusa,
    "cvact": read_cvact,
    "pairs_folder": read_pairs_folder,
    "pairs_csv": read_pairs_csv,
    "simulated": _read_simulated,
}


def build_source(name: str, spec: dict) -> SourceData:
    """Read data set ``name`` described by its config mapping (``type`` picks the reader; other keys are its arguments)."""
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in READERS:
        raise ConfigError(f"datasets.{name}.type must be one of {sorted(READERS)}, got {kind!r}")
    try:
        return READERS[kind](name=name, **spec)
    except TypeError as exc:
        m = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if m:
            raise ConfigError(f"datasets.{name}: unknown key {m.group(1)!r} for type {kind}") from None
        raise


# ---------------------------------------------------------------------------------------- augmentation


def tta_side(h: int, w: int, n_rot: int) -> int:
    """Square side that :func:`gleam_ros.core.encoder.embed_rotations` crops for ``n_rot`` yaw hypotheses."""
    angles = [k * 360.0 / n_rot for k in range(n_rot)]
    return min(math.floor(min(h, w) / (abs(math.cos(math.radians(a))) + abs(math.sin(math.radians(a)))) + 1e-6)
               for a in angles)


def _derotate(img: np.ndarray, heading: float, mode: str, n_rot: int) -> np.ndarray:
    """Rotate a nadir view taken at ``heading`` towards north up (``rotated_square(img, a)`` shows heading + a)."""
    a = (-float(heading)) % 360.0
    if mode == "tta":
        step = 360.0 / n_rot
        a = (round(a / step) * step) % 360.0
        side = tta_side(img.shape[0], img.shape[1], n_rot)
    else:
        side = tta_side(img.shape[0], img.shape[1], 8)
    return rotated_square(img, a, side=side)


def augment_pair(q: np.ndarray, r: np.ndarray, pair: Pair, aug: AugmentConfig,
                 rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
    """Augment one (query, reference) RGB pair; ``rng=None`` gives the deterministic evaluation view.

    Nadir queries (uav, map, satellite) with a known heading are first aligned (``aug.derotate``). With an
    ``rng``: joint flip, joint 90-degree rotation (a panorama rolls by the same angle: rotating a nadir view
    by ``a`` counter-clockwise shows it as if the heading were ``a`` further clockwise, which for an
    equirectangular panorama is a roll left by ``a / 360`` of its width), photometric changes.
    """
    nadir = pair.modality in ("uav", "map", "satellite")
    if pair.heading_deg is not None and nadir and aug.derotate != "none":
        q = _derotate(q, pair.heading_deg, aug.derotate, aug.n_rot)
    if rng is None:
        return q, r
    u = rng.random(3)
    k = int(rng.integers(1, 4))
    if u[0] < aug.flip:
        q, r = q[:, ::-1], r[:, ::-1]
    if u[1] < aug.rot90 and pair.modality != "ground":
        r = np.rot90(r, k)
        if pair.modality == "panorama":
            q = np.roll(q, -round(k * q.shape[1] / 4), axis=1)
        else:
            q = np.rot90(q, k)
    q = np.ascontiguousarray(q)
    r = np.ascontiguousarray(r)
    pq = random_photometric(rng, aug.photometric)  # always draws, so streams stay aligned across strengths
    pr = random_photometric(rng, aug.ref_photometric)
    if not pq.is_identity:
        q = apply_photometric(q, pq, rng)
    if not pr.is_identity:
        r = apply_photometric(r, pr, rng)
    return q, r


class PairDataset(Dataset):
    """Training pairs as tensors: item ``(index, seed)`` -> augmented, preprocessed query and reference.

    ``seed=None`` (or a plain integer index) gives the un-augmented view (mining, evaluation). The
    preprocessing is :func:`gleam_ros.core.preprocess.prepare` with the model card's settings.
    """

    def __init__(self, pairs: Sequence[Pair], preprocess: PreprocessConfig, augment: AugmentConfig | None = None) -> None:
        self.pairs = list(pairs)
        self.cfg = preprocess
        self.augment = augment or AugmentConfig()
        names = sorted({p.label for p in self.pairs})
        index = {n: i for i, n in enumerate(names)}
        self.label_names = names
        self.labels = np.array([index[p.label] for p in self.pairs], dtype=np.int64)
        self.modalities = [p.modality for p in self.pairs]

    def __len__(self) -> int:
        """Number of pairs."""
        return len(self.pairs)

    def __getitem__(self, key: Any) -> dict:
        """``key`` = index or ``(index, seed)``; returns a dict with q, r (tensors), qm, rm, label, index."""
        if isinstance(key, (tuple, list)):
            idx, seed = int(key[0]), key[1]
        else:
            idx, seed = int(key), None
        p = self.pairs[idx]
        q, r = read_rgb(p.query), read_rgb(p.ref)
        rng = None if seed is None or int(seed) < 0 else np.random.default_rng(int(seed))
        q, r = augment_pair(q, r, p, self.augment, rng)
        return {
            "q": torch.from_numpy(prepare(q, p.modality, self.cfg, name=p.query)),
            "r": torch.from_numpy(prepare(r, p.ref_modality, self.cfg, name=p.ref)),
            "qm": p.modality,
            "rm": p.ref_modality,
            "label": int(self.labels[idx]),
            "index": idx,
        }


def collate_pairs(items: list[dict]) -> dict:
    """Batch of :class:`PairDataset` items: lists of tensors (shapes may differ by modality) plus label/index tensors."""
    return {
        "q": [it["q"] for it in items],
        "r": [it["r"] for it in items],
        "qm": [it["qm"] for it in items],
        "rm": [it["rm"] for it in items],
        "label": torch.tensor([it["label"] for it in items], dtype=torch.int64),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.int64),
    }
