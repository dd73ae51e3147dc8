"""The simulator's door: Gemini's limits answered with 429 as Gemini does, every 429 counted.

* A current-API handshake over the connection-attempt limit: HTTP 429, ``Retry-After``
  (whole seconds until an attempt frees up) and a JSON error body.
* A SUBSCRIBE / UNSUBSCRIBE over the request-weight limit: the error reply
  ``{"error":{"code":429,"msg":...},"id":N}`` (``current_api.py`` sends it) and nothing
  of that request is done.
* A REST request over REST_PER_MINUTE + REST_BURST in a minute: HTTP 429, ``Retry-After``
  and ``{"result":"error","reason":"RateLimited",...}``.

``limits`` None switches them all off (429s from the ``refuse`` fault are still counted).
"""

from __future__ import annotations

import email.utils
import http
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from websockets.datastructures import Headers
from websockets.http11 import Response

from collector.gemini import limits as gemini

from . import rest
from .ratelimit import Limiter, SimLimits
from .stats import ExchangeStats

__all__ = ["Gate", "json_response", "refusal_response"]


def json_response(status: int, body: Any, extra: Iterable[tuple[str, str]] = ()) -> Response:
    data = orjson.dumps(body)
    headers = Headers([
        ("Date", email.utils.formatdate(usegmt=True)),
        ("Connection", "close"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(data))),
        *extra,
    ])
    return Response(status, http.HTTPStatus(status).phrase, headers, data)


def refusal_response(status: int, retry_after: object, message: str = "Try again later") -> Response:
    reason = "RateLimited" if status == 429 else "ServiceUnavailable"
    return json_response(status, rest.error_body(reason, message), [("Retry-After", str(retry_after))])


class Gate:
    def __init__(self, limits: SimLimits | None, stats: ExchangeStats, notify: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.stats = stats
        self._limiter = Limiter(limits) if limits is not None else None
        self._notify = notify
        self._clock = clock

    def handshake(self) -> Response | None:
        """A current-API handshake: None to go on, or its 429."""
        if self._limiter is None:
            return None
        retry = self._limiter.connect(self._clock())
        if retry is None:
            return None
        self.stats.connect_limited += 1
        self._notify()
        lim = self._limiter.limits
        return refusal_response(429, retry, f"Too many connection attempts: more than "
                                            f"{lim.connect_attempts} in {lim.connect_window_s:g} s")

    def request(self, streams: list[str]) -> str | None:
        """A SUBSCRIBE or UNSUBSCRIBE: None to go on, or the message of its 429 reply."""
        weight = gemini.request_weight(streams)
        if self._limiter is None or self._limiter.request(self._clock(), weight):
            self.stats.request_weight += weight
            return None
        self.stats.request_limited += 1
        self._notify()
        lim = self._limiter.limits
        return (f"Too many requests: a request of weight {weight} would exceed "
                f"{lim.request_weight} per {lim.request_window_s:g} s")

    def rest(self) -> Response | None:
        """A REST request: None to answer it, or its 429."""
        if self._limiter is None:
            return None
        retry = self._limiter.rest_request(self._clock())
        if retry is None:
            return None
        self.stats.rest_limited += 1
        self._notify()
        lim = self._limiter.limits
        return refusal_response(429, retry, f"Requests were made too frequently: more than "
                                            f"{lim.rest_per_minute} a minute (+{lim.rest_burst} burst)")

    def refused(self, status: int) -> None:
        """A handshake refused by the ``refuse`` fault: a 429 among them is counted."""
        if status == 429:
            self.stats.refused_429 += 1
            self._notify()
