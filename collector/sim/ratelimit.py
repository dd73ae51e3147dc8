"""Gemini's limits as the simulator enforces them (pure; the caller passes the time).

The numbers are Gemini's documented ones, from ``collector/gemini/limits.py`` (the one
place they live): current-API connection attempts per window, request weight per window
(each SUBSCRIBE / UNSUBSCRIBE weighs ``limits.request_weight`` of its streams), and public
REST requests per minute plus the burst. Each is a sliding window over the simulator as
a whole (every client of the simulator is on 127.0.0.1: one client address). What is
refused is not counted, so a client that waits the ``Retry-After`` it was given gets in.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, fields, replace

from collector.gemini import limits as gemini

__all__ = ["Limiter", "SimLimits", "Window"]

REST_WINDOW_S = 60.0  # REST_PER_MINUTE is per minute


@dataclass(frozen=True)
class SimLimits:
    """The limits a simulator enforces; the defaults are Gemini's."""

    connect_attempts: int = gemini.CONNECT_ATTEMPTS
    connect_window_s: float = gemini.CONNECT_WINDOW_S
    request_weight: int = gemini.REQUEST_WEIGHT
    request_window_s: float = gemini.REQUEST_WINDOW_S
    rest_per_minute: int = gemini.REST_PER_MINUTE
    rest_burst: int = gemini.REST_BURST

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not value > 0 and not (f.name == "rest_burst" and value == 0):
                raise ValueError(f"limits: {f.name} must be > 0, got {value}")

    def scaled(self, factor: float) -> SimLimits:
        """Every count times ``factor`` (at least 1), the windows unchanged: a test can
        reach a limit in a few requests."""
        if not factor > 0:
            raise ValueError(f"limits: scale must be > 0, got {factor}")

        def n(x: int) -> int:
            return max(1, round(x * factor))

        return replace(self, connect_attempts=n(self.connect_attempts),
                       request_weight=n(self.request_weight),
                       rest_per_minute=n(self.rest_per_minute),
                       rest_burst=round(self.rest_burst * factor))


class Window:
    """At most ``cap`` weight admitted in any ``span`` seconds (a sliding log)."""

    def __init__(self, cap: int, span: float) -> None:
        self.cap = cap
        self.span = span
        self.used = 0  # weight admitted within the window (as of the last call)
        self._log: deque[tuple[float, int]] = deque()

    def admit(self, now: float, weight: int = 1) -> float | None:
        """Admit and record ``weight`` now (None), or refuse it: the seconds until it would
        fit (the whole span if it never can)."""
        log = self._log
        while log and log[0][0] <= now - self.span:
            self.used -= log.popleft()[1]
        if self.used + weight <= self.cap:
            log.append((now, weight))
            self.used += weight
            return None
        if weight > self.cap:
            return self.span
        freed = 0
        for at, w in log:  # the oldest leave first
            freed += w
            if self.used - freed + weight <= self.cap:
                return max(0.0, at + self.span - now)
        raise AssertionError("unreachable: the whole log frees the whole cap")  # pragma: no cover


class Limiter:
    """The simulator's three windows."""

    def __init__(self, limits: SimLimits) -> None:
        self.limits = limits
        self.connects = Window(limits.connect_attempts, limits.connect_window_s)
        self.weight = Window(limits.request_weight, limits.request_window_s)
        self.rest = Window(limits.rest_per_minute + limits.rest_burst, REST_WINDOW_S)

    def connect(self, now: float) -> int | None:
        """A current-API handshake: None, or the Retry-After (whole seconds, >= 1)."""
        return _retry_after(self.connects.admit(now))

    def request(self, now: float, weight: int) -> bool:
        """A SUBSCRIBE or UNSUBSCRIBE of this weight (``limits.request_weight``): admitted?"""
        return self.weight.admit(now, weight) is None

    def rest_request(self, now: float) -> int | None:
        """A REST request: None, or the Retry-After (whole seconds, >= 1)."""
        return _retry_after(self.rest.admit(now))


def _retry_after(wait: float | None) -> int | None:
    return None if wait is None else max(1, math.ceil(wait))
