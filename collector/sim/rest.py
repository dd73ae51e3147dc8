"""Gemini's public REST routes, as pure functions of the simulator's state.

``route(path, query, ...) -> (status, json body)``; the server turns that into an HTTP
response from its ``process_request`` hook, on the same port as the WebSocket endpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from .market import Market
from .symbols import SymbolSpec

if TYPE_CHECKING:
    from .replay import ReplayMarket

__all__ = ["error_body", "route"]

Body = Any


def error_body(reason: str, message: str) -> dict[str, str]:
    return {"result": "error", "reason": reason, "message": message}


def _invalid_symbol(raw: str) -> tuple[int, Body]:
    return 404, error_body("InvalidSymbol", f"Supplied value '{raw}' is not a valid symbol")


def _limit(query: Mapping[str, str], name: str) -> int:
    raw = query.get(name)
    if raw is None:
        return 50
    value = int(raw)  # ValueError -> 400 in route()
    if value < 0:
        raise ValueError(name)
    return value


def _book(market: Market | ReplayMarket, query: Mapping[str, str], now_s: int) -> Body:
    p, a = market.spec.price_scale.render, market.spec.amount_scale.render
    ts = str(now_s)  # every level carries the same timestamp (observed in 2019)
    out: dict[str, list[dict[str, str]]] = {}
    for key, name, side in (("bids", "limit_bids", market.bids), ("asks", "limit_asks", market.asks)):
        n = _limit(query, name)
        out[key] = [{"price": p(x), "amount": a(u), "timestamp": ts}
                    for x, u in side.top(None if n == 0 else n)]
    return out


def route(path: str, query_string: str, specs: Mapping[str, SymbolSpec],
          markets: Mapping[str, Market | ReplayMarket], now_s: int) -> tuple[int, Body]:
    """Answer one REST GET. ``specs`` are the listed symbols (upper case)."""
    parts = [p for p in path.split("/") if p]
    query = dict(parse_qsl(query_string, keep_blank_values=True))
    if parts == ["v1", "symbols"]:
        return 200, [s.lower() for s in specs]
    if len(parts) == 4 and parts[:3] == ["v1", "symbols", "details"]:
        raw = parts[3]
        if raw.lower() == "all":
            return 200, [spec.details() for spec in specs.values()]
        spec = specs.get(raw.upper())
        return (200, spec.details()) if spec else _invalid_symbol(raw)
    if len(parts) == 3 and parts[:2] == ["v1", "book"]:
        raw = parts[2]
        market = markets.get(raw.upper())
        if market is None:
            return _invalid_symbol(raw)
        try:
            return 200, _book(market, query, now_s)
        except ValueError:
            return 400, error_body("InvalidParameter", "limit_bids/limit_asks must be integers >= 0")
    return 404, error_body("EndpointNotFound", f"API entry point `{path}` not found")
