"""A stand-in for systemd's end of the notify protocol: a bound AF_UNIX datagram socket."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable


class NotifySocket:
    """Stands in for systemd: a bound AF_UNIX datagram socket collecting messages."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def close(self) -> None:
        self.sock.close()

    async def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = 10.0,
                       what: str = "") -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while not predicate(self.messages):
                    try:  # re-check now and then: some predicates watch more than messages
                        data = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), 0.05)
                    except TimeoutError:
                        continue
                    self.messages.append(data.decode())
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what or predicate}; got {self.messages}") from None
        return self.messages

    def count(self, text: str, after: int = 0) -> int:
        return sum(1 for m in self.messages[after:] if text in m.split("\n"))


def index_of(messages: list[str], text: str) -> int:
    return next(i for i, m in enumerate(messages) if text in m.split("\n"))

