"""`collector` command line: run, simulate, demo; exit 78 on a bad config."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

from collector import __version__, config, logs


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
    from collector.app import App

    async def main() -> int:
        return await App(cfg).run()

    return _event_loop_run(main())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="collector", description=__doc__)
    parser.add_argument("--version", action="version", version=f"collector {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="record the configured symbols until SIGTERM")
    run.add_argument("--config", default="config.toml", help="TOML config (default ./config.toml)")
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
