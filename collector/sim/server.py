"""``SimExchange``: a simulated Gemini (v1 market data WebSocket + public REST) on one port.

One ``websockets`` server: ``process_request`` answers REST GETs and refuses or rejects
handshakes; accepted ``/v1/marketdata/{SYMBOL}`` connections are attached to that
symbol's hub, which broadcasts one market to all of its connections. WebSocket
handshakes at ``/`` speak the current API (``current_api.py``): their subscriptions
attach to the same hubs. ``SimExchange.whole()`` lists a whole exchange (``exchange.py``)
moved by one schedule (``schedule.py``), behind Gemini's limits (``gate.py``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from . import rest
from .capture import Capture, load_capture
from .connection import Connection
from .current_api import CurrentConnection, is_current_path, snapshot_mode
from .exchange import GEMINI_LISTED, ExchangePlan, plan_exchange
from .faults import Fault, FaultKind, RandomFaults, parse_fault_spec
from .frames import Subscription
from .gate import Gate, json_response, refusal_response
from .hub import SymbolHub
from .market import FlowParams, IdSource, Market
from .ratelimit import SimLimits
from .replay import ReplayHub, ReplayMarket
from .schedule import Schedule
from .stats import ExchangeStats, Notifier, SymbolStats
from .symbols import SymbolSpec, spec_for
from .tape import Tape, build_tape
from .truth import TruthCursor, TruthWriter

__all__ = ["SimExchange"]

log = logging.getLogger("collector.sim")

# Whole-exchange mode wakes at most every TICK_S and publishes what fell due meanwhile:
# a wake-up per update cost about as much as the update itself at 500 updates/s.
TICK_S = 0.005


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _ws_symbol(path: str) -> str | None:
    """``/v1/marketdata/btcusd`` -> ``BTCUSD``; None for any other path."""
    parts = [p for p in path.split("/") if p]
    if len(parts) == 3 and parts[0] == "v1" and parts[1] == "marketdata":
        return parts[2].upper()
    return None


class SimExchange:
    """A simulated Gemini exchange.

    ``symbols`` get an active market (``rate`` updates per second each; 0 = as fast as the
    fastest connection drains them; None = no automatic flow, call ``advance``).
    ``listed`` adds symbols that are listed (REST, WebSocket accepted) but quiet: a book,
    a snapshot, heartbeats, and no updates. Any other symbol gets 404.

    Replay mode (``replay=`` a capture path, a ``Capture`` or a ``Tape``): the symbols with
    a book in the capture (``symbols`` restricts them) play the capture instead of the
    synthetic market; ``rate``, ``depth`` and ``flow`` do not apply to them. ``speed``:
    factor on the recorded inter-arrival times (1 = real time), 0 = as fast as the fastest
    connection drains them, None = no automatic flow (``advance``). ``loop``: restart from
    the initial book at the end (connections of a symbol whose book changed are closed
    with 1012 so clients resnapshot); without it the final book stays, quiet.

    Whole-exchange mode (``exchange=`` an ``ExchangePlan``, or ``SimExchange.whole()``):
    the plan's symbols are listed, each with its own depth, and one schedule moves each at
    its own rate (``rate`` None: no automatic flow, call ``advance``; any other value: the
    plan's rates). ``limits``: None = Gemini's (``SimLimits()``) in whole-exchange mode and
    none otherwise, True / False = on / off, or a ``SimLimits`` (e.g. scaled for a test).

    ``rest_delay``: seconds between a REST request and its answer, which holds the state of
    the moment it was asked (a book as old as the delay when it arrives).
    """

    def __init__(
        self,
        symbols: Iterable[str] | None = None,
        seed: int = 1,
        rate: float | None = 50.0,
        heartbeat_s: float = 5.0,
        depth: int = 500,
        faults: str = "",
        ping_interval: float | None = 20.0,
        listed: Iterable[str] | None = None,
        *,
        send_buffer: int = 10_000,
        close_timeout: float = 1.0,
        record_truth: bool = True,
        truth_path: str | Path | None = None,
        flow: FlowParams | None = None,
        clock_ms: Callable[[], int] = _wall_ms,
        replay: str | Path | Capture | Tape | None = None,
        speed: float | None = 1.0,
        loop: bool = True,
        exchange: ExchangePlan | None = None,
        limits: SimLimits | bool | None = None,
        rest_delay: float = 0.0,
    ) -> None:
        self.tape: Tape | None = None
        self.plan = exchange
        if exchange is not None:
            if symbols is not None or listed is not None or replay is not None:
                raise ValueError("exchange= lists its own symbols: no symbols, listed or replay")
            symbols = exchange.names
        if replay is not None:
            if speed is not None and speed < 0:
                raise ValueError("speed must be >= 0 (0 = unlimited) or None (manual)")
            self.tape = _tape(replay, symbols)
            active = list(self.tape.symbols)
        else:
            active = list(dict.fromkeys(
                s.upper() for s in (symbols if symbols is not None else ("BTCUSD",))))
        self.speed = speed
        self.loop = loop
        quiet = [s for s in dict.fromkeys(s.upper() for s in listed or ()) if s not in active]
        if not active and not quiet:
            raise ValueError("at least one symbol is required")
        if rate is not None and rate < 0:
            raise ValueError("rate must be >= 0 (0 = unlimited) or None (manual)")
        if heartbeat_s <= 0:
            raise ValueError("heartbeat_s must be > 0")
        if send_buffer < 1:
            raise ValueError("send_buffer must be >= 1")
        if not 0 <= rest_delay <= 60:
            raise ValueError("rest_delay must be between 0 and 60 s")
        self.rest_delay = rest_delay  # REST answers go out this late (computed at the request)
        self.seed = seed
        self.rate = rate
        self.heartbeat_s = heartbeat_s
        self.ping_interval = ping_interval
        self.send_buffer = send_buffer
        self.close_timeout = close_timeout
        self.clock_ms = clock_ms
        self.specs: dict[str, SymbolSpec] = {s: spec_for(s) for s in active + quiet}
        if self.tape is not None:
            self.specs.update({s: t.spec for s, t in self.tape.symbols.items()})
        plan = {a.symbol: a for a in exchange.symbols} if exchange is not None else {}
        self.specs.update({s: a.spec for s, a in plan.items()})
        rates = parse_fault_spec(faults)
        self._notifier = Notifier()
        self._writer = TruthWriter(truth_path) if truth_path is not None else None
        event_ids = IdSource(1_764_559_146_000_000)
        trade_ids = IdSource(2_840_141_029_000_000)
        self._hubs: dict[str, SymbolHub] = {}
        for sym, spec in self.specs.items():
            if self.tape is not None and sym in self.tape.symbols:
                self._hubs[sym] = ReplayHub(
                    ReplayMarket(self.tape.symbols[sym], event_ids, trade_ids, seed), loop=loop,
                    random_faults=RandomFaults(rates, f"{seed}:{sym}"), notifier=self._notifier,
                    clock_ms=clock_ms, seed=seed, record_truth=record_truth,
                    truth_writer=self._writer)
                continue
            market = Market(spec, seed, plan[sym].depth if sym in plan else depth, event_ids,
                            trade_ids, flow)
            self._hubs[sym] = SymbolHub(
                market, active=sym in active and sym not in plan,
                random_faults=RandomFaults(rates, f"{seed}:{sym}"),
                notifier=self._notifier, clock_ms=clock_ms, seed=seed,
                record_truth=record_truth, truth_writer=self._writer)
        self._built = dict(self._hubs)  # every symbol it can serve; set_listed picks the listed
        self._built_specs = dict(self.specs)
        self.stats: dict[str, SymbolStats] = {s: h.stats for s, h in self._hubs.items()}
        self.rejected_unknown = 0  # handshakes (v1) or subscriptions (current) of unlisted symbols
        self.current_refused = 0  # current-API handshakes refused (injected or random)
        self.current_connections = 0  # current-API sockets open now
        self._current_faults = RandomFaults(rates, f"{seed}:current")  # its handshake faults
        if limits is None:
            limits = exchange is not None
        if isinstance(limits, bool):
            limits = SimLimits() if limits else None
        self.limits: SimLimits | None = limits
        self.exchange_stats = ExchangeStats()  # every 429 answered, blips
        self._gate = Gate(limits, self.exchange_stats, self._notifier.notify)
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._conn_ids = itertools.count(1)
        self.host = ""
        self.port = 0

    @classmethod
    def whole(
        cls,
        n: int = GEMINI_LISTED,
        busy: int = 10,
        rate: float | None = 50.0,
        depth: int = 2_000,
        *,
        quiet_depth: int = 50,
        quiet_every: tuple[float, float] = (2.0, 180.0),
        perps: int | None = None,
        seed: int = 1,
        **kw: Any,
    ) -> SimExchange:
        """A whole exchange (``exchange.plan_exchange``): ``n`` listed symbols (Gemini's 347
        by default, 13 perpetuals), ``busy`` of them at ``rate`` updates/s with ``depth``
        levels, the rest quiet. Other keywords are the constructor's (``limits`` ...)."""
        if rate is not None and not rate > 0:
            raise ValueError("rate must be > 0, or None (manual: sim.advance)")
        plan = plan_exchange(n, busy, rate or 0.0, depth, quiet_depth=quiet_depth,
                             quiet_every=quiet_every, perps=perps, seed=seed)
        return cls(seed=seed, rate=rate, exchange=plan, **kw)

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if self._server is not None:
            raise RuntimeError("already started")
        self._server = await serve(
            self._handler, host, port, process_request=self._process_request,
            ping_interval=self.ping_interval, close_timeout=self.close_timeout,
            compression=None,  # keep CPU for the benchmark; v1 clients work without it
        )
        sock = next(iter(self._server.sockets))
        self.host, self.port = sock.getsockname()[:2]
        if self.tape is not None:
            if self.speed is not None:
                t0, wall0 = asyncio.get_running_loop().time(), self.clock_ms()
                for hub in self._built.values():
                    if isinstance(hub, ReplayHub):
                        task = asyncio.create_task(
                            hub.run_replay(self.speed, self.tape.start_ns, self.tape.span_ns,
                                           t0, wall0),
                            name=f"sim-replay-{hub.symbol}")
                        task.add_done_callback(self._flow_done)
                        self._tasks.append(task)
        elif self.plan is not None:
            if self.rate is not None:
                task = asyncio.create_task(self._run_schedule(), name="sim-schedule")
                task.add_done_callback(self._flow_done)
                self._tasks.append(task)
        elif self.rate is not None:
            for hub in self._built.values():
                if hub.active:
                    task = asyncio.create_task(hub.run_flow(self.rate), name=f"sim-flow-{hub.symbol}")
                    task.add_done_callback(self._flow_done)
                    self._tasks.append(task)
        log.info("simulator listening on %s", self.ws_url)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def __aenter__(self) -> Self:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def _run_schedule(self) -> None:
        """Whole-exchange mode: one task moves every market at its plan's rate."""
        assert self.plan is not None
        loop = asyncio.get_running_loop()
        schedule = Schedule(self.plan.rates, self.seed, loop.time())
        hubs = self._built
        woke = loop.time()
        while (at := schedule.next_at()) is not None:
            # TICK_S apart from the last wake-up, not TICK_S after its work: a pause after
            # the work added the work's time to every interval (about 2 ms at 5,000
            # updates/s), so each wake-up published twice the backlog, sent in a burst.
            await asyncio.sleep(max(woke + TICK_S, at) - loop.time())
            woke = loop.time()
            for symbol in schedule.due(woke):
                hubs[symbol].advance(1)

    @staticmethod
    def _flow_done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("market flow crashed", exc_info=task.exception())

    # ---- addresses -----------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        """Base URL; a client appends ``/SYMBOL?flags``."""
        return f"ws://{self.host}:{self.port}/v1/marketdata"

    @property
    def current_url(self) -> str:
        """The current API's URL (``wss://ws.gemini.com``); a client appends
        ``?snapshot=-1`` and sends SUBSCRIBE requests."""
        return f"ws://{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def symbols(self) -> list[str]:
        """Listed symbols (active first), upper case."""
        return list(self._hubs)

    # ---- control and observation ----------------------------------------------------------

    def _hub(self, symbol: str) -> SymbolHub:
        try:
            return self._built[symbol.upper()]
        except KeyError:
            raise KeyError(f"{symbol!r} is not listed on this simulator") from None

    def set_listed(self, symbols: Iterable[str]) -> None:
        """List only these (of the symbols it was built with): GET /v1/symbols answers them
        and new connections may ask only for them. Open connections are left alone; an
        unlisted active symbol's market keeps moving."""
        wanted = list(dict.fromkeys(s.upper() for s in symbols))
        unknown = [s for s in wanted if s not in self._built]
        if unknown:
            raise KeyError(f"{unknown[0]!r} was not given to this simulator")
        self.specs = {s: self._built_specs[s] for s in wanted}
        self._hubs.clear()  # in place: current-API connections hold this dict
        self._hubs.update((s, self._built[s]) for s in wanted)

    def blip(self) -> int:
        """A network blip: every open WebSocket of both APIs is dropped at once (its TCP
        transport aborted, no close frame). Returns how many were dropped."""
        dropped = 0
        for ws in self._server.connections if self._server is not None else ():
            if ws.transport is not None:
                ws.transport.abort()
                dropped += 1
        self.exchange_stats.blips += 1
        self.exchange_stats.blip_sockets += dropped
        log.info("blip: %d sockets dropped", dropped)
        self._notifier.notify()
        return dropped

    def control(self, path: str) -> dict[str, Any] | None:
        """The simulator's own routes, for a harness in another process: ``/sim/stats``
        and ``/sim/blip`` (a GET that drops every socket). None for any other path."""
        if path == "/sim/blip":
            return {"dropped": self.blip()}
        if path != "/sim/stats":
            return None
        stats = self.stats
        return {
            **self.exchange_stats.as_dict(),
            "listed": len(self._hubs),
            "current_connections": self.current_connections,
            "subscriptions": sum(st.connections for st in stats.values()),
            "updates": sum(st.updates for st in stats.values()),
            "symbols": {s: {"updates": st.updates, "connections": st.connections,
                            "handshakes": st.handshakes} for s, st in stats.items()},
        }

    def inject(self, symbol: str, kind: str | FaultKind, **params: Any) -> None:
        """Arm a one-shot fault for a symbol (see faults.py / README for exact timing)."""
        self._hub(symbol).inject(Fault.make(kind, **params))

    def advance(self, symbol: str, n: int = 1) -> None:
        """Publish n market updates for a symbol right now (any rate, even None). Replay:
        the next n steps of the tape (looping; without loop, stops at the end)."""
        self._hub(symbol).advance(n)

    def market(self, symbol: str) -> Market | ReplayMarket:
        return self._hub(symbol).market

    def replay_finished(self, symbol: str) -> bool:
        """Replay without loop: the symbol's tape has been played to the end."""
        hub = self._hub(symbol)
        return isinstance(hub, ReplayHub) and hub.finished

    def truth(self, symbol: str) -> TruthCursor:
        """A new cursor over the symbol's true book history."""
        log_ = self._hub(symbol).truth_log
        if log_ is None:
            raise RuntimeError("truth recording is off (record_truth=False)")
        return log_.cursor()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Return once ``predicate()`` is true; TimeoutError after ``timeout`` seconds.
        Re-checked on every counter change (and every 20 ms)."""
        await self._notifier.wait_for(predicate, timeout)

    # ---- websockets hooks -----------------------------------------------------------------

    def _process_request(self, connection: ServerConnection,
                         request: Request) -> Response | Awaitable[Response] | None:
        path, _, query = request.path.partition("?")
        if is_current_path(path) and request.headers.get("Upgrade", "").lower() == "websocket":
            return self._current_refusal() or self._gate.handshake()
        symbol = _ws_symbol(path)
        if symbol is None:
            control = self.control(path)
            if control is not None:
                return json_response(200, control)
            limited = self._gate.rest()
            if limited is not None:
                return limited
            status, body = rest.route(path, query, self.specs,
                                      {s: h.market for s, h in self._hubs.items()},
                                      self.clock_ms() // 1000)
            parts = [p for p in path.split("/") if p]
            hub = self._hubs.get(parts[-1].upper()) if parts else None
            if hub is not None:
                hub.stats.rest_requests += 1
            response = json_response(status, body)
            return self._later(response) if self.rest_delay > 0 else response
        hub = self._hubs.get(symbol)
        if hub is None:
            self.rejected_unknown += 1
            self._notifier.notify()
            raw = path.rstrip("/").rsplit("/", 1)[-1]
            return json_response(404, rest.error_body(
                "InvalidSymbol", f"Supplied value '{raw}' is not a valid symbol"))
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return None  # websockets answers 426
        refusal = hub.take_refusal()
        if refusal is not None:
            hub.stats.refused += 1
            return self._refusal_response(refusal)
        return None

    async def _later(self, response: Response) -> Response:
        await asyncio.sleep(self.rest_delay)
        return response

    def _current_refusal(self) -> Response | None:
        """A current-API handshake names no symbol: refused if any symbol has a refusal
        armed (the first listed one), else by a random ``refuse`` roll."""
        for hub in self._hubs.values():
            refusal = hub.take_refusal(roll=False)
            if refusal is not None:
                hub.stats.refused += 1
                break
        else:
            if not self._current_faults.roll_handshake(FaultKind.REFUSE):
                return None
            refusal = Fault.make(FaultKind.REFUSE)
            log.info("fault refuse fired (current API handshake)", extra={"random": True})
        self.current_refused += 1
        self._notifier.notify()
        return self._refusal_response(refusal)

    def _refusal_response(self, refusal: Fault) -> Response:
        status = int(refusal.params["status"])
        self._gate.refused(status)
        return refusal_response(status, refusal.params["retry_after"])

    def _unknown_subscription(self) -> None:
        self.rejected_unknown += 1
        self._notifier.notify()

    async def _handler(self, ws: ServerConnection) -> None:
        path, _, query = ws.request.path.partition("?") if ws.request else ("", "", "")
        if is_current_path(path):
            current = CurrentConnection(next(self._conn_ids), self._hubs, ws,
                                        snapshot_mode(query), self.send_buffer,
                                        self.close_timeout, self._conn_ids,
                                        self._unknown_subscription, self._gate.request)
            self.current_connections += 1
            self._notifier.notify()
            try:
                await current.serve()
            finally:
                self.current_connections -= 1
                self._notifier.notify()
            return
        symbol = _ws_symbol(path)
        hub = self._hubs[symbol or ""]
        conn = Connection(next(self._conn_ids), hub, ws, Subscription.from_query(query),
                          self.send_buffer, self.close_timeout)
        hub.attach(conn)
        tasks = [asyncio.create_task(conn.run_sender())]
        if conn.sub.heartbeat:
            tasks.append(asyncio.create_task(conn.run_heartbeats(self.heartbeat_s)))
        try:
            async for _ in ws:  # v1 clients send nothing; reading notices the close
                pass
        except ConnectionClosed:
            pass
        finally:
            hub.detach(conn)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _tape(replay: str | Path | Capture | Tape, symbols: Iterable[str] | None) -> Tape:
    if isinstance(replay, Tape):
        if symbols is None:
            return replay
        wanted = list(dict.fromkeys(s.upper() for s in symbols))
        missing = [s for s in wanted if s not in replay.symbols]
        if missing:
            raise ValueError(f"not in the replay: {', '.join(missing)}")
        return Tape(replay.path, {s: replay.symbols[s] for s in wanted}, replay.start_ns,
                    replay.end_ns, replay.counts)
    capture = replay if isinstance(replay, Capture) else load_capture(replay)
    return build_tape(capture, symbols)
