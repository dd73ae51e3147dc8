"""collector.runtime.linequeue: the writer's bounded FIFO behaves as asyncio.Queue for put/get."""

from __future__ import annotations

import asyncio

import pytest

from collector.runtime.linequeue import LineQueue


def test_fifo_and_bounds() -> None:
    q: LineQueue[int] = LineQueue(3)
    for i in range(3):
        q.put_nowait(i)
    assert q.full() and q.qsize() == 3
    with pytest.raises(asyncio.QueueFull):
        q.put_nowait(3)
    assert [q.get_nowait() for _ in range(3)] == [0, 1, 2]
    assert q.empty()
    with pytest.raises(asyncio.QueueEmpty):
        q.get_nowait()


async def test_get_waits_for_a_put() -> None:
    q: LineQueue[str] = LineQueue(2)
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    assert not getter.done()
    q.put_nowait("a")
    assert await asyncio.wait_for(getter, 1) == "a"


async def test_producers_wait_for_room_in_turn() -> None:
    q: LineQueue[int] = LineQueue(1)
    q.put_nowait(0)
    putters = [asyncio.create_task(q.put(i)) for i in (1, 2, 3)]
    await asyncio.sleep(0)
    assert not any(p.done() for p in putters)
    got = []
    for _ in range(4):
        got.append(await asyncio.wait_for(q.get(), 1))
    assert got == [0, 1, 2, 3]  # each waiting producer in the order it came
    await asyncio.gather(*putters)


async def test_a_cancelled_get_leaves_the_queue_usable() -> None:
    q: LineQueue[int] = LineQueue(2)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await q.get()
    q.put_nowait(7)
    assert await asyncio.wait_for(q.get(), 1) == 7


async def test_a_producer_cancelled_after_its_wake_up_passes_it_on() -> None:
    q: LineQueue[int] = LineQueue(1)
    q.put_nowait(0)
    first = asyncio.create_task(q.put(1))
    second = asyncio.create_task(q.put(2))
    await asyncio.sleep(0)
    assert q.get_nowait() == 0  # room for one: `first` is woken...
    first.cancel()  # ...but cancelled before it runs
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 1)  # so the room went to `second`
    assert q.get_nowait() == 2 and q.empty()


async def test_one_consumer_at_a_time() -> None:
    q: LineQueue[int] = LineQueue(1)
    first = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await q.get()
    q.put_nowait(1)
    assert await first == 1
