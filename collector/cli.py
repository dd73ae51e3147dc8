"""`collector` command line: init, run, health, demo, simulate, cat, verify, replay; exit 78 on a
bad config."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import resource
import secrets
import shutil
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
SAMPLE_CONFIG = "sample_config.toml"  # package data: a link to the repository's config.toml
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
        if not os.path.lexists(path):
            print(f"collector: `collector init {path}` writes a commented sample config there; "
                  "set feed.symbols in it", file=sys.stderr)
        raise SystemExit(config.EX_CONFIG) from None


def sample_config() -> bytes:
    """The commented sample config that `collector init` writes (shipped as package data)."""
    from importlib import resources

    return resources.files("collector").joinpath(SAMPLE_CONFIG).read_bytes()


def cmd_init(args: argparse.Namespace) -> int:
    """Write the sample config to PATH (into it, when it is a directory); never overwrite."""
    path = Path(args.path)
    if path.is_dir():
        path = path / "config.toml"
    data = sample_config()
    try:
        # O_EXCL: an existing file, or a link there, is refused without a window to race
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        print(f"collector init: {path} exists; not overwritten (move it away, or give another "
              "PATH)", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"collector init: {path}: cannot create: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as exc:
        os.unlink(path)  # no half-written config left behind for `collector run` to trip on
        print(f"collector init: {path}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}: set feed.symbols, then `collector run --config {path}` "
          "(or try `collector demo` first)")
    return 0


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


def cmd_publish(args: argparse.Namespace) -> int:
    """The publisher alone ([publish]: collector/publish/service.py); `--child`: as the
    process `collector run` starts, its config on stdin."""
    from collector.publish import service

    if args.child:
        return _event_loop_run(service.child_main())
    cfg = _load_config(args.config)
    service.configure_logs(cfg.log.level)
    if not cfg.publish.enabled:
        print(f"collector publish: config error: {cfg.path}: publish.url: empty: publishing is off",
              file=sys.stderr)
        return config.EX_CONFIG
    try:
        prepare_output_dir(cfg)  # it writes cursors and its status there
    except config.ConfigError as exc:
        print(f"collector publish: config error: {exc}", file=sys.stderr)
        return config.EX_CONFIG
    except StartError as exc:
        print(f"collector publish: cannot start: {exc}", file=sys.stderr)
        return EX_IOERR
    return _event_loop_run(service.Service(cfg).run())


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
            "stream recorded records across segments (or from NATS) as JSON lines"),
    "tail": ("collector.tools.cat", "main_tail",
             "follow the records published to NATS JetStream ([publish]) as they arrive"),
    "verify": ("collector.tools.verify", "main_verify",
               "check every file of an output directory; exit 1 on problems"),
    "replay": ("collector.tools.replay", "main_replay",
               "rebuild records from raw frames (output.raw = true)"),
    "probe": ("collector.tools.probe", "main_probe",
              "measure REST against the stream: latency, set-up, staleness (table, conclusion)"),
}


def cmd_forward(args: argparse.Namespace, argv: list[str]) -> int:
    import importlib

    module, func, _ = FORWARDED[args.command]
    return int(getattr(importlib.import_module(module), func)(argv))


def _demo_symbols(text: str) -> tuple[str, ...]:
    from collector.sim import spec_for
    from collector.tools import demo

    if text.strip().lower() == "all":
        return demo.ALL  # a whole simulated exchange
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


Exits = list[tuple[int | str, str]]  # (status, meaning) for --help


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that ends its --help with a table of exit statuses. `exits` may be
    a function, called only when --help prints: `run`'s statuses are named in modules too
    heavy to import for every command."""

    def __init__(self, *args: Any, exits: Exits | Callable[[], Exits] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exits = exits

    def format_help(self) -> str:
        text = super().format_help()
        if self.exits is None:
            return text
        import textwrap

        rows = self.exits() if callable(self.exits) else self.exits
        width = max(40, min(100, shutil.get_terminal_size().columns) - 2)
        lines = [textwrap.fill(meaning, width, initial_indent=f"  {status!s:<7}",
                               subsequent_indent=" " * 9) for status, meaning in rows]
        return text + "\nexit status:\n" + "\n".join(lines) + "\n"


def _run_exits() -> Exits:
    from collector.ops.monitor import EX_SOFTWARE
    from collector.runtime.app import EX_LOCKED

    return [(0, "stopped by SIGTERM or SIGINT: queue drained, files fsynced"),
            (1, "the writer died, or the metrics address cannot be bound"),
            (2, "usage error"),
            (EX_SOFTWARE, "no progress: event loop blocked or writer stuck for health.exit_after_s"),
            (EX_IOERR, "output.dir failed in a way a restart may fix (disk full, I/O error)"),
            (EX_LOCKED, "another collector holds output.dir"),
            (config.EX_CONFIG, "the config does not validate, or output.dir is refused; "
                               "a restart would not help (systemd: RestartPreventExitStatus)")]


def _publish_exits() -> Exits:
    from collector.publish.service import EX_LOCKED

    return [(0, "stopped by SIGTERM or SIGINT (caught up, or publish.stop_timeout_s spent), or "
                "[publish] switched off by SIGHUP"),
            (1, "an unexpected failure"),
            (2, "usage error"),
            (EX_IOERR, "output.dir failed in a way a restart may fix"),
            (EX_LOCKED, "another publisher holds output.dir"),
            (config.EX_CONFIG, "the config does not validate, [publish] is off, output.dir is refused, "
                               "or NATS refused the credentials or the stream at the start")]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="collector",
                    description="Record Gemini market data (exact full-depth books, trades) "
                                "into whole-line JSON files.",
                    epilog="`collector COMMAND --help` explains each command, its arguments "
                           "and its exit statuses. Start with `collector init` (a sample "
                           "config) or `collector demo` (a simulated market, recorded live).")
    parser.add_argument("--version", action="version", version=f"collector {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=Parser)
    init = sub.add_parser(
        "init", help="write a commented sample config (./config.toml); never overwrite",
        description="Write the commented sample config, every key with its default, to PATH "
                    "(into PATH/config.toml when PATH is a directory). An existing file is "
                    "never overwritten.",
        exits=[(0, "written"), (1, "not written: PATH exists, or cannot be created"),
               (2, "usage error")])
    init.add_argument("path", nargs="?", default="config.toml", metavar="PATH",
                      help="where to write it (default ./config.toml)")
    init.set_defaults(func=cmd_init)
    run = sub.add_parser(
        "run", help="record the configured symbols until SIGTERM", exits=_run_exits,
        description="Record every symbol of feed.symbols into output.dir until SIGTERM or "
                    "SIGINT. SIGHUP re-reads the config (symbols and log level apply live) "
                    "and reopens the files. Under systemd it speaks the notify protocol "
                    "(READY=1, STATUS=, WATCHDOG=1).")
    run.add_argument("--config", default="config.toml",
                     help="TOML config (default ./config.toml; `collector init` writes one)")
    run.set_defaults(func=cmd_run)
    health = sub.add_parser(
        "health", help="exit 0 if the running collector is healthy, else 1",
        description="Ask the running collector's /healthz ([metrics] listen), or read the "
                    "heartbeat file in its output directory when metrics are off; print the "
                    "problems. For Docker's HEALTHCHECK and scripts.",
        exits=[(0, "healthy"), (1, "unhealthy, not running, or the config cannot be read"),
               (2, "usage error")])
    health.add_argument("--config", default="config.toml",
                        help="the running collector's TOML config (default ./config.toml): "
                             "where to find its /healthz or heartbeat file")
    health.set_defaults(func=cmd_health)
    publish = sub.add_parser(
        "publish", help="publish output.dir's records to NATS JetStream ([publish]) until SIGTERM",
        description="Publish every record of output.dir to the [publish] stream, following the "
                    "files, until SIGTERM or SIGINT (then catch up for publish.stop_timeout_s). "
                    "`collector run` starts this as its child process; run it yourself (its own "
                    "systemd unit) with publish.spawn = false. SIGHUP re-reads [publish].",
        exits=lambda: _publish_exits())
    publish.add_argument("--config", default="config.toml",
                         help="TOML config (default ./config.toml): output.dir and [publish]")
    publish.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # collector run's
    publish.set_defaults(func=cmd_publish)
    for name, (_, _, summary) in FORWARDED.items():
        sub.add_parser(name, add_help=False, help=summary).set_defaults(func=cmd_forward)
    demo = sub.add_parser(
        "demo", help="record a simulated market live: simulator + collector, with a status view",
        description="Start the simulated exchange in-process and the collector against it, "
                    "with config.toml's book and output settings; show live status; "
                    "print a summary on exit (Ctrl-C, SIGTERM or --seconds).",
        exits=[(0, "stopped: Ctrl-C, SIGTERM or --seconds"),
               (2, "usage error, or a symbol the simulator cannot list"),
               (config.EX_CONFIG, "a config that does not validate"),
               ("other", "the collector's own status, as for `collector run`")])
    demo.add_argument("--seconds", type=_positive, default=None,
                      help="stop after this many seconds (default: run until Ctrl-C)")
    demo.add_argument("--symbols", type=_demo_symbols, default=None,
                      help="comma-separated symbols (default: config.toml's, else BTCUSD,ETHUSD,SOLUSD); "
                           "`all`: a whole simulated exchange (347 symbols, 10 busy) on the current API")
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
