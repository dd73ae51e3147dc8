"""systemd's notify protocol, without libsystemd: one datagram per message.

`NOTIFY_SOCKET` names an AF_UNIX datagram socket, a path or, with a leading `@`,
a name in the abstract namespace. A message is newline-separated `KEY=value`
assignments (`READY=1`, `STATUS=...`, `WATCHDOG=1`, `STOPPING=1`). Without
`NOTIFY_SOCKET` (a terminal, Docker, tests) every send is a no-op, so callers
never ask whether they run under systemd.

`WATCHDOG_USEC` (and `WATCHDOG_PID`, when set, naming this process) asks for
`WATCHDOG=1` more often than that; systemd's advice, followed here, is every half.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger("notify")


def socket_address(value: str) -> str | None:
    """`NOTIFY_SOCKET` -> an address for sendto, or None for one we cannot use.

    `@name` is abstract (`\\0name` on the wire); a path must be absolute. systemd
    also knows `vsock:` addresses (from v253); they are not supported here.
    """
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


class Notifier:
    """Sends notify messages to one socket; every failure is logged once, never raised."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.sent = 0
        self._sock: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        value = env.get("NOTIFY_SOCKET", "")
        address = socket_address(value) if value else None
        if value and address is None:
            log.warning("NOTIFY_SOCKET not understood; not notifying", notify_socket=value)
        return cls(address)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """Send `KEY=value` lines as one datagram; True if it was sent."""
        if self.address is None:
            return False
        message = "\n".join(assignments).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)  # systemd reads fast; never stall the loop on it
            self._sock.sendto(message, self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.error("cannot notify systemd", notify_socket=self.address.replace("\0", "@"),
                          error=str(exc))
            return False
        if self._failed:
            self._failed = False
            log.info("notifying systemd again")
        self.sent += 1
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between `WATCHDOG=1` messages (half of `WATCHDOG_USEC`), or None when
    no watchdog is asked for, or it is meant for another process (`WATCHDOG_PID`)."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 2e6
