"""The writer's queue: a bounded FIFO with one consumer, as asyncio.Queue behaves for
put/get, at less cost per item.

Every record passes through it once, and asyncio.Queue's put_nowait and get_nowait
(task accounting for join(), a getters deque to scan) cost about 0.5 us per frame in a
profile of the collector at 8 symbols (bench/profile-8sym.txt): 5% of its time. Here a
put is a length test, an append and, only when the writer sleeps, one wake-up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class LineQueue(Generic[T]):
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._getter: asyncio.Future[None] | None = None  # the consumer, waiting for an item
        self._putters: deque[asyncio.Future[None]] = deque()  # producers waiting for room

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    def put_nowait(self, item: T) -> None:
        """Append, or asyncio.QueueFull."""
        items = self._items
        if len(items) >= self.maxsize:
            raise asyncio.QueueFull
        items.append(item)
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)

    async def put(self, item: T) -> None:
        """Append, first waiting (in turn with other producers) while the queue is full."""
        while len(self._items) >= self.maxsize:
            room = asyncio.get_running_loop().create_future()
            self._putters.append(room)
            try:
                await room
            except BaseException:
                room.cancel()
                if room in self._putters:
                    self._putters.remove(room)
                elif len(self._items) < self.maxsize:
                    self._wake_putter()  # it was woken for room it will not take: pass it on
                raise
        self.put_nowait(item)

    def get_nowait(self) -> T:
        """The oldest item, or asyncio.QueueEmpty."""
        try:
            item = self._items.popleft()
        except IndexError:
            raise asyncio.QueueEmpty from None
        if self._putters:
            self._wake_putter()
        return item

    async def get(self) -> T:
        """The oldest item, waiting for one (one consumer: the writer)."""
        while not self._items:
            if self._getter is not None:
                raise RuntimeError("LineQueue.get() has one consumer at a time")
            self._getter = arrived = asyncio.get_running_loop().create_future()
            try:
                await arrived
            finally:
                if self._getter is arrived:
                    self._getter = None
        return self.get_nowait()

    def _wake_putter(self) -> None:
        while self._putters:
            room = self._putters.popleft()
            if not room.done():
                room.set_result(None)
                return
