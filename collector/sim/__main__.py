"""``python -m collector.sim --port 8765 --symbols BTCUSD,ETHUSD --rate 50 --faults gap=0.001``
or ``python -m collector.sim --replay GEMINI.ws.1.0 --speed 10 [--no-loop]``"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from .capture import load_capture
from .faults import parse_fault_spec
from .server import run_simulator
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m collector.sim",
                                description="Run the simulated Gemini exchange (v1 WebSocket + REST).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--symbols", type=_symbols, default=None,
                   help="comma-separated symbols with market activity (default BTCUSD,ETHUSD; "
                        "with --replay: every symbol of the capture)")
    p.add_argument("--listed", type=_symbols, default=None,
                   help="extra listed symbols with a quiet book (no updates)")
    p.add_argument("--rate", type=float, default=50.0,
                   help="updates per second per symbol; 0 = as fast as clients take them")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--depth", type=int, default=500, help="book levels per side")
    p.add_argument("--faults", type=_faults, default="",
                   help='random faults, e.g. "gap=0.001,garbage=0.0005,close=0.0002"')
    p.add_argument("--heartbeat", type=float, default=5.0, help="heartbeat interval, seconds")
    p.add_argument("--ping-interval", type=float, default=20.0,
                   help="WebSocket ping interval, seconds (0 disables)")
    p.add_argument("--truth", default=None, help="write the true book history as JSON lines here")
    p.add_argument("--replay", metavar="FILE", default=None,
                   help="play a recorded capture instead of the synthetic market (v2 l2 text "
                        "capture, .jsonl or .jsonl.zst; see collector/sim/README.md)")
    p.add_argument("--speed", type=_speed, default=1.0,
                   help="replay speed: 1 = recorded inter-arrival times, 10 = ten times "
                        "faster, 0 = as fast as clients take them (default 1)")
    p.add_argument("--loop", action=argparse.BooleanOptionalAction, default=True,
                   help="replay: restart from the beginning at the end of the capture; "
                        "connections are closed (1012) so clients resnapshot (default: loop)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


async def _main(args: argparse.Namespace, tape: Tape | None = None) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await run_simulator(args.port, args.symbols, args.rate, args.seed, args.faults,
                            args.heartbeat, host=args.host, depth=args.depth, listed=args.listed,
                            ping_interval=args.ping_interval or None, truth_path=args.truth,
                            replay=tape, speed=args.speed, loop=args.loop)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    tape = None
    if args.replay is not None:
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
