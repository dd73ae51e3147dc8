"""The publisher: every record line of the files into the JetStream stream, once (I/O).

Theory of operation. One task keeps one NATS connection (jetstream.py), reconnecting
with jittered backoff. While connected, each stream of the output directory (a symbol's
records, and its raw frames with publish.raw) has a task that reads its files with a
`Follower` (follow.py, in a worker thread) and publishes the lines in batches, several
batches in flight, each line with its `Nats-Msg-Id` (cursor.py). The task waits for the
acknowledgements in order; only then does it advance the stream's cursor, written to
disk (store.py) at most every CURSOR_EVERY_S, off the loop. So:

* a line is acknowledged before the cursor passes it: a crash, a `kill -9` or a lost
  connection makes the next attempt resend from the cursor, and what was stored already
  is recognised by its message id within the stream's duplicate window;
* past that window too: before publishing a stream, the task reads the subject's last
  message in the stream and starts after the line it names, when that is further on
  than the cursor. A missing or unreadable cursor is reported and the stream starts
  there too, or from its first file when the stream holds none of its messages;
* the files stay the source of truth and recording never waits: the publisher runs in
  a process of its own (service.py), which shares nothing with the feeds and the writer
  but the files. NATS down, the files grow and the lag grows, reported (`status`,
  written to a file the collector reads for its metrics and /healthz: status.py).

On `stop` (SIGTERM, once the writer has closed the files) the tasks catch up with the
end of the files for at most publish.stop_timeout_s when connected; the rest goes at
the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from collector.config import PublishConfig
from collector.core.backoff import Backoff
from collector.publish import store
from collector.publish.cursor import Cursor, CursorError, parse_msg_id
from collector.publish.follow import Follower, Line, recv_ns
from collector.publish.jetstream import MESSAGE_TOO_LARGE, MSG_ID, AckError, Batch, ConfigProblem, Pipe
from collector.publish.status import Status, StreamStatus, printable
from collector.runtime import tree
from collector.tools.decoding import MAX_LINE, MAX_RAW_LINE

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

log = structlog.get_logger("publish")

BATCH_LINES = 1000
BATCH_BYTES = 1 << 20
IN_FLIGHT = 4  # batches per stream awaiting their acknowledgements
ACK_TIMEOUT_S = 10.0  # no acknowledgement for this long: the connection is taken as lost
POLL_S = 0.05  # a stream at the end of its files looks for more this often
SCAN_S = 1.0  # new stream folders are looked for this often
CURSOR_EVERY_S = 0.5
BACKOFF_INITIAL_S, BACKOFF_MAX_S = 0.5, 30.0
HEADER_BYTES = 64  # what a message's header adds besides its id, at most
_SYMBOL = re.compile(r"[A-Z0-9]{1,64}")


@dataclass
class StreamState:
    """One stream's publishing, kept across connections."""

    key: str  # "SYMBOL" or "SYMBOL/raw"
    subject: str
    start: Cursor | None = None  # the cursor found at the start
    follower: Follower | None = None
    acked: Cursor | None = None  # just after the last line acknowledged
    saved: Cursor | None = None  # the cursor on disk
    saving: bool = False
    saved_at: float = 0.0
    published: int = 0  # lines acknowledged this run (duplicates included)
    this_run: int = 0  # of them and of the skipped ones, lines this run's writer wrote
    skipped: int = 0  # lines that cannot be published (too large, unreadable)
    duplicates: int = 0  # acknowledged as stored already
    pending: deque[tuple[Batch, list[Line]]] = field(default_factory=deque)
    head_ns: int | None = None  # recv_ns of the oldest line read and not yet acknowledged

    def position(self) -> Cursor | None:
        return self.acked or self.start


