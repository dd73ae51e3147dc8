"""``python -m collector.sim --port 8765 --symbols BTCUSD,ETHUSD --rate 50 --faults gap=0.001``"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from .faults import parse_fault_spec
from .server import run_simulator


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m collector.sim",
                                description="Run the simulated Gemini exchange (v1 WebSocket + REST).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--symbols", type=_symbols, default=["BTCUSD", "ETHUSD"],
                   help="comma-separated symbols with market activity (default BTCUSD,ETHUSD)")
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
    p.add_argument("-v", "--verbose", action="store_true")
    return p


async def _main(args: argparse.Namespace) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await run_simulator(args.port, args.symbols, args.rate, args.seed, args.faults,
                            args.heartbeat, host=args.host, depth=args.depth, listed=args.listed,
                            ping_interval=args.ping_interval or None, truth_path=args.truth)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
