"""`collector run`, with the time of every file write noted (for the latency figures).

    python -m bench.probe --write-log FILE run --config CONFIG

Runs `collector.cli.main(["run", ...])` unchanged, after wrapping the writer's two ways
to write: the `collector.runtime.writer._os_write` seam (the Python thread's writes, the
seam the tests use to inject ENOSPC) and the C appender (`writer.APPENDER`, whose results
carry the time each append ended). Each write appends (time it ended, fd, bytes written)
to three int64 arrays, about 0.3 us per write (one per stream per writer batch, not per
record). At exit the arrays go to FILE with each fd's path, so the harness can give every
line of every `current.jsonl` the moment it was written.
"""

from __future__ import annotations

import array
import os
import sys
import time


def main() -> int:
    args = sys.argv[1:]
    if len(args) < 2 or args[0] != "--write-log":
        print("usage: python -m bench.probe --write-log FILE run --config CONFIG", file=sys.stderr)
        return 2
    log_path, rest = args[1], args[2:]
    from bench.common import dump_arrays
    from collector import cli
    from collector.runtime import writer

    t_ns, fds, sizes = array.array("q"), array.array("q"), array.array("q")
    paths: dict[int, str] = {}
    raw_write, now = os.write, time.time_ns

    def note(t: int, fd: int, n: int) -> None:
        t_ns.append(t)
        fds.append(fd)
        sizes.append(n)
        if fd not in paths:
            paths[fd] = os.readlink(f"/proc/self/fd/{fd}")

    def timed_write(fd: int, data: bytes | memoryview) -> int:
        n = raw_write(fd, data)
        note(now(), fd, n)
        return n

    writer._os_write = timed_write  # type: ignore[assignment]  # the seam, on purpose
    if os.environ.get("BENCH_APPENDER") == "0":  # experiment: every batch on the Python thread
        writer.APPENDER = None
    native = writer.APPENDER

    class TimedAppender:
        """The C appender, noting each append's end as its results give it."""

        def __init__(self) -> None:
            assert native is not None
            self.appender, self.fds = native(), [0]

        def serve(self) -> None:
            self.appender.serve()

        def fileno(self) -> int:
            return self.appender.fileno()

        def submit(self, batch: list[tuple[int, bytes]]) -> None:
            self.fds = [fd for fd, _ in batch]
            self.appender.submit(batch)

        def results(self) -> list[tuple[int, int, int]] | None:
            res = self.appender.results()
            for fd, (n, _, t) in zip(self.fds, res or ()):
                note(t, fd, n)
            return res

        def close(self) -> None:
            self.appender.close()

    if native is not None:
        writer.APPENDER = TimedAppender  # type: ignore[assignment]  # the same interface
    gc_log = os.environ.get("BENCH_GC_LOG")  # experiment: how long each collection takes
    if gc_log:
        import gc
        pauses: list[tuple[int, int]] = []
        started = [0]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started[0] = time.time_ns()
            else:
                pauses.append((info["generation"], time.time_ns() - started[0]))
        gc.callbacks.append(on_gc)

        import atexit

        def dump() -> None:
            with open(gc_log, "w") as f:
                f.writelines(f"{g} {ns}\n" for g, ns in pauses)
        atexit.register(dump)
    if os.environ.get("BENCH_GC_FREEZE"):  # experiment: freeze the heap once a book is live
        import gc

        from collector.runtime.feed import Feed
        went_live = Feed._went_live

        def frozen_live(self: Feed) -> float:
            at = went_live(self)
            gc.freeze()
            return at
        Feed._went_live = frozen_live  # type: ignore[method-assign]  # the probe's hook
    lag_log = os.environ.get("BENCH_LAG_LOG")  # experiment: when the collector's loop stalls
    if lag_log:
        import asyncio

        from collector.runtime.app import App
        stalls: list[tuple[int, int]] = []
        supervise = App._supervise

        async def lag() -> None:
            while True:
                t = time.time_ns()
                await asyncio.sleep(0.001)
                late = time.time_ns() - t - 1_000_000
                if late > 2_000_000:
                    stalls.append((time.time_ns(), late))

        async def supervised(self: App) -> int:
            task = asyncio.create_task(lag())
            try:
                return await supervise(self)
            finally:
                task.cancel()
                with open(f"{lag_log}.{os.getpid()}", "w") as f:
                    f.writelines(f"{at} {ns}\n" for at, ns in stalls)
        App._supervise = supervised  # type: ignore[method-assign]  # the probe's hook
    if os.environ.get("BENCH_SWITCH_INTERVAL"):  # experiment: the GIL hand-over interval
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))
    try:
        return cli.main(rest)
    finally:
        dump_arrays(log_path, {"paths": {str(k): v for k, v in paths.items()}},
                    t_ns=t_ns, fd=fds, n=sizes)


if __name__ == "__main__":
    sys.exit(main())
