"""rosbag2 files through ``rosbags`` (pure Python, no ROS needed): type store, reader, writer.

A bag is either a rosbag2 directory (``metadata.yaml`` + one storage file, what ``ros2 bag record``
writes) or a single storage file (``.mcap`` or ``.db3``; ``ros2 bag play`` reads both). Every
problem with a bag raises :class:`BagError` naming the path, so the CLI prints one line and exits 2.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from ..core.errors import InputError
from . import FLIGHT_INFO_TOPIC

STORAGES = ("mcap", "sqlite3")
_SUFFIX = {".mcap": "mcap", ".db3": "sqlite3"}
PACKAGE = "gleam_ros"


class BagError(InputError):
    """A bag is missing, unreadable, empty, or lacks what the command needs."""


# ----------------------------------------------------------------------------------------- type store


def msg_dirs(package: str = PACKAGE) -> list[Path]:
    """Folders holding ``package``'s ``.msg`` files: the source checkout's ``msg/``, then every
    ``<prefix>/share/<package>/msg`` on AMENT_PREFIX_PATH and the install prefix of this checkout."""
    out: list[Path] = []
    if package == PACKAGE:
        out.append(Path(__file__).resolve().parents[2] / "msg")
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if package == PACKAGE:
        from .. import ros_env

        pre = ros_env.install_prefix()
        if pre is not None:
            prefixes.append(str(pre))
    out += [Path(p) / "share" / package / "msg" for p in prefixes]
    seen, uniq = set(), []
    for d in out:
        if d.is_dir() and d.resolve() not in seen:
            seen.add(d.resolve())
            uniq.append(d)
    return uniq


@lru_cache(maxsize=1)
def typestore():
    """The rosbags type store: ROS 2 Kilted's standard messages plus this package's messages."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    for d in msg_dirs(PACKAGE):
        files = sorted(d.glob("*.msg"))
        if files:
            _register(store, {f"{PACKAGE}/msg/{p.stem}": p.read_text() for p in files})
            break
    return store


def _register(store, texts: dict[str, str]) -> None:
    from rosbags.typesys import get_types_from_msg

    types: dict = {}
    for name, text in texts.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)


def ensure_type(msgtype: str):
    """The type store, with ``msgtype`` ('pkg/msg/Name') registered; looks up unknown packages'
    ``.msg`` files under AMENT_PREFIX_PATH. Raises BagError when the definition cannot be found."""
    store = typestore()
    if msgtype in store.types:
        return store
    parts = msgtype.split("/")
    if len(parts) == 3 and parts[1] == "msg":
        for d in msg_dirs(parts[0]):
            files = sorted(d.glob("*.msg"))
            if (d / f"{parts[2]}.msg").is_file():
                _register(store, {f"{parts[0]}/msg/{p.stem}": p.read_text() for p in files})
                break
    if msgtype not in store.types:
        raise BagError(f"no message definition for type {msgtype} (not a ROS 2 Kilted standard type, and no "
                       f"share/{parts[0]}/msg/*.msg on AMENT_PREFIX_PATH)")
    return store


def serialize(msg, msgtype: str) -> bytes:
    """CDR bytes (with the 4-byte encapsulation header) of a rosbags message object."""
    return bytes(typestore().serialize_cdr(msg, msgtype))


def deserialize(data: bytes, msgtype: str):
    """A rosbags message object from CDR bytes."""
    return ensure_type(msgtype).deserialize_cdr(data, msgtype)


def header_stamp_ns(data: bytes) -> int | None:
    """``header.stamp`` in ns of a CDR message whose first field is a std_msgs/Header, else None."""
    if len(data) < 12 or data[0] != 0:
        return None
    fmt = "<iI" if data[1] & 1 else ">iI"
    sec, nsec = struct.unpack_from(fmt, data, 4)
    return sec * 1_000_000_000 + nsec


