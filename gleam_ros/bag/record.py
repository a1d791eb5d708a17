"""Record topics into a bag: raw (CDR) subscriptions, types discovered from the ROS graph.

A topic is subscribed as soon as it appears in the graph (``get_topic_names_and_types``), with a QoS
adapted to its publishers (reliable unless one is best-effort). Messages are written with their
receipt time (wall clock, ns) as the bag's log time, as ``ros2 bag record`` does. Message
definitions for the bag come from the rosbags type store: ROS 2 Kilted's types plus this
package's ``msg/*.msg`` (and any ``share/<pkg>/msg`` on AMENT_PREFIX_PATH).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ._ros import RosSession, adapted_qos, data_qos, message_class
from .storage import BagError, BagWriter, check_output, ensure_type


class Recorder:
    """Raw subscriptions on ``session``'s node that write into an open :class:`BagWriter`.

    ``on_message(topic, type, data, receipt_ns)`` is called for each message after it is written.
    """

    def __init__(self, session: RosSession, writer: BagWriter, topics: Iterable[str],
                 types: dict[str, str] | None = None, qos: dict | None = None,
                 on_message: Callable[[str, str, bytes, int], None] | None = None) -> None:
        self.session, self.writer = session, writer
        self.topics = [self._full(t) for t in topics]
        if not self.topics:
            raise BagError("no topics to record (pass --topics)")
        self.types = {self._full(k): v for k, v in (types or {}).items()}
        self.qos = {self._full(k): v for k, v in (qos or {}).items()}
        self.on_message = on_message
        self.subscriptions: dict[str, object] = {}
        self.subscribed_types: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self.first_ns: int | None = None
        for t, ty in self.types.items():  # known types: subscribe now, before any publisher appears
            if t in self.topics:
                self._subscribe(t, ty)

    @staticmethod
    def _full(topic: str) -> str:
        return topic if topic.startswith("/") else "/" + topic

    def missing(self) -> list[str]:
        """Topics not subscribed yet (not seen in the graph)."""
        return [t for t in self.topics if t not in self.subscriptions]

    def discover(self) -> list[str]:
        """Subscribe to every wanted topic that has appeared in the graph; returns the newly subscribed."""
        if not self.missing():
            return []
        graph = dict(self.session.node.get_topic_names_and_types())
        new = []
        for t in self.missing():
            types = graph.get(t)
            if not types:
                continue
            if len(types) > 1:
                raise BagError(f"topic {t} is published with several types {types}; cannot record it")
            self._subscribe(t, types[0])
            new.append(t)
        return new

    def _subscribe(self, topic: str, msgtype: str) -> None:
        ensure_type(msgtype)  # fail now, not at the first message, when the bag cannot describe it
        self.writer.add_topic(topic, msgtype)
        if topic in self.qos:
            qos = self.qos[topic]
        elif topic in self.types:
            qos = data_qos()
        else:
            qos = adapted_qos(self.session.node, topic)
        self.subscribed_types[topic] = msgtype

        def cb(data: bytes, topic=topic, msgtype=msgtype) -> None:
            ns = time.time_ns()
            if self.first_ns is None:
                self.first_ns = ns
            self.writer.write(topic, msgtype, ns, data)
            self.counts[topic] = self.counts.get(topic, 0) + 1
            if self.on_message is not None:
                self.on_message(topic, msgtype, data, ns)

        self.subscriptions[topic] = self.session.node.create_subscription(
            message_class(msgtype), topic, cb, qos, raw=True)
        self.counts.setdefault(topic, 0)

    def close(self) -> None:
        """Destroy the subscriptions (the writer is closed by its owner)."""
        for sub in self.subscriptions.values():
            self.session.node.destroy_subscription(sub)
        self.subscriptions.clear()


def record(out: str | Path, topics: list[str], duration: float | None = None, storage: str | None = None,
           overwrite: bool = False, discovery_period: float = 0.5, log=print) -> dict[str, int]:
    """``gleam bag record``: record ``topics`` until ``duration`` seconds passed, SIGINT or SIGTERM;
    the bag is always closed properly. Returns message counts per topic."""
    if duration is not None and not duration > 0:
        raise BagError(f"--duration must be positive, got {duration}")
    check_output(out, storage, overwrite)
    stop = {"flag": False}

    def on_signal(signum, _frame) -> None:
        stop["flag"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    session = RosSession("gleam_bag_record")
    try:
        with BagWriter(out, storage, overwrite=overwrite) as writer:
            rec = Recorder(session, writer, topics)
            log(f"record: waiting for {len(rec.topics)} topic(s) -> {writer.path}")
            start = time.monotonic()
            next_discovery, warned = 0.0, False
            while not stop["flag"] and (duration is None or time.monotonic() - start < duration):
                now = time.monotonic()
                if now >= next_discovery and rec.missing():
                    for t in rec.discover():
                        log(f"record: subscribed {t} [{rec.subscribed_types[t]}]")
                    if not rec.missing():
                        log("record: all topics subscribed")
                    next_discovery = now + discovery_period
                    if not warned and rec.missing() and now - start > 10.0:
                        log(f"record: still waiting for {rec.missing()}")
                        warned = True
                session.spin_once(0.1)
            # drain what already arrived
            end = time.monotonic() + 0.2
            while time.monotonic() < end:
                session.spin_once(0.02)
            never = rec.missing()
            rec.close()
            counts = dict(rec.counts)
        if never:
            log(f"record: warning: never saw {never}")
        log(f"record: {sum(counts.values())} messages -> {writer.path}")
        return counts
    finally:
        session.close()
        for s, h in old.items():
            signal.signal(s, h)
