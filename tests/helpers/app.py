"""Helpers for tests of the real `collector run` process: its config file, its JSON logs."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from tests.helpers.e2e import FAST_FEED


class Logs:
    """Reads a subprocess's JSON log lines as they come."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.lines: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._pump(stream))

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            self.lines.append(orjson.loads(line))

    def has(self, event: str) -> bool:
        return any(r["event"] == event for r in self.lines)

    def first(self, event: str) -> dict[str, Any]:
        return next(r for r in self.lines if r["event"] == event)


def write_config(path, url, out, symbols, depth=10):
    feed = "\n".join(f"{k} = {v}" for k, v in FAST_FEED.items())
    path.write_text(f'[feed]\nurl = "{url}"\nsymbols = {orjson.dumps(symbols).decode()}\n{feed}\n'
                    f'[book]\nemit = "every"\ndepth = {depth}\n[output]\ndir = "{out}"\n')