def stamp(ns: int):
    """A builtin_interfaces/Time rosbags object for ``ns`` nanoseconds."""
    t = typestore().types["builtin_interfaces/msg/Time"]
    return t(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def header(ns: int, frame_id: str):
    """A std_msgs/Header rosbags object."""
    return typestore().types["std_msgs/msg/Header"](stamp=stamp(ns), frame_id=frame_id)


# ----------------------------------------------------------------------------------------------- read


def _storage_file_of(folder: Path) -> Path | None:
    files = [p for p in folder.iterdir() if p.suffix in _SUFFIX]
    return files[0] if len(files) == 1 else None


@contextmanager
def open_bag(path: str | Path) -> Iterator:
    """Open a bag for reading (a rosbag2 directory, or a single .mcap / .db3 file); yields a rosbags
    ``Reader``. Missing, garbage and empty bags raise BagError naming the path."""
    from rosbags.rosbag2 import Reader

    p = Path(path)
    if not p.exists():
        raise BagError(f"bag not found: {p}")
    target = p
    if p.is_dir() and not (p / "metadata.yaml").is_file():
        target = _storage_file_of(p)
        if target is None:
            raise BagError(f"not a rosbag2 bag: {p} has no metadata.yaml and no single .mcap/.db3 file")
    elif p.is_file() and p.suffix not in _SUFFIX:
        raise BagError(f"not a bag: {p} (expected a rosbag2 directory, a .mcap or a .db3 file)")
    if target.is_file() and target.stat().st_size == 0:
        raise BagError(f"bag {target} is empty (0 bytes)")
    try:
        reader = Reader(target)
        reader.open()
    except Exception as exc:  # rosbags raises many kinds on garbage: name the file, not the parser
        raise BagError(f"cannot read bag {p}: {type(exc).__name__}: {exc}") from None
    try:
        if reader.message_count == 0:
            raise BagError(f"bag {p} holds no messages")
        yield reader
    finally:
        reader.close()


def bag_summary(path: str | Path) -> dict:
    """Topics (type, count), start/end time in ns and message count of a bag."""
    with open_bag(path) as r:
        return {"topics": {t: {"type": i.msgtype, "count": i.msgcount} for t, i in r.topics.items()},
                "start_ns": r.start_time, "end_ns": r.end_time, "messages": r.message_count}


def flight_info(reader) -> dict | None:
    """The JSON flight description a simulated bag carries on ``/gleam/flight_info``, or None."""
    conns = [c for c in reader.connections if c.topic == FLIGHT_INFO_TOPIC]
    for conn, _t, data in reader.messages(connections=conns):
        try:
            return json.loads(deserialize(data, conn.msgtype).data)
        except (ValueError, AttributeError):
            return None
    return None


# ---------------------------------------------------------------------------------------------- write


def resolve_output(out: str | Path, storage: str | None) -> tuple[Path, str, bool]:
    """(path, storage, single_file) of an output bag: ``x.mcap`` / ``x.db3`` is a single storage file
    (storage from the suffix), anything else a rosbag2 directory (storage default mcap)."""
    p = Path(out)
    suffix_storage = _SUFFIX.get(p.suffix)
    if suffix_storage is not None:
        if storage is not None and storage != suffix_storage:
            raise BagError(f"--out {p} has suffix {p.suffix} but --storage is {storage}")
        return p, suffix_storage, True
    storage = storage or "mcap"
    if storage not in STORAGES:
        raise BagError(f"unknown bag storage {storage!r}; expected one of {STORAGES}")
    return p, storage, False


def check_output(out: str | Path, storage: str | None = None, overwrite: bool = False) -> Path:
    """Fail early (before any work) when an output bag cannot be written; returns its path."""
    path, _storage, _single = resolve_output(out, storage)
    if path.exists() and not overwrite:
        raise BagError(f"output bag exists: {path} (remove it or pass --overwrite)")
    return path


class BagWriter:
    """Write raw CDR messages to a new bag (a rosbag2 directory or a single .mcap/.db3 file).

    Use as a context manager; topics are added on first use. A failed write leaves nothing behind.
    """

    def __init__(self, out: str | Path, storage: str | None = None, overwrite: bool = False) -> None:
        self.path, self.storage, self.single_file = resolve_output(out, storage)
        if self.path.exists():
            if not overwrite:
                raise BagError(f"output bag exists: {self.path} (remove it or pass --overwrite)")
            if self.path.is_dir():
                shutil.rmtree(self.path)
            else:
                self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp: Path | None = None
        self._writer = None
        self._conns: dict[str, object] = {}
        self.counts: dict[str, int] = {}
        self.custom_data: dict[str, str] = {}

    def __enter__(self) -> "BagWriter":
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        if self.single_file:
            self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
            target = self._tmp / "bag"
        else:
            target = self.path
        self._writer = Writer(target, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        self._writer.open()
        return self

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare ``topic`` of type ``msgtype`` ('pkg/msg/Name'); a no-op when already declared."""
        if topic not in self._conns:
            store = ensure_type(msgtype)
            self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=store)
            self.counts[topic] = 0

    def write(self, topic: str, msgtype: str, t_ns: int, data: bytes) -> None:
        """Write one raw CDR message received (or stamped) at ``t_ns``."""
        self.add_topic(topic, msgtype)
        self._writer.write(self._conns[topic], int(t_ns), data)
        self.counts[topic] += 1

    def write_msg(self, topic: str, msgtype: str, t_ns: int, msg) -> None:
        """Serialize a rosbags message object and write it."""
        self.write(topic, msgtype, t_ns, serialize(msg, msgtype))

    def __exit__(self, exc_type, exc, tb) -> None:
        writer, self._writer = self._writer, None
        if exc_type is not None:
            try:
                writer.close()
            except Exception:  # already failing: clean up below
                pass
            shutil.rmtree(self._tmp or self.path, ignore_errors=True)
            return
        for k, v in self.custom_data.items():
            writer.set_custom_data(k, v)
        writer.close()
        if self._tmp is not None:
            inner = self._tmp / "bag" / f"bag{Path(self.path).suffix}"
            os.replace(inner, self.path)
            shutil.rmtree(self._tmp, ignore_errors=True)
