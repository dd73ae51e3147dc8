"""`collector` command line: run, health, demo, simulate, cat, verify, replay; exit 78 on a bad config."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import resource
import secrets
import stat
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import structlog

from collector import __version__, config
from collector.core.format import RAW_DIR
from collector.core.symbols import has_globs
from collector.ops import logs

EX_IOERR = 74  # output.dir failed for a reason a restart may fix (disk full, I/O error)
PROBE_PREFIX = ".collector-probe-"
# Failures a restart may fix (exit 74, systemd restarts); any other (permissions, a read-only
# mount, a path that cannot exist) is the operator's to mend: exit 78, no restart loop.
_TRANSIENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM, errno.ENFILE,
                     errno.EMFILE, errno.EAGAIN, errno.EINTR, errno.ESTALE, errno.ETIMEDOUT,
                     errno.EBUSY}


class StartError(Exception):
    """A start-up check failed for a reason a restart may fix (exit EX_IOERR)."""


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


def prepare_output_dir(cfg: config.Config) -> None:
    """Create output.dir if missing and prove it writable, or ConfigError (StartError when
    a restart may help). The proof is a probe file created and removed in each existing
    folder the writer would create files in: the very operation the writer does, with the
    process's effective credentials, so permissions, ACLs, a read-only or ProtectSystem
    mount, an immutable flag or a security module all show. os.access() answers for the
    real uid instead and is blind to some of these. A symlink at output.dir itself is
    followed: the operator chose it in the config (say, to another disk), as trusted as the
    config itself; links inside the tree, which anyone able to write there can plant, are
    not followed here (a symbol folder that is a link is not probed)."""
    out = cfg.output.dir

    def fail(why: str) -> config.ConfigError:
        return config.ConfigError(f"{cfg.path or '<config>'}: output.dir: {out}: {why}")

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        # ENOTDIR, or EEXIST from a file or a dangling link: name what stands in the way
        blocker = next((p for p in [*reversed(out.parents), out] if _not_a_dir(p)), None)
        if blocker == out:
            raise fail(f"is {_describe(out)}, not a directory") from None
        if blocker is not None:
            raise fail(f"lies under {blocker}, {_describe(blocker)}, not a directory") from None
        raise _os_fail(fail, "cannot be created", exc) from None
    subdirs = [out / s for s in cfg.feed.symbols]  # left by an earlier run, or another user
    if cfg.output.raw:
        subdirs += [out / s / RAW_DIR for s in cfg.feed.symbols]
    for folder in [out, *(d for d in subdirs if stat.S_ISDIR(_lmode(d)))]:
        probe = folder / f"{PROBE_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600))
            os.unlink(probe)
        except OSError as exc:
            where = "" if folder == out else f" (in {folder})"
            raise _os_fail(fail, f"cannot be written{where}", exc) from None


def _lmode(path: Path) -> int:
    try:
        return path.lstat().st_mode
    except OSError:
        return 0


def _not_a_dir(path: Path) -> bool:
    if not _lmode(path):
        return False  # missing: mkdir makes it
    try:
        return not stat.S_ISDIR(path.stat().st_mode)
    except OSError:
        return True


def _describe(path: Path) -> str:
    """What stands where a directory is wanted."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return f"a symbolic link that cannot be followed ({exc.strerror})"
    kind = "a regular file" if stat.S_ISREG(mode) else "a special file"
    return f"a symbolic link to {kind}" if stat.S_ISLNK(_lmode(path)) else kind


def _os_fail(fail: Callable[[str], config.ConfigError], what: str, exc: OSError) -> Exception:
    why = f"{what}: {exc.strerror or exc}"
    err = fail(why)
    return StartError(str(err)) if exc.errno in _TRANSIENT_ERRNOS else err


def raise_fd_limit(cfg: config.Config) -> tuple[int, int] | None:
    """Raise RLIMIT_NOFILE's soft limit when the symbols need more descriptors than it
    allows (to twice the need, within the hard limit, leaving room for symbols a reload
    adds); ConfigError naming feed.symbols when even the hard limit is too low. Returns
    (old, new) when it raised the limit."""
    need = config.fds_needed(cfg)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinite = resource.RLIM_INFINITY
    if soft == infinite or soft >= need:
        return None
    globs = " (a glob counts as a whole exchange)" if has_globs(cfg.feed.symbols) else ""
    why = (f"{config.symbols_planned(cfg)} symbols need {need} file descriptors{globs}, "
           f"{config.FD_RESERVE} of them reserved")
    hint = "raise it (LimitNOFILE= in the systemd unit, ulimit -n in a shell) or list fewer symbols"
    where = f"{cfg.path or '<config>'}: feed.symbols"
    if hard != infinite and hard < need:
        raise config.ConfigError(f"{where}: {why}, more than the hard limit of open files "
                                 f"(RLIMIT_NOFILE) {hard}: {hint}")
    new = 2 * need if hard == infinite else min(hard, 2 * need)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (OSError, ValueError) as exc:
        raise config.ConfigError(f"{where}: {why}, more than the open files limit (RLIMIT_NOFILE) "
                                 f"{soft}, which could not be raised ({exc}): {hint}") from None
    return soft, new


def _start_checks(cfg: config.Config) -> None:
    """What the config cannot say by itself: exit 78 (or 74) before anything runs."""
    try:
        raised = raise_fd_limit(cfg)  # first: a config refused here leaves no folder behind
        prepare_output_dir(cfg)
    except config.ConfigError as exc:
        print(f"collector: config error: {exc}", file=sys.stderr)
        raise SystemExit(config.EX_CONFIG) from None
    except StartError as exc:
        print(f"collector: cannot start: {exc}", file=sys.stderr)
        raise SystemExit(EX_IOERR) from None
    if raised:
        structlog.get_logger("cli").info("raised the open files limit", old=raised[0],
                                         new=raised[1], need=config.fds_needed(cfg))


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load_config(args.config)
    logs.configure(cfg.log.level)
    _start_checks(cfg)
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
