"""Health: what is wrong with a running collector, and what to do about it (pure).

Theory of operation. `check()` is pure: given the feeds, how long the writer has
held queued records without writing any, and the time, it returns the list of
`Problem`s; an empty list is healthy. Two consumers read it:

* `/healthz` (metrics.py) and the heartbeat file (heartbeat.py) answer 503/unhealthy
  on any problem: a stream that is not live, or (v1, which sends heartbeats) has had
  no frame for twice `feed.stale_after_s`, or a stuck writer. `collector health` turns
  that into exit 0 or 1.
* systemd's watchdog gets `WATCHDOG=1` only while no problem is *fatal*. Only a stuck
  writer is: a dead exchange leaves every stream down but restarting the collector
  would not bring it back, so an outage must never become a restart loop. An idle
  writer (empty queue) is never stuck.

The I/O around it is monitor.py (the loop's ticks, notify, the watchdog thread),
heartbeat.py (the heartbeat file, `collector health`) and metrics.py (/healthz).
The thresholds below are the defaults of config.py's [health] section.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

WRITER_STUCK_S = 30.0  # queued records, nothing written for this long: unhealthy
EXIT_AFTER_S = 120.0  # loop blocked or writer stuck this long: exit
HEARTBEAT_S = 5.0  # heartbeat file interval (when there is no metrics listener)
HEARTBEAT_STALE_S = 20.0  # an older heartbeat file means the collector is not running well


class StreamStats(Protocol):
    """What `check()` reads of a feed's `FeedStats`."""

    @property
    def live(self) -> bool: ...
    @property
    def last_frame(self) -> float: ...  # monotonic; 0.0 before the first frame
    @property
    def resyncs(self) -> Mapping[str, int]: ...  # every failure, by reason


class Watched(Protocol):
    """A feed, as `check()` sees it."""

    @property
    def stats(self) -> StreamStats: ...


class WriterCounters(Protocol):
    """What `writer_done()` reads of the Writer."""

    @property
    def lines_written(self) -> Mapping[str, int]: ...
    @property
    def dropped_total(self) -> int: ...
    @property
    def write_errors(self) -> int: ...


@dataclass(frozen=True)
class Problem:
    kind: str  # "stream_down", "stream_quiet", "writer_stuck", "discovery", "publish_stuck", "audit_failing"
    detail: str
    symbol: str | None = None

    @property
    def fatal(self) -> bool:
        """Would a restart help? Only for a stuck writer (see the module docstring)."""
        return self.kind == "writer_stuck"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "detail": self.detail}
        if self.symbol is not None:
            out["symbol"] = self.symbol
        return out


def check(feeds: Mapping[str, Watched], stale_after_s: float, queued: int, writer_stalled_s: float,
          now: float, writer_stuck_s: float = WRITER_STUCK_S, since: float = 0.0,
          heartbeats: bool = True, discovery: str | None = None,
          publish: str | None = None, audits: Mapping[str, str] | None = None) -> list[Problem]:
    """Every problem of a collector, pure. `feeds` maps symbol -> an object with a
    `stats` (FeedStats: `live`, `last_frame`, `resyncs`); `now` and `since` (the
    start, for streams that never had a frame) are monotonic times. `heartbeats`:
    whether the API sends them (v1). Without them (the current API) a quiet book may
    say nothing for minutes and silence proves nothing: the keepalive pings prove the
    connection, and a dead one breaks the stream (then it is `stream_down`).
    `discovery`: why the symbol listing (feed.symbols globs) could not be used, if it
    could not; non-fatal, like an exchange outage. `publish`: why publishing to NATS is
    stuck ([publish]); non-fatal too: recording goes on, and a restart would not help.
    `audits`: symbol -> why its audits keep failing ([audit]); non-fatal, the audit
    resynchronises a book it finds wrong."""
    problems = []
    quiet_limit = 2 * stale_after_s
    for symbol, feed in feeds.items():
        st = feed.stats
        quiet = now - (st.last_frame or since)
        heard = f"last frame {quiet:.1f} s ago" if st.last_frame else f"no frame in {quiet:.1f} s"
        if not st.live:
            last = _last_reason(st.resyncs)
            why = f"stream not live ({'last resync: ' + last if last else 'connecting'}); {heard}"
            problems.append(Problem("stream_down", why, symbol))
        elif heartbeats and quiet > quiet_limit:
            problems.append(Problem("stream_quiet", f"{heard} (limit {quiet_limit:g} s)", symbol))
    if discovery:
        problems.append(Problem("discovery", discovery))
    if publish:
        problems.append(Problem("publish_stuck", publish))
    for symbol, why in (audits or {}).items():
        problems.append(Problem("audit_failing", why, symbol))
    if queued and writer_stalled_s >= writer_stuck_s:
        problems.append(Problem(
            "writer_stuck", f"{queued} records queued, none written for {writer_stalled_s:.1f} s"))
    return problems


def _last_reason(resyncs: Mapping[str, int]) -> str:
    # Counter keeps insertion order, not recency; name the reasons seen, most frequent first.
    return ", ".join(f"{r} x{n}" for r, n in sorted(resyncs.items(), key=lambda kv: -kv[1])[:3])


def writer_done(writer: WriterCounters) -> int:
    """A number that grows whenever the writer finishes with records (written or dropped).
    Its Counters are updated on the writer thread: sum() over a dict of ints runs
    without releasing the GIL, so it never sees the dict change size mid-way."""
    return sum(writer.lines_written.values()) + writer.dropped_total + writer.write_errors


class WriterProgress:
    """Sampled from the loop: how long the writer has held queued records without
    finishing any. No hook on the writer's hot path and no race with a put() that
    lands just before a sample: a stall is timed from the last sample that saw an
    empty queue or progress."""

    def __init__(self, now: float) -> None:
        self._done = -1
        self._ok_at = now
        self.stalled_s = 0.0

    def sample(self, queued: int, done: int, now: float) -> float:
        if queued == 0 or done != self._done:
            self._ok_at = now
        self._done = done
        self.stalled_s = now - self._ok_at
        return self.stalled_s
