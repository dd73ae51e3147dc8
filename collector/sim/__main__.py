"""``python -m collector.sim --port 8765 --symbols BTCUSD,ETHUSD --rate 50 --faults gap=0.001``,
``python -m collector.sim --replay GEMINI.ws.1.0 --speed 10 [--no-loop]``
or ``python -m collector.sim --exchange [347] --busy 10 --rate 50`` (a whole exchange)"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from .capture import load_capture
from .exchange import GEMINI_LISTED, plan_exchange
from .faults import parse_fault_spec
from .ratelimit import SimLimits
from .runner import run_simulator
from .server import SimExchange
from .tape import Tape, build_tape


def _symbols(text: str) -> list[str]:
    out = [s.strip().upper() for s in text.split(",") if s.strip()]
    if not out:
        raise argparse.ArgumentTypeError("at least one symbol")
    return out


def _faults(text: str) -> str:
    try:
        parse_fault_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("speed must be >= 0 (0 = as fast as clients take them)")
    return value


def _every(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"want LOW,HIGH seconds, got {text!r}") from None
    if not 0 < lo <= hi:
        raise argparse.ArgumentTypeError(f"want 0 < LOW <= HIGH, got {text!r}")
    return lo, hi


def _scale(text: str) -> float:
    value = _speed(text)
    if value == 0:
        raise argparse.ArgumentTypeError("scale must be > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="collector simulate",
        description="Run the simulated Gemini exchange (v1 WebSocket + REST) until SIGINT or "
                    "SIGTERM; the first line on stdout gives its URLs. Also: python -m collector.sim.",
        epilog="exit status: 0 stopped by SIGINT or SIGTERM; 2 usage error (a bad option, or a "
               "--replay file that cannot be read).")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765,
                   help="port to listen on; 0 picks a free one (default 8765)")
    p.add_argument("--symbols", type=_symbols, default=None,
                   help="comma-separated symbols with market activity (default BTCUSD,ETHUSD; "
                        "with --replay: every symbol of the capture)")
    p.add_argument("--listed", type=_symbols, default=None,
                   help="extra listed symbols with a quiet book (no updates)")
    p.add_argument("--rate", type=float, default=50.0,
                   help="updates per second per symbol (with --exchange: per busy symbol); "
                        "0 = as fast as clients take them")
    p.add_argument("--seed", type=int, default=1,
                   help="seed of the synthetic market: the same seed, the same market (default 1)")
    p.add_argument("--depth", type=int, default=None,
                   help="book levels per side (default 500; with --exchange: of the busy books, 2000)")
    p.add_argument("--faults", type=_faults, default="",
                   help='random faults, e.g. "gap=0.001,garbage=0.0005,close=0.0002"')
    p.add_argument("--heartbeat", type=float, default=5.0,
                   help="heartbeat interval, seconds (default 5)")
    p.add_argument("--ping-interval", type=float, default=20.0,
                   help="WebSocket ping interval, seconds (0 disables; default 20)")
    p.add_argument("--truth", default=None, help="write the true book history as JSON lines here")
    p.add_argument("--rest-delay", type=float, default=0.0, metavar="SECONDS",
                   help="answer REST requests this late, with the state of the moment they were "
                        "asked (default 0; up to 60)")
    p.add_argument("--replay", metavar="FILE", default=None,
                   help="play a recorded capture instead of the synthetic market (v2 l2 text "
                        "capture, .jsonl or .jsonl.zst; see collector/sim/README.md)")
    p.add_argument("--speed", type=_speed, default=1.0,
                   help="replay speed: 1 = recorded inter-arrival times, 10 = ten times "
                        "faster, 0 = as fast as clients take them (default 1)")
    p.add_argument("--loop", action=argparse.BooleanOptionalAction, default=True,
                   help="replay: restart from the beginning at the end of the capture; "
                        "connections are closed (1012) so clients resnapshot (default: loop)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log connections and faults (info level) on stderr")
    g = p.add_argument_group("whole exchange")
    g.add_argument("--exchange", type=int, nargs="?", const=GEMINI_LISTED, default=None, metavar="N",
                   help=f"list a whole exchange of N symbols (default {GEMINI_LISTED}, like Gemini): "
                        "a few busy books, the rest quiet; SIGUSR1 or GET /sim/blip drops every socket")
    g.add_argument("--busy", type=int, default=10, help="busy symbols, at --rate each (default 10)")
    g.add_argument("--quiet-depth", type=int, default=50,
                   help="levels per side of the quiet books (default 50)")
    g.add_argument("--quiet-every", type=_every, default=(2.0, 180.0), metavar="LOW,HIGH",
                   help="a quiet book's mean seconds between updates, drawn per symbol in this "
                        "range (default 2,180)")
    g.add_argument("--limits", action=argparse.BooleanOptionalAction, default=None,
                   help="answer 429 beyond Gemini's connection, request-weight and REST limits "
                        "(default: on with --exchange, else off)")
    g.add_argument("--limit-scale", type=_scale, default=1.0, metavar="F",
                   help="multiply the limits' counts by F, e.g. 0.01 to reach them quickly (default 1)")
    return p


async def _main(args: argparse.Namespace, tape: Tape | None = None) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, task.cancel)

    def ready(sim: SimExchange) -> None:
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGUSR1, sim.blip)

    limits: SimLimits | bool | None = args.limits
    if args.limit_scale != 1.0 and args.limits is not False:
        limits = SimLimits().scaled(args.limit_scale)
    with contextlib.suppress(asyncio.CancelledError):
        await run_simulator(args.port, args.symbols, args.rate, args.seed, args.faults,
                            args.heartbeat, host=args.host, depth=args.depth or 500,
                            listed=args.listed, ping_interval=args.ping_interval or None,
                            truth_path=args.truth, replay=tape, speed=args.speed, loop=args.loop,
                            ready=ready, exchange=args.plan, limits=limits,
                            rest_delay=args.rest_delay)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    tape = None
    args.plan = None
    if not 0 <= args.rest_delay <= 60:
        parser.error("--rest-delay must be between 0 and 60 seconds")
    if args.exchange is not None:
        if args.symbols is not None or args.listed is not None or args.replay is not None:
            parser.error("--exchange lists its own symbols: no --symbols, --listed or --replay")
        if not args.rate > 0:
            parser.error("--rate must be > 0 with --exchange")
        try:
            args.plan = plan_exchange(args.exchange, args.busy, args.rate, args.depth or 2_000,
                                      quiet_depth=args.quiet_depth, quiet_every=args.quiet_every,
                                      seed=args.seed)
        except ValueError as exc:
            parser.error(f"--exchange: {exc}")
    elif args.replay is not None:
        try:
            tape = build_tape(load_capture(args.replay), args.symbols)
        except (OSError, ValueError, RuntimeError) as exc:
            parser.exit(2, f"{parser.prog}: error: --replay {args.replay}: {exc}\n")
    elif args.symbols is None:
        args.symbols = ["BTCUSD", "ETHUSD"]
    asyncio.run(_main(args, tape))
    return 0


if __name__ == "__main__":
    sys.exit(main())
