"""Prometheus metrics and /healthz on one small asyncio HTTP listener.

Nothing here runs per message (the feeds and the writer observe their histograms,
histogram.py). Everything is read from the running App at scrape time by
`AppCollector`: the feeds' `FeedStats`, the writer's counters and queue, the
Monitor's view of the writer's progress. prometheus_client renders the text
format; it is imported only when a listener is configured (it costs ~50 ms).

Series (symbol-labelled first, then process-wide):

    collector_updates_total{symbol}             frames carrying book changes
    collector_trades_total{symbol}
    collector_resyncs_total{symbol,reason}      every stream failure
    collector_resync_records_total{symbol,reason}  resync records written
    collector_reconnects_total{symbol}          connection attempts after the first
    collector_unknown_events_total{symbol,kind}
    collector_stream_live{symbol}               1 while the stream is live
    collector_last_frame_age_seconds{symbol}    since the last frame (or the start)
    collector_book_levels{symbol,side}          levels of the full-depth book (0 when not live)
    collector_exchange_latency_seconds{symbol}  receive time - exchange timestampms (histogram)
    collector_queue_depth, collector_queue_capacity
    collector_queue_full_waits_total, collector_queue_full_wait_seconds_total
    collector_write_seconds                     one batch, loop -> writer thread -> back (histogram)
    collector_written_bytes_total, collector_written_lines_total, collector_dropped_lines_total
    collector_write_errors_total, collector_fsync_errors_total, collector_rotations_total
    collector_free_disk_bytes                   free space where the output directory is
    collector_writer_stalled_seconds            records queued and none written for this long
    collector_healthy                           1 when /healthz answers 200
    collector_published_total{symbol,stream}    with [publish]: messages in the stream (stream: records, raw)
    collector_publish_lag_seconds{symbol,stream}, collector_publish_lag_records{symbol,stream}
    collector_publish_skipped_total{symbol,stream}, collector_publish_duplicates_total{symbol,stream}
    collector_publish_connected, collector_publish_errors_total, collector_publish_last_error_info{error}
    collector_publish_process_up, collector_publish_process_restarts_total  (the publisher's own process)
    collector_audits_total{symbol,result}       with [audit]: audits by result (match, mismatch, not_live,
                                                rate_limited, bad_answer, failed)
    collector_audit_match_age_seconds           how long the stream had moved past a matching REST book
    collector_rest_requests_total, collector_rest_limited_total  the REST budget (discovery and audit)
    collector_info{version}
plus prometheus_client's process_* series (CPU, memory, open files).
"""

from __future__ import annotations

import asyncio
import functools
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import structlog

from collector import __version__
from collector.core.health import Problem, StreamStats, WriterCounters
from collector.core.histogram import Histogram

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

log = structlog.get_logger("metrics")

# Each connection: its request head (at most MAX_REQUEST bytes) within REQUEST_TIMEOUT_S,
# then its response taken within REQUEST_TIMEOUT_S, else it is dropped. At most
# MAX_CONNECTIONS are open at once: a crowd of idle or slow clients never takes the
# descriptors the feeds and the writer need.
REQUEST_TIMEOUT_S = 5.0
MAX_REQUEST = 8192
MAX_CONNECTIONS = 64
EXPOSITION_REUSE = 9  # /metrics text reused for 9x the time it took: at most 10% of a core
_LINGER_0 = struct.pack("ii", 1, 0)


# ---- what is read at scrape time (the App and its Monitor, typed without importing them) ----

class FeedStatsView(StreamStats, Protocol):
    """A feed's `FeedStats`; its `latency` (a Histogram) is read when there is one."""

    @property
    def updates(self) -> int: ...
    @property
    def trades(self) -> int: ...
    @property
    def connects(self) -> int: ...
    @property
    def marked(self) -> Mapping[str, int]: ...  # resync records written, by reason
    @property
    def unknown(self) -> Mapping[str, int]: ...


class FeedView(Protocol):
    """A Feed; its `levels()` or `_levels()` (book levels per side) is read when there is one."""

    @property
    def stats(self) -> FeedStatsView: ...


class QueueView(Protocol):
    @property
    def maxsize(self) -> int: ...
    def qsize(self) -> int: ...


