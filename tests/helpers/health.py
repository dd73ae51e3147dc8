"""Fake feeds for the health check and the Monitor: real FeedStats, nothing else."""

from __future__ import annotations

from types import SimpleNamespace

from collector.runtime.feed import FeedState, FeedStats


def feed(live: bool = True, last_frame: float = 100.0, **resyncs: int) -> SimpleNamespace:
    st = FeedStats(state=FeedState.LIVE if live else FeedState.WAITING, last_frame=last_frame)
    st.resyncs.update(resyncs)
    return SimpleNamespace(stats=st)
