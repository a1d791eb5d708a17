"""Replay a bag: publish every message's raw CDR with its recorded type at recorded timing / rate.

rclpy 9 has no dynamic message types; a compiled class per type is needed only to create the
publisher (``Publisher.publish(bytes)`` sends the stored CDR untouched), so any type whose
``pkg.msg`` module imports can be replayed, this package's own included. Data topics are published
reliable (a reliable publisher also serves best-effort subscribers such as camera subscriptions
with the sensor-data QoS). With ``clock`` the bag time is published on ``/clock``
(rosgraph_msgs/Clock) before every message and at ``clock_hz`` in between, for nodes with
``use_sim_time``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ._ros import RosSession, data_qos, message_class, use_large_data_transport
from .storage import BagError, open_bag

NS = 1_000_000_000
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


def _full(topic: str) -> str:
    return topic if topic.startswith("/") else "/" + topic


class Player:
    """Publishers for a bag's topics on ``session``'s node, and the timed replay loop.

    ``topics`` selects topics (default all); ``exclude`` drops some. Publisher QoS: reliable,
    volatile, keep last ``depth`` (transient-local for topics recorded as latched, e.g. /tf_static).
    """

    def __init__(self, session: RosSession, bag: str | Path, topics: Iterable[str] | None = None,
                 rate: float = 1.0, clock: bool = False, clock_hz: float = 40.0, depth: int = 100,
                 exclude: Iterable[str] = ()) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise BagError(f"--rate must be a positive number, got {rate}")
        self.session, self.bag, self.rate = session, Path(bag), float(rate)
        self.clock_hz = float(clock_hz)
        with open_bag(self.bag) as r:
            available = {c.topic: c.msgtype for c in r.connections}
            self.start_ns, self.end_ns = r.start_time, r.end_time
        wanted = list(available) if not topics else [_full(t) for t in topics]
        missing = [t for t in wanted if t not in available]
        if missing:
            raise BagError(f"bag {self.bag} has no topic(s) {missing}; it has {sorted(available)}")
        skip = {_full(t) for t in exclude}
        self.topics = {t: available[t] for t in wanted if t not in skip}
        if not self.topics:
            raise BagError(f"nothing to replay from {self.bag}: every topic was excluded")
        node = session.node
        self.publishers = {}
        for t, msgtype in self.topics.items():
            latched = t in ("/tf_static",)
            self.publishers[t] = node.create_publisher(message_class(msgtype), t, data_qos(depth, transient_local=latched))
        self.clock_pub = None
        if clock:
            from rosgraph_msgs.msg import Clock

            self._clock_cls = Clock
            self.clock_pub = node.create_publisher(Clock, "/clock", data_qos(10))
        self.published = 0

    def image_topics(self) -> list[str]:
        """Topics of camera images among those replayed."""
        return [t for t, ty in self.topics.items() if ty in IMAGE_TYPES]

    def wait_for_subscribers(self, count: int = 1, topics: Iterable[str] | None = None, timeout: float = 30.0,
                             spin: bool = True) -> list[str]:
        """Wait until each of ``topics`` (default: all replayed) has at least ``count`` matched
        subscriptions; returns the topics still short when ``timeout`` passed (empty on success)."""
        topics = list(self.topics) if topics is None else [_full(t) for t in topics]
        unknown = [t for t in topics if t not in self.publishers]
        if unknown:
            raise BagError(f"--wait-topics {unknown} are not replayed from {self.bag}; replayed: {sorted(self.topics)}")
        end = time.monotonic() + timeout

        def short() -> list[str]:
            return [t for t in topics if self.publishers[t].get_subscription_count() < count]

        while short() and time.monotonic() < end:
            if spin:
                self.session.spin_once(0.05)
            else:
                time.sleep(0.05)
        return short()

    def _publish_clock(self, bag_ns: int) -> None:
        msg = self._clock_cls()
        msg.clock.sec, msg.clock.nanosec = int(bag_ns // NS), int(bag_ns % NS)
        self.clock_pub.publish(msg)

    def play(self, loop: bool = False, spin: bool = True,
             on_publish: Callable[[str, str, int, bytes, float], None] | None = None,
             stop: Callable[[], bool] = lambda: False, progress: bool = False) -> int:
        """Publish the bag at recorded timing / rate; returns the number of messages published.

        ``spin``: serve this node's callbacks while waiting (else sleep). ``on_publish(topic, type,
        bag_ns, data, wall_time)`` is called right after each message went out. ``stop()`` is polled.
        """
        count = 0
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(desc="replay", unit="msg", disable=None)
        try:
            while True:
                count += self._play_once(spin, on_publish, stop, bar)
                if not loop or stop():
                    break
        finally:
            if bar is not None:
                bar.close()
        self.published += count
        return count

    def _wait_until(self, due: float, wall0: float, spin: bool, stop: Callable[[], bool]) -> None:
        clock_dt = 1.0 / self.clock_hz if self.clock_pub is not None and self.clock_hz > 0 else math.inf
        last_clock = time.monotonic()
        while not stop():
            now = time.monotonic()
            if now >= due:
                return
            if now - last_clock >= clock_dt:
                self._publish_clock(self.start_ns + int((now - wall0) * self.rate * NS))
                last_clock = now
            step = min(due - now, clock_dt, 0.05)
            if spin:
                self.session.spin_once(step)
            else:
                time.sleep(step)

    def _play_once(self, spin, on_publish, stop, bar) -> int:
        n = 0
        with open_bag(self.bag) as r:
            conns = [c for c in r.connections if c.topic in self.topics]
            wall0 = time.monotonic()
            if self.clock_pub is not None:
                self._publish_clock(self.start_ns)
            for conn, t_ns, data in r.messages(connections=conns):
                due = wall0 + (t_ns - self.start_ns) / NS / self.rate
                self._wait_until(due, wall0, spin, stop)
                if stop():
                    break
                if self.clock_pub is not None:
                    self._publish_clock(t_ns)
                self.publishers[conn.topic].publish(bytes(data))
                n += 1
                if bar is not None:
                    bar.update(1)
                if on_publish is not None:
                    on_publish(conn.topic, conn.msgtype, t_ns, data, time.time())
        return n


def replay(bag: str | Path, topics: Iterable[str] | None = None, rate: float = 1.0, loop: bool = False,
           clock: bool = False, wait_subscribers: int = 0, wait_topics: Iterable[str] | None = None,
           wait_timeout: float = 30.0, exclude: Iterable[str] = (), progress: bool = False, log=print) -> int:
    """``gleam bag replay``: publish a bag in a node of its own; returns messages published."""
    use_large_data_transport()
    session = RosSession("gleam_bag_replay")
    try:
        player = Player(session, bag, topics=topics, rate=rate, clock=clock, exclude=exclude)
        log(f"replay: {len(player.topics)} topics from {bag} at rate {rate}")
        if wait_subscribers > 0:
            short = player.wait_for_subscribers(wait_subscribers, wait_topics, wait_timeout)
            if short:
                log(f"replay: warning: after {wait_timeout:.0f} s fewer than {wait_subscribers} subscriber(s) on {short}")
        n = player.play(loop=loop, progress=progress)
        # Reliable delivery of the last messages needs the writer alive a moment after publishing.
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            session.spin_once(0.05)
        log(f"replay: published {n} messages")
        return n
    finally:
        session.close()