class WriterView(WriterCounters, Protocol):
    """The Writer; its `queue_wait_s` and `write_latency` (a Histogram) are read when there are."""

    @property
    def queue(self) -> QueueView: ...
    @property
    def queue_full_waits(self) -> int: ...
    @property
    def bytes_written(self) -> Mapping[str, int]: ...
    @property
    def fsync_errors(self) -> int: ...
    @property
    def rotations(self) -> int: ...
    @property
    def free_bytes(self) -> int | None: ...


class AppView(Protocol):
    @property
    def feeds(self) -> Mapping[str, FeedView]: ...
    @property
    def writer(self) -> WriterView: ...


class ProgressView(Protocol):
    @property
    def stalled_s(self) -> float: ...  # records queued and none written for this long


class MonitorView(Protocol):
    """The health Monitor (monitor.py): its verdict and its view of the writer."""

    @property
    def started_at(self) -> float: ...  # monotonic
    @property
    def progress(self) -> ProgressView: ...
    def problems(self, now: float | None = None) -> list[Problem]: ...


class AppCollector:
    """A prometheus_client custom collector: reads the App's state at scrape time."""

    def __init__(self, app: AppView, monitor: MonitorView) -> None:
        self.app = app
        self.monitor = monitor

    def describe(self) -> list[Metric]:
        return []  # no registration-time collect(): series appear as symbols do

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            InfoMetricFamily,
        )

        now = time.monotonic()
        feeds = dict(self.app.feeds)
        c = {name: CounterMetricFamily(f"collector_{name}", doc, labels=labels)
             for name, doc, labels in (
                 ("updates", "Frames carrying book changes (snapshots excluded).", ["symbol"]),
                 ("trades", "Trades received.", ["symbol"]),
                 ("resyncs", "Stream failures, by reason (each failed attempt counts).",
                  ["symbol", "reason"]),
                 ("resync_records", "Resync records written, by reason.", ["symbol", "reason"]),
                 ("reconnects", "Connection attempts after the first.", ["symbol"]),
                 ("unknown_events", "Event or frame types not known, skipped.", ["symbol", "kind"]),
             )}
        live = GaugeMetricFamily("collector_stream_live", "1 while the symbol's stream is live.",
                                 labels=["symbol"])
        age = GaugeMetricFamily("collector_last_frame_age_seconds",
                                "Seconds since the last frame (heartbeats included), or since "
                                "the start when none came yet.", labels=["symbol"])
        levels = GaugeMetricFamily("collector_book_levels",
                                   "Price levels in the full-depth book (0 when not live).",
                                   labels=["symbol", "side"])
        latency = HistogramMetricFamily(
            "collector_exchange_latency_seconds",
            "Local receive time minus the exchange's timestampms, per update frame.",
            labels=["symbol"])
        for symbol, feed in feeds.items():
            st = feed.stats
            c["updates"].add_metric([symbol], st.updates)
            c["trades"].add_metric([symbol], st.trades)
            for reason, n in dict(st.resyncs).items():
                c["resyncs"].add_metric([symbol, reason], n)
            for reason, n in dict(st.marked).items():
                c["resync_records"].add_metric([symbol, reason], n)
            c["reconnects"].add_metric([symbol], max(st.connects - 1, 0))
            for kind, n in dict(st.unknown).items():
                c["unknown_events"].add_metric([symbol, kind], n)
            live.add_metric([symbol], 1.0 if st.live else 0.0)
            age.add_metric([symbol], now - (st.last_frame or self.monitor.started_at))
            sides = _levels(feed) if st.live else {}
            for side in ("bids", "asks"):
                levels.add_metric([symbol, side], sides.get(side, 0))
            hist = getattr(st, "latency", None)
            if isinstance(hist, Histogram):
                latency.add_metric([symbol], hist.cumulative(), hist.sum * hist.scale)
        yield from c.values()
        yield from (live, age, levels, latency)
        yield from self._writer(GaugeMetricFamily, CounterMetricFamily, HistogramMetricFamily)
        yield from self._sockets(GaugeMetricFamily, CounterMetricFamily)
        yield from self._discovery(GaugeMetricFamily)
        yield from self._audit(CounterMetricFamily, HistogramMetricFamily)
        yield from self._publisher(GaugeMetricFamily, CounterMetricFamily, InfoMetricFamily)
        problems = self.monitor.problems(now)
        yield GaugeMetricFamily("collector_healthy", "1 when /healthz answers 200.",
                                value=0.0 if problems else 1.0)
        info = InfoMetricFamily("collector", "The collector's version.")
        info.add_metric([], {"version": __version__})
        yield info

    def _sockets(self, gauge: Any, counter: Any) -> Iterator[Metric]:
        """Shared sockets (current API, feed.symbols_per_socket > 1), by slot: a small
        number reused once its socket is gone, so the series stay few."""
        pool = getattr(self.app, "pool", None)
        if pool is None:
            return
        carried = gauge("collector_socket_symbols", "Symbols a shared socket carries.", labels=["socket"])
        live = gauge("collector_socket_live", "Symbols live on a shared socket.", labels=["socket"])
        for s in pool.status():
            carried.add_metric([str(s["slot"])], s["symbols"])
            live.add_metric([str(s["slot"])], s["live"])
        yield from (carried, live)
        yield counter("collector_sockets_opened", "Shared sockets opened (connection attempts).",
                      value=pool.opened)
        yield counter("collector_socket_strays", "Frames for symbols their socket no longer carries.",
                      value=pool.strays)

    def _publisher(self, gauge: Any, counter: Any, info: Any) -> Iterator[Metric]:
        """[publish], per stream (SYMBOL or SYMBOL/raw): what the publisher process last
        reported (collector/publish/supervisor.py; at most status.MAX_STREAMS streams)."""
        pub = getattr(self.app, "publisher", None)
        if pub is None:
            return
        labels = ["symbol", "stream"]
        fams = {name: kind(f"collector_{name}", doc, labels=labels) for name, kind, doc in (
            ("published", counter, "Messages acknowledged by the stream this run."),
            ("publish_lag_seconds", gauge, "Age of the oldest line not yet in the stream (0: caught up)."),
            ("publish_lag_records", gauge, "Lines written this run and not yet in the stream."),
            ("publish_skipped", counter, "Lines that cannot be published (too large, unreadable)."),
            ("publish_duplicates", counter, "Messages the stream already held (resent, de-duplicated)."),
        )}
        for key, st in pub.stats().items():
            symbol, raw, _ = key.partition("/")
            names = [symbol, "raw" if raw else "records"]
            fams["published"].add_metric(names, st["published"])
            fams["publish_lag_seconds"].add_metric(names, st["lag_s"])
            if "lag_records" in st:  # known for a publisher the collector started
                fams["publish_lag_records"].add_metric(names, st["lag_records"])
            fams["publish_skipped"].add_metric(names, st["skipped"])
            fams["publish_duplicates"].add_metric(names, st["duplicates"])
        yield from fams.values()
        yield gauge("collector_publish_connected", "1 while connected to NATS.", value=float(pub.connected))
        yield counter("collector_publish_errors", "Failed connections and publishes.", value=pub.errors)
        yield gauge("collector_publish_process_up", "1 while the publisher process runs and reports.",
                    value=float(pub.running and pub.fresh))
        yield counter("collector_publish_process_restarts",
                      "Publisher processes started again after one ended.", value=pub.restarts)
        if pub.last_error:
            last = info("collector_publish_last_error", "The last publishing error (never a credential).")
            last.add_metric([], {"error": pub.last_error[:200]})
            yield last

    def _audit(self, counter: Any, histogram: Any) -> Iterator[Metric]:
        """[audit] (collector/runtime/audit.py) and the REST budget it shares with discovery."""
        rest = getattr(self.app, "rest", None)
        if rest is not None:
            yield counter("collector_rest_requests", "Public REST requests made (discovery, audit).",
                          value=rest.requests)
            yield counter("collector_rest_limited", "REST answers 429 (the budget then pauses).",
                          value=rest.limited)
        auditor = getattr(self.app, "auditor", None)
        if auditor is None:
            return
        audits = counter("collector_audits", "Audits of a live book against the REST book, by result.",
                         labels=["symbol", "result"])
        for (symbol, result), n in dict(auditor.results).items():
            audits.add_metric([symbol, result], n)
        yield audits
        hist = auditor.ages
        if isinstance(hist, Histogram):
            yield histogram("collector_audit_match_age_seconds",
                            "How long before the REST answer arrived the stream had moved past the "
                            "book it matched (0: still the live book).",
                            buckets=hist.cumulative(), sum_value=hist.sum * hist.scale)

    def _discovery(self, gauge: Any) -> Iterator[Metric]:
        """The symbol listing (feed.symbols with globs)."""
        yield gauge("collector_symbols_recorded", "Symbols being recorded.", value=len(self.app.feeds))
        listing = getattr(self.app, "listing", None)
        if listing is None:
            return
        yield gauge("collector_symbols_listed", "Symbols in the exchange's last good listing.",
                    value=len(listing))
        yield gauge("collector_discovery_last_refresh_timestamp_seconds",
                    "Unix time the listing was last read successfully.",
                    value=getattr(self.app, "listed_at", 0.0) or 0.0)

    def _writer(self, gauge: Any, counter: Any, histogram: Any) -> Iterator[Metric]:
        w = self.app.writer
        yield gauge("collector_queue_depth", "Items waiting for the writer.", value=w.queue.qsize())
        yield gauge("collector_queue_capacity", "Size of the writer's queue.", value=w.queue.maxsize)
        yield counter("collector_queue_full_waits", "Times a feed waited for room in a full queue.",
                      value=w.queue_full_waits)
        wait_s = getattr(w, "queue_wait_s", None)
        if wait_s is not None:
            yield counter("collector_queue_full_wait_seconds",
                          "Seconds feeds spent waiting for room in a full queue.", value=wait_s)
        hist = getattr(w, "write_latency", None)
        if isinstance(hist, Histogram):
            fam = histogram("collector_write_seconds",
                            "One batch handed to the writer thread and back, seconds.",
                            buckets=hist.cumulative(), sum_value=hist.sum * hist.scale)
            yield fam
        for name, doc, value in (
            ("written_bytes", "Bytes written to the output files.", sum(dict(w.bytes_written).values())),
            ("written_lines", "Lines written to the output files.", sum(dict(w.lines_written).values())),
            ("dropped_lines", "Lines lost to failed writes (disk full).", w.dropped_total),
            ("write_errors", "Failed writes.", w.write_errors),
            ("fsync_errors", "Failed fsyncs.", w.fsync_errors),
            ("rotations", "Segments closed by rotation.", w.rotations),
        ):
            yield counter(f"collector_{name}", doc, value=value)
        if w.free_bytes is not None:
            yield gauge("collector_free_disk_bytes", "Free bytes where the output directory is.",
                        value=w.free_bytes)
        yield gauge("collector_writer_stalled_seconds",
                    "Seconds the writer has held queued records without writing any.",
                    value=self.monitor.progress.stalled_s)