class Publisher:
    """Publishes the files under `directory` to publish.stream (see the module docstring).
    `run_ns`: the collector's start (its writer's lines are those of files begun since);
    `before`: the publisher this one replaces (SIGHUP), whose counts go on."""

    def __init__(self, cfg: PublishConfig, directory: Path, raw: bool = False, run_ns: int | None = None,
                 on_fatal: Callable[[str], None] | None = None, before: Publisher | None = None,
                 on_crash: Callable[[BaseException], None] | None = None) -> None:
        self.cfg = cfg
        self.directory = directory
        self.raw = raw and cfg.raw
        self.on_fatal = on_fatal  # a certain config error on the first attempt (exit 78)
        self.on_crash = on_crash  # the task failed (a bug)
        self.run_ns: int = run_ns if run_ns is not None else (
            before.run_ns if before is not None else time.time_ns())
        self.streams: dict[str, StreamState] = {}
        # switched off and on again (SIGHUP): the counts go on
        self._counts = {k: (s.published, s.this_run, s.skipped, s.duplicates)
                        for k, s in (before.streams.items() if before is not None else ())}
        self.connected = False
        self.last_error: str | None = None
        self.errors = 0
        self.connects = 0
        # the last time every stream was caught up, or one advanced (None: not yet)
        self.ok_at: float | None = None
        self.down_since = time.monotonic()
        self._draining = False
        self._wake = asyncio.Event()  # stop(): no more waiting out a backoff
        self._task: asyncio.Task[None] | None = None
        self._max_payload = 1 << 20
        # one thread reads the files (a follower is used by one thread at a time), one
        # writes the cursors (an fsync never holds up reading)
        self._read = ThreadPoolExecutor(1, thread_name_prefix="collector-publish")
        self._save = ThreadPoolExecutor(1, thread_name_prefix="collector-cursor")

    # ---- the outside ---------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="publisher")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            log.critical("the publisher failed", error=repr(exc), exc_info=exc)
            if self.on_crash is not None:
                self.on_crash(exc)

    async def stop(self, budget_s: float | None = None) -> None:
        """Catch up with the files when connected (for at most `budget_s`, default
        publish.stop_timeout_s), write the cursors, close."""
        budget = self.cfg.stop_timeout_s if budget_s is None else budget_s
        task, self._task = self._task, None
        self._draining = True
        self._wake.set()
        if task is not None and not task.done():
            done, _ = await asyncio.wait([task], timeout=budget)
            if not done and any(s.head_ns is not None or s.pending for s in self.streams.values()):
                log.warning("publishing stopped before catching up; the rest goes at the next start",
                            behind=sorted(k for k, s in self.streams.items() if s.head_ns is not None))
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        loop = asyncio.get_running_loop()
        for st in self.streams.values():
            if st.acked is not None and st.acked != st.saved:
                try:
                    await loop.run_in_executor(self._save, store.save, self.directory, st.acked)
                    st.saved = st.acked
                except OSError as exc:
                    log.error("cannot write the publish cursor", stream=st.key, error=str(exc))
            if st.follower is not None:
                await loop.run_in_executor(self._read, st.follower.close)
        self._read.shutdown(wait=True)
        self._save.shutdown(wait=True)
        log.info("publisher stopped", published=sum(s.published for s in self.streams.values()),
                 behind=sorted(k for k, s in self.streams.items() if s.head_ns is not None))

    def status(self, seq: int, stopped: bool = False) -> Status:
        """What the collector reads of this publisher (status.py)."""
        now = time.monotonic()
        return Status(
            pid=os.getpid(), seq=seq, run_ns=self.run_ns, at_ns=time.time_ns(), connected=self.connected,
            errors=self.errors, last_error=None if self.last_error is None else printable(self.last_error),
            idle_s=None if self.ok_at is None else max(0.0, now - self.ok_at),
            down_s=0.0 if self.connected else max(0.0, now - self.down_since),
            stopped=stopped,
            streams={k: StreamStatus(st.published, st.this_run, st.skipped, st.duplicates, st.head_ns)
                     for k, st in list(self.streams.items())})

    # ---- the connection --------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and publish, reconnecting with backoff; once stopping, one last
        attempt catches up with the files (within stop()'s budget) and ends."""
        backoff = Backoff(BACKOFF_INITIAL_S, BACKOFF_MAX_S)
        first = True
        while True:
            await self._scan()
            try:
                await self._connected()
            except ConfigProblem as exc:
                self._failed(str(exc), error=True)
                if first and self.on_fatal is not None:
                    self.on_fatal(str(exc))
                    return
            except (ConnectionError, OSError, TimeoutError, AckError) as exc:
                self._failed(str(exc) or type(exc).__name__)
            except Exception as exc:  # a nats-py error of another kind: reported, retried
                if type(exc).__module__.split(".")[0] != "nats":
                    raise
                self._failed(f"{type(exc).__name__}: {exc}")
            else:
                backoff.reset()
            first = False
            if self._draining:
                return
            try:
                async with asyncio.timeout(backoff.next_delay()):
                    await self._while_down()
            except TimeoutError:
                pass

    def _failed(self, why: str, error: bool = False) -> None:
        self.errors += 1
        if why != self.last_error:
            (log.error if error else log.warning)("publishing to NATS failed", error=why,
                                                  url=list(self.cfg.urls), stream=self.cfg.stream)
        self.last_error = why

    async def _connected(self) -> None:
        """Connect, then publish until the connection is lost (raising) or, draining,
        every stream has caught up."""
        from collector.publish import jetstream

        pipe: Pipe | None = None
        lost = asyncio.Event()

        async def on_lost() -> None:
            lost.set()
            if pipe is not None:
                pipe.fail(ConnectionError("the NATS connection was lost"))

        nc = await jetstream.connect(self.cfg, on_lost)
        try:
            js = nc.jetstream(timeout=jetstream.API_TIMEOUT_S)
            await jetstream.ensure_stream(js, self.cfg)
            pipe = Pipe(nc, self.cfg.stream)
            await pipe.start()
            self._max_payload = nc.max_payload
            self.connected = True
            self.connects += 1
            log.info("publishing to NATS", stream=self.cfg.stream, subject=self.cfg.subject,
                     again=self.last_error is not None)
            self.last_error = None
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._streams(tg, js, pipe, lost))
            except BaseExceptionGroup as group:  # the first failure says it: the others follow it
                raise group.exceptions[0] from None
        finally:
            self.connected = False
            self.down_since = time.monotonic()
            for st in self.streams.values():
                st.pending.clear()
                await self._rewind(st)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await nc.close()

    async def _streams(self, tg: asyncio.TaskGroup, js: JetStreamContext, pipe: Pipe,
                       lost: asyncio.Event) -> None:
        """A task per stream, for the streams there are and those that appear."""
        running: dict[str, asyncio.Task[None]] = {}
        while True:
            await self._scan()
            for key, st in self.streams.items():
                if key not in running:
                    running[key] = tg.create_task(self._publish(st, js, pipe), name=f"publish-{key}")
            if self._draining and all(t.done() for t in running.values()):
                return
            try:
                async with asyncio.timeout(POLL_S if self._draining else SCAN_S):
                    await lost.wait()
            except TimeoutError:
                continue
            raise ConnectionError(str(pipe.failed or "the NATS connection was lost"))

    async def _scan(self) -> None:
        """A StreamState, with its cursor loaded, for every stream folder not known yet."""
        loop = asyncio.get_running_loop()
        for key in await loop.run_in_executor(self._read, self._keys):
            if key in self.streams:
                continue
            symbol, raw, _ = key.partition("/")
            st = StreamState(key, f"{self.cfg.subject}.{'raw.' if raw else ''}{symbol}")
            st.published, st.this_run, st.skipped, st.duplicates = self._counts.get(key, (0, 0, 0, 0))
            try:
                st.start = await loop.run_in_executor(self._read, store.load, self.directory, key)
            except CursorError as exc:
                log.error("publish cursor unusable: publishing from the stream's last message, or the "
                          "first file", stream=key, error=str(exc))
            self.streams[key] = st
            await self._rewind(st)

    def _keys(self) -> list[str]:
        try:
            keys = tree.stream_folders(self.directory)
        except OSError:
            return []
        return [k for k in keys if _SYMBOL.fullmatch(k.split("/")[0]) and ("/" not in k or self.raw)]

    async def _while_down(self) -> None:
        """Disconnected: find each stream's oldest line not in the stream, so that the
        lag is known while NATS is down; nothing waiting is idle, not stuck."""
        loop = asyncio.get_running_loop()
        while not self._wake.is_set():
            await self._scan()
            waiting = False
            for st in list(self.streams.values()):
                follower = st.follower
                if st.head_ns is None and follower is not None and follower.ready():
                    lines = await loop.run_in_executor(self._read, follower.read, 1, 1)
                    if lines:
                        st.head_ns = recv_ns(lines[0].data)
                        await self._rewind(st)
                waiting = waiting or st.head_ns is not None
            if not waiting:
                self.ok_at = time.monotonic()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._wake.wait()

    # ---- one stream ------------------------------------------------------------------------

    async def _rewind(self, st: StreamState) -> None:
        """A new follower from just after the last line acknowledged: lines read past it
        are read, and sent, again."""
        old, st.follower = st.follower, Follower(
            self.directory, st.key, st.position(), max_line=MAX_RAW_LINE if "/" in st.key else MAX_LINE,
            on_skip=lambda why: self._skipped(st))
        if old is not None:
            await asyncio.get_running_loop().run_in_executor(self._read, old.close)

    def _skipped(self, st: StreamState) -> None:
        st.skipped += 1

    async def _reconcile(self, st: StreamState, js: JetStreamContext, follower: Follower) -> None:
        """Go on after the subject's last message in the stream when it names a line
        further on than the cursor (written after the acknowledgement, a cursor can lag)."""
        from nats.js.errors import NotFoundError

        try:
            msg = await js.get_last_msg(self.cfg.stream, st.subject)
        except NotFoundError:
            return
        mid = (msg.headers or {}).get(MSG_ID)
        named = parse_msg_id(mid) if isinstance(mid, str) else None
        if named is None or named[0] != st.key:
            log.warning("the stream's last message is not from these files; publishing from the cursor",
                        stream=st.key, msg_id=mid)
            return
        where = follower.position()
        if where is None or named[1] >= where:
            await asyncio.get_running_loop().run_in_executor(self._read, follower.skip_to, named[1])

    async def _publish(self, st: StreamState, js: JetStreamContext, pipe: Pipe) -> None:
        loop = asyncio.get_running_loop()
        follower = st.follower
        assert follower is not None
        await self._reconcile(st, js, follower)
        while True:
            while len(st.pending) < IN_FLIGHT and follower.ready():
                lines = await loop.run_in_executor(self._read, follower.read, BATCH_LINES, BATCH_BYTES)
                if not lines:
                    break
                if st.head_ns is None:
                    st.head_ns = recv_ns(lines[0].data)
                limit = self._max_payload - HEADER_BYTES
                fits = [ln for ln in lines if len(ln.data) + len(ln.msg_id) <= limit]
                for ln in lines if len(fits) < len(lines) else ():
                    if len(ln.data) + len(ln.msg_id) > limit:
                        self._too_large(st, ln)
                if fits:
                    batch = await pipe.send(st.subject, [(ln.msg_id, ln.data) for ln in fits])
                    st.pending.append((batch, fits))
                else:  # nothing to send: move past them in turn
                    st.pending.append((Batch(-1, 0), lines[-1:]))
            if not st.pending:
                st.head_ns = None
                self.ok_at = time.monotonic()
                if self._draining:
                    return
                await asyncio.sleep(POLL_S)
                continue
            batch, lines = st.pending[0]
            try:
                async with asyncio.timeout(ACK_TIMEOUT_S):
                    await batch.done.wait()
            except TimeoutError:
                raise ConnectionError(f"no acknowledgement from NATS in {ACK_TIMEOUT_S:g} s") from None
            pipe.forget(batch)
            if pipe.failed is not None:
                raise ConnectionError(f"the NATS connection failed: {pipe.failed}")
            st.pending.popleft()
            self._acked(st, batch, lines)

    def _acked(self, st: StreamState, batch: Batch, lines: list[Line]) -> None:
        """Move past a batch's acknowledged lines. A line refused as too large is
        skipped; any other refusal ends the connection, and what follows it is resent."""
        st.duplicates += batch.duplicates
        if not batch.size:
            self._move(st, lines[-1])
            return
        upto = len(lines)
        refused = None
        for i in sorted(batch.errors):
            err = batch.errors[i]
            if err.err_code == MESSAGE_TOO_LARGE:
                self._too_large(st, lines[i])
                continue
            upto, refused = i, err
            break
        if upto:
            done = lines[:upto]
            st.published += upto - sum(1 for i in batch.errors if i < upto)
            run_ns = self.run_ns
            st.this_run += sum(1 for ln in done if ln.file.first_ns >= run_ns)
            self._move(st, done[-1])
        if refused is not None:
            raise AckError(f"the stream refused a message: {refused}", refused.code, refused.err_code)
        nxt = st.pending[0][1] if st.pending else None
        st.head_ns = recv_ns(nxt[0].data) if nxt else None

    def _move(self, st: StreamState, line: Line) -> None:
        assert st.follower is not None
        st.acked = st.follower.cursor(line)
        self.ok_at = time.monotonic()
        self._save_soon(st)

    def _too_large(self, st: StreamState, line: Line) -> None:
        st.skipped += 1
        if line.file.first_ns >= self.run_ns:
            st.this_run += 1
        log.error("a line too large for NATS (max_payload), not published", stream=st.key,
                  msg_id=line.msg_id, bytes=len(line.data), max_payload=self._max_payload)

    def _save_soon(self, st: StreamState) -> None:
        now = time.monotonic()
        cur = st.acked
        if st.saving or cur is None or now - st.saved_at < CURSOR_EVERY_S:
            return
        st.saving, st.saved_at = True, now

        def saved(fut: asyncio.Future[None]) -> None:
            st.saving = False
            exc = None if fut.cancelled() else fut.exception()
            if exc is None:
                st.saved = cur
            else:
                log.error("cannot write the publish cursor", stream=st.key, error=str(exc))

        asyncio.get_running_loop().run_in_executor(self._save, store.save, self.directory, cur
                                                   ).add_done_callback(saved)
