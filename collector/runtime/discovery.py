"""The exchange's symbol listing: GET {feed.rest_url}/v1/symbols (runtime/http.py).

`fetch` returns the listing upper case, or raises `ListingError` saying why it could not
be read (unreachable, an HTTP error, too big, not a JSON list of symbols). The App
(app.py) decides what to do with it: core/symbols.py selects and guards. Each request
draws on the process's REST budget (restbudget.py), shared with the audit; a 429 closes
that budget for its Retry-After.
"""

from __future__ import annotations

import asyncio
import json

from collector.core.symbols import SYMBOL
from collector.gemini.wire import retry_after_s
from collector.runtime.http import HttpError, get_once
from collector.runtime.restbudget import PAUSE_S, RestBudget

TIMEOUT_S = 10.0
MAX_BYTES = 1 << 20  # Gemini's listing is about 10 KB


class ListingError(Exception):
    """The listing could not be read or is not a list of symbols."""


class RateLimited(ListingError):
    """HTTP 429; `retry_after`: the answer's Retry-After header values."""

    def __init__(self, message: str, retry_after: list[str]) -> None:
        super().__init__(message)
        self.retry_after = retry_after


async def _get(url: str, timeout: float) -> bytes:
    try:
        async with asyncio.timeout(timeout):
            answer = await get_once(url, MAX_BYTES)
    except TimeoutError:
        raise ListingError(f"cannot read {url}: no answer in {timeout:g} s") from None
    except (HttpError, OSError, ValueError) as exc:  # unreachable, reset, malformed, too big
        raise ListingError(f"cannot read {url}: {exc}") from None
    if answer.status == 429:
        raise RateLimited(f"HTTP 429 from {url}", answer.header("retry-after"))
    if answer.status != 200:
        raise ListingError(f"HTTP {answer.status} from {url}")
    return answer.body


def parse(body: bytes) -> tuple[str, ...]:
    """A JSON list of symbols (Gemini lists them lower case) -> upper case, in order."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ListingError(f"not JSON: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(s, str) for s in data):
        raise ListingError("not a JSON list of strings")
    listing = tuple(dict.fromkeys(s.upper() for s in data))
    bad = [s for s in listing if not SYMBOL.fullmatch(s)]
    if bad:
        raise ListingError(f"not a symbol: {bad[0][:40]!r}")
    return listing


async def fetch(rest_url: str, timeout: float = TIMEOUT_S, budget: RestBudget | None = None,
                retry_after_max_s: float = PAUSE_S) -> tuple[str, ...]:
    """The listing; ListingError if it cannot be had. With a `budget`, the request waits
    for its token, and a 429 closes the budget (Retry-After, at most `retry_after_max_s`)."""
    url = rest_url.rstrip("/") + "/v1/symbols"
    if budget is not None:
        await budget.take()
    try:
        body = await _get(url, timeout)
    except RateLimited as exc:
        if budget is not None:
            budget.refused(retry_after_s(exc.retry_after, retry_after_max_s) or PAUSE_S)
        raise
    return parse(body)
