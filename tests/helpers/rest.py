"""A REST server for tests: answers from a script, then passes requests on upstream."""

from __future__ import annotations

import asyncio

from collector.runtime.http import get_once


class ScriptedRest:
    """A REST server on 127.0.0.1 that answers from a script, then passes requests on to
    the simulator. Every answer closes its connection."""

    def __init__(self, upstream: str, script: list[bytes]) -> None:
        self.upstream = upstream
        self.script = script
        self.times: list[float] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.times.append(asyncio.get_running_loop().time())
        if self.script:
            writer.write(self.script.pop(0))
        else:
            target = head.split(b" ", 2)[1].decode()
            answer = await get_once(self.upstream + target, 1 << 20)
            writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%b"
                         % (answer.status, len(answer.body), answer.body))
        await writer.drain()
        writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
