"""Gemini's documented limits (PROTOCOL.md section 3 and 6), in one place (pure).

The collector budgets by these numbers so that it never provokes a 429, and the
simulator enforces the same numbers, answering 429 as Gemini does.

Gemini does not document what one WebSocket request weighs. We assume, on the safe
side, that a request weighs one per stream it names (at least one): a SUBSCRIBE of a
symbol's depth and trade streams weighs 2.
"""

from __future__ import annotations

from collections.abc import Sequence

# Current API (wss://ws.gemini.com): limits the server reports.
CONNECT_ATTEMPTS = 300  # WebSocket connection attempts ...
CONNECT_WINDOW_S = 300.0  # ... per 5 minutes, per client address
# The process's connection budget: a bucket of C tokens refilled at C a minute allows
# C + 5 C attempts in any 5 minutes, so C = 300 / 6 = 50 stays within the limit. It is the
# only connection limit Gemini states, so v1 (a socket per symbol) follows it too: 347
# symbols take 50 at once, then 50 a minute, about 6 minutes to all live.
CONNECTS_PER_MINUTE = CONNECT_ATTEMPTS / (1 + CONNECT_WINDOW_S / 60)
REQUEST_WEIGHT = 7_000  # request weight ...
REQUEST_WINDOW_S = 10.0  # ... per 10 s (the collector budgets it per process, the stricter reading)

# Public REST (api.gemini.com): 120 requests a minute, 5 more queued as a burst, then 429.
REST_PER_MINUTE = 120
REST_BURST = 5
REST_RECOMMENDED_S = 1.0  # "at most 1 request a second recommended": the probe and the audit keep to it


def request_weight(streams: Sequence[str]) -> int:
    """The weight of one SUBSCRIBE or UNSUBSCRIBE naming `streams` (see the docstring)."""
    return max(1, len(streams))
