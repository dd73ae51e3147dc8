"""`collector` command line: run, health, demo, simulate, cat, verify, replay; exit 78 on a bad config."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine
from typing import Any

from collector import __version__, config
from collector.ops import logs


def _event_loop_run(main: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when it is installed, else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _load_config(path: str) -> config.Config:
    try:
        return config.load(path)
    except config.ConfigError as exc:
        print(f"collector: config error: {exc}", file=sys.stderr)
        raise SystemExit(config.EX_CONFIG) from None


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load_config(args.config)
    logs.configure(cfg.log.level)
    from collector.runtime.app import App

    async def main() -> int:
        return await App(cfg).run()

    return _event_loop_run(main())


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 when the running collector is healthy, else 1 (Docker HEALTHCHECK, scripts)."""
    try:
        cfg = config.load(args.config)
    except config.ConfigError as exc:
        print(f"collector health: config error: {exc}", file=sys.stderr)
        return 1
    from collector.ops.heartbeat import probe

    ok, text = probe(cfg.metrics.listen, cfg.output.dir)
    print(text)
    return 0 if ok else 1


# Subcommands whose module owns its options (and their --help): argv is forwarded untouched.
FORWARDED = {
    "simulate": ("collector.sim.__main__", "main",
                 "run the simulated Gemini exchange (options: collector simulate --help)"),
    "cat": ("collector.tools.cat", "main_cat",
            "stream recorded records across segments as JSON lines"),
    "verify": ("collector.tools.verify", "main_verify",
               "check every file of an output directory; exit 1 on problems"),
    "replay": ("collector.tools.replay", "main_replay",
               "rebuild records from raw frames (output.raw = true)"),
}


def cmd_forward(args: argparse.Namespace, argv: list[str]) -> int:
    import importlib

    module, func, _ = FORWARDED[args.command]
    return int(getattr(importlib.import_module(module), func)(argv))


def _demo_symbols(text: str) -> tuple[str, ...]:
    from collector.sim import spec_for
    from collector.tools import demo

    symbols = [s.strip().upper() for s in text.split(",") if s.strip()]
    try:
        checked = demo.check_symbols(symbols)
        for s in checked:
            spec_for(s)
    except (config.ConfigError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("<config>: feed.symbols: ")) from None
    return checked


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def cmd_demo(args: argparse.Namespace) -> int:
    from collector.tools import demo

    # ./config.toml is optional for the demo; a --config that was asked for is not.
    path = args.config or "config.toml"
    base = _load_config(path) if args.config or os.path.exists(path) else None
    opts = demo.DemoOptions(seconds=args.seconds, symbols=args.symbols, chaos=args.chaos,
                            rate=args.rate, seed=args.seed, every=args.every,
                            verbose=args.verbose)
    return _event_loop_run(demo.run_demo(base, opts))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="collector", description=__doc__)
    parser.add_argument("--version", action="version", version=f"collector {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="record the configured symbols until SIGTERM")
    run.add_argument("--config", default="config.toml", help="TOML config (default ./config.toml)")
    run.set_defaults(func=cmd_run)
    health = sub.add_parser(
        "health", help="exit 0 if the running collector is healthy, else 1",
        description="Ask the running collector's /healthz ([metrics] listen), or read the "
                    "heartbeat file in its output directory when metrics are off; print the "
                    "problems; exit 0 when healthy, 1 when not (or not running).")
    health.add_argument("--config", default="config.toml", help="TOML config (default ./config.toml)")
    health.set_defaults(func=cmd_health)
    for name, (_, _, summary) in FORWARDED.items():
        sub.add_parser(name, add_help=False, help=summary).set_defaults(func=cmd_forward)
    demo = sub.add_parser(
        "demo", help="record a simulated market live: simulator + collector, with a status view",
        description="Start the simulated exchange in-process and the collector against it, "
                    "with config.toml's book and output settings; show live status; "
                    "print a summary on exit (Ctrl-C, SIGTERM or --seconds).")
    demo.add_argument("--seconds", type=_positive, default=None,
                      help="stop after this many seconds (default: run until Ctrl-C)")
    demo.add_argument("--symbols", type=_demo_symbols, default=None,
                      help="comma-separated symbols (default: config.toml's, else BTCUSD,ETHUSD,SOLUSD)")
    demo.add_argument("--chaos", action="store_true",
                      help="random faults in the simulator: watch resyncs happen and heal")
    demo.add_argument("--config", default=None,
                      help="TOML config for book and output settings (default ./config.toml "
                           "if it exists, else built-in defaults)")
    demo.add_argument("--rate", type=_positive, default=20.0,
                      help="simulated updates per second per symbol (default 20)")
    demo.add_argument("--seed", type=int, default=1, help="simulator seed (default 1)")
    demo.add_argument("--every", type=_positive, default=None,
                      help="status interval in seconds (default 0.5 on a terminal, "
                           "else 5: one plain line per symbol)")
    demo.add_argument("-v", "--verbose", action="store_true",
                      help="info-level logs on stderr (they scroll over the terminal view)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # parse_known_args so `simulate` can take the simulator's own options; for the other
    # commands leftovers are an error exactly as parse_args would report it.
    args, rest = parser.parse_known_args(argv)
    if args.command in FORWARDED:
        return cmd_forward(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
