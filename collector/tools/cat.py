"""`collector cat DIR`: recorded records as JSON lines, in order across segments
(what it reads, and how times are given: `collector.tools.reading`)."""

from __future__ import annotations

import argparse
import os
import sys

from collector.tools.decoding import ReadError
from collector.tools.reading import read_lines

CAT_USAGE = "collector cat DIR|nats://HOST:PORT/STREAM [--symbol S ...] [--from T] [--to T] [--type TYPE ...]"
TAIL_USAGE = "collector tail nats://HOST:PORT/STREAM [--symbol S ...] [--from T] [--type TYPE ...]"


def _cat_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="collector cat", usage=CAT_USAGE,
        description="Print recorded records as JSON lines, in order across segments "
                    "(compressed or not); several symbols are merged by recv_ns.",
        epilog="T: ISO 8601 (2026-11-24T06:00:00Z; no offset means UTC) or epoch milliseconds. "
               "Records with FROM <= recv_ns < TO are printed. Carry-over book copies at "
               "segment starts are dropped; headers are printed only with --type header. "
               "Exit status: 0 done (also when the reader of stdout went away); 1 data that "
               "cannot be read; 2 usage error (bad arguments, no such directory).")
    p.add_argument("dir", metavar="DIR", help="the output directory (output.dir), or a stream the "
                   "collector publishes to: nats://[TOKEN@]HOST:PORT/STREAM[?subject=S&creds=FILE&tls_ca=FILE]")
    p.add_argument("--symbol", "-s", action="append", default=None, metavar="S",
                   help="only this symbol (repeat, or comma-separate, for several; default: all)")
    p.add_argument("--from", dest="start", metavar="T", help="first receive time (inclusive)")
    p.add_argument("--to", dest="end", metavar="T", help="last receive time (exclusive)")
    p.add_argument("--type", "-t", action="append", default=None, metavar="TYPE",
                   help="only records of this type: book, trade, auction, resync, header "
                        "(repeat, or comma-separate, for several)")
    return p


def _tail_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="collector tail", usage=TAIL_USAGE,
        description="Follow the records a collector publishes to NATS JetStream ([publish]) as they "
                    "arrive, as JSON lines (the same lines as in the files), until interrupted.",
        epilog="T: as for collector cat. Without --from, only records stored from now on. "
               "Exit status: 0 the reader of stdout went away; 1 the stream cannot be read; "
               "2 usage error; 130 interrupted.")
    p.add_argument("source", metavar="nats://HOST:PORT/STREAM",
                   help="nats://[TOKEN@]HOST:PORT/STREAM[?subject=S&creds=FILE&tls_ca=FILE]")
    p.add_argument("--symbol", "-s", action="append", default=None, metavar="S",
                   help="only this symbol (repeat, or comma-separate, for several; default: all)")
    p.add_argument("--from", dest="start", metavar="T", help="start at this receive time")
    p.add_argument("--type", "-t", action="append", default=None, metavar="TYPE",
                   help="only records of this type: book, trade, auction, resync")
    return p


def main_tail(argv: list[str]) -> int:
    """`collector tail nats://...`: 130 when interrupted, 0 when stdout's reader went away,
    1 when the stream cannot be read, 2 usage error."""
    import asyncio

    import orjson

    from collector.publish import nats_read
    from collector.tools.reading import parse_time

    parser = _tail_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    types = set(_split(args.type) or ())
    try:
        if not nats_read.is_source(args.source):
            raise ValueError(f"not a nats:// or tls:// source: {args.source!r}")
        start = parse_time(args.start) if args.start is not None else None
    except (ValueError, TypeError) as exc:
        print(f"collector tail: error: {exc}", file=sys.stderr)
        return 2
    out = sys.stdout.buffer

    async def tail() -> None:
        async for batch in nats_read.follow(args.source, _split(args.symbol, upper=True), start):
            if types:
                batch = [d for d in batch if orjson.loads(d).get("type") in types]
            out.writelines(d + b"\n" for d in batch)
            out.flush()

    try:
        asyncio.run(tail())
    except ReadError as exc:
        print(f"collector tail: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
        return 0
    except KeyboardInterrupt:
        return 130
    return 0


def _split(values: list[str] | None, upper: bool = False) -> list[str] | None:
    if values is None:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return [v.upper() for v in out] if upper else out


def main_cat(argv: list[str]) -> int:
    """`collector cat`: 0 done (also when the reader of stdout went away), 1 unreadable
    data, 2 usage error (bad arguments, missing directory)."""
    parser = _cat_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return int(exc.code or 0)
    try:
        lines = read_lines(args.dir, _split(args.symbol, upper=True), args.start, args.end,
                           _split(args.type))
    except ReadError as exc:  # a directory that cannot be listed
        print(f"collector cat: {exc}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError) as exc:
        print(f"collector cat: error: {exc}", file=sys.stderr)
        return 2
    out = sys.stdout.buffer
    batch: list[bytes] = []
    try:
        for line in lines:
            batch.append(line)
            if len(batch) >= 512:
                out.writelines(batch)
                batch.clear()
        out.writelines(batch)
        out.flush()
    except BrokenPipeError:
        # the reader went away (`collector cat ... | head`): stop quietly, and keep
        # Python from complaining again when it flushes stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
        return 0
    except ReadError as exc:
        try:
            out.writelines(batch)  # the records before the unreadable one
            out.flush()
        except OSError:
            pass
        print(f"collector cat: {exc} (run `collector verify` for every problem)", file=sys.stderr)
        return 1
    except OSError as exc:  # unreadable file, failed write to stdout
        print(f"collector cat: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
