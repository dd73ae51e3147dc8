"""The heartbeat file and `collector health`.

With no metrics listener, Monitor (monitor.py) writes health.py's verdict to
`<output.dir>/.collector.health` every `HEARTBEAT_S` and whenever it changes, and
removes the file at the end. `collector health` asks /healthz when `metrics.listen`
is set, else reads that file (one older than `HEARTBEAT_STALE_S` is unhealthy).
"""

from __future__ import annotations

import http.client
import os
import time
from pathlib import Path

import orjson

from collector.config import parse_listen
from collector.core.health import HEARTBEAT_STALE_S, Problem

HEALTH_FILE = ".collector.health"
PROBE_TIMEOUT_S = 5.0


def write_heartbeat(path: Path, problems: list[Problem], wall: float) -> None:
    """Atomically replace the heartbeat file (called off the loop). The temp file is
    created anew (O_EXCL: whatever was left under its name, a symlink too, is removed,
    never written through) and renamed over the file (a rename replaces a symlink, it
    does not follow it)."""
    body = orjson.dumps({"time": wall, "pid": os.getpid(), "healthy": not problems,
                         "problems": [p.as_dict() for p in problems]})
    tmp = path.name + ".tmp"
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=dir_fd)
        try:
            view = memoryview(body + b"\n")
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def read_heartbeat(path: Path, wall: float, stale_s: float = HEARTBEAT_STALE_S) -> tuple[bool, str]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as f:  # never a symlink's target: not ours to show
            data = orjson.loads(f.read(1 << 20))
        age = wall - float(data["time"])
        problems = list(data["problems"])
    except FileNotFoundError:
        return False, f"{path}: no heartbeat file (collector not running, or metrics.listen is set)"
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        return False, f"{path}: unreadable heartbeat file: {exc}"
    if age > stale_s:
        return False, f"{path}: heartbeat {age:.0f} s old (collector stopped or stuck)"
    text = orjson.dumps({"status": "ok" if not problems else "unhealthy", "problems": problems,
                         "age_s": round(age, 1)}).decode()
    return not problems, text


def probe(listen: str, directory: Path, timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """`collector health`: GET /healthz on the metrics listener if there is one, else
    read the heartbeat file. Returns (healthy, text to print)."""
    if not listen:
        return read_heartbeat(directory / HEALTH_FILE, time.time())
    host, port = parse_listen(listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # a wildcard: ask locally
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace").strip()
    except (OSError, http.client.HTTPException) as exc:
        return False, f"http://{listen}/healthz: {exc or type(exc).__name__}"
    finally:
        conn.close()
    return resp.status == 200, body