def _levels(feed: FeedView) -> dict[str, int]:
    levels = getattr(feed, "levels", None) or getattr(feed, "_levels", None)
    return dict(levels()) if levels is not None else {}


def build_registry(app: AppView, monitor: MonitorView) -> CollectorRegistry:
    from prometheus_client import CollectorRegistry
    from prometheus_client.process_collector import ProcessCollector

    class _ProcessCollector(ProcessCollector):
        def _boot_time(self) -> float:
            # systemd's ProcSubset=pid hides /proc/stat (btime); without a boot time the
            # base class exports nothing. The boot clock gives the same number.
            try:
                return float(super()._boot_time())  # type: ignore[no-untyped-call]  # untyped upstream
            except OSError:
                return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(AppCollector(app, monitor))
    _ProcessCollector(registry=registry)
    return registry


class MetricsServer:
    """GET /metrics (Prometheus text format) and /healthz (200 or 503, JSON) over HTTP/1.1,
    one request per connection. Runs on the event loop: a blocked loop does not answer,
    which a health probe reports as unhealthy, as it should.

    At most `max_connections` are open: a new one beyond them makes the oldest one still
    waiting for its request go (a scraper sends its request at once, so it is not the
    oldest for long), or goes itself when every open one is past its request. A request
    not read within `timeout_s`, or a response not taken within it, drops the connection
    at once (abort: a close would wait for a client that does not read)."""

    def __init__(self, app: AppView, monitor: MonitorView, *,
                 max_connections: int = MAX_CONNECTIONS, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.monitor = monitor
        self.registry = build_registry(app, monitor)
        self._exposed: tuple[float, bytes] | None = None  # (reused until, the last /metrics text)
        self._generating: asyncio.Future[bytes] | None = None
        self.max_connections = max_connections
        self.timeout_s = timeout_s
        self._server: asyncio.Server | None = None
        # open connections, oldest first: True once its request was read
        self._open: dict[asyncio.StreamWriter, bool] = {}
        self.requests = 0

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, host, port, limit=MAX_REQUEST,
                                                  reuse_address=True)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    def healthz(self) -> tuple[int, bytes]:
        problems = self.monitor.problems()
        body = orjson.dumps({"status": "unhealthy" if problems else "ok",
                             "problems": [p.as_dict() for p in problems]})
        return (503 if problems else 200), body + b"\n"

    def _admit(self, writer: asyncio.StreamWriter) -> bool:
        if len(self._open) >= self.max_connections:
            idle = next((w for w, busy in self._open.items() if not busy), None)
            if idle is None:
                self._drop(writer)
                return False
            self._drop(idle)
        self._open[writer] = False
        return True

    def _drop(self, writer: asyncio.StreamWriter) -> None:
        self._open.pop(writer, None)
        sock = writer.get_extra_info("socket")
        if sock is not None and not writer.transport.is_closing():
            try:  # a reset: the kernel drops what the client did not take, too
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
            except (OSError, ValueError):  # ValueError: uvloop's socket of a closed transport
                pass
        writer.transport.abort()  # the descriptor is closed now, whatever the client does

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._admit(writer):
            return
        try:
            await self._serve(reader, writer)
        finally:
            if self._open.pop(writer, None) is not None and not writer.transport.is_closing():
                writer.transport.abort()  # an exception on the way (closed ones are done)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            self._drop(writer)
            return
        if writer not in self._open:  # evicted meanwhile
            return
        self._open[writer] = True
        status, ctype, body, head_only = await self._respond(head)
        self.requests += 1
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  503: "Service Unavailable"}[status]
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                     f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
                     "Connection: close\r\n\r\n".encode("latin-1"))
        if not head_only:
            writer.write(body)
        try:
            async with asyncio.timeout(self.timeout_s):  # the whole response taken, then closed
                writer.close()
                await writer.wait_closed()
        except (TimeoutError, ConnectionError):
            self._drop(writer)

    async def _exposition(self) -> bytes:
        """/metrics' text, generated in a thread: at hundreds of symbols it takes about
        100 ms, which on the loop would hold up every feed. Clients asking meanwhile share
        it, and it is reused for EXPOSITION_REUSE times as long as it took, so however
        often /metrics is asked, generating it takes at most a tenth of a core."""
        from prometheus_client import generate_latest

        exposed = self._exposed
        if exposed is not None and time.monotonic() < exposed[0]:
            return exposed[1]
        if self._generating is None:
            started = time.monotonic()
            self._generating = asyncio.ensure_future(asyncio.to_thread(generate_latest, self.registry))
            self._generating.add_done_callback(functools.partial(self._generated, started))
        return await asyncio.shield(self._generating)

    def _generated(self, started: float, done: asyncio.Future[bytes]) -> None:
        self._generating = None
        if not done.cancelled() and done.exception() is None:
            now = time.monotonic()
            self._exposed = (now + EXPOSITION_REUSE * (now - started), done.result())

    async def _respond(self, head: bytes) -> tuple[int, str, bytes, bool]:
        text = "text/plain; charset=utf-8"
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return 400, text, b"bad request\n", False
        method, path = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return 405, text, b"only GET and HEAD\n", False
        head_only = method == b"HEAD"
        if path == b"/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST

            try:
                return 200, CONTENT_TYPE_LATEST, await self._exposition(), head_only
            except Exception as exc:  # read while the loop changed it: the next scrape will do
                log.warning("metrics exposition failed", error=repr(exc))
                return 503, text, b"metrics unavailable, try again\n", head_only
        if path == b"/healthz":
            status, body = self.healthz()
            return status, "application/json", body, head_only
        if path == b"/":
            return 200, text, b"gemini-collector: /metrics /healthz\n", head_only
        return 404, text, b"not found\n", head_only
