"""Symbol parameters of the simulated exchange and exact decimal rendering.

Prices live as integer ticks of ``quote_increment`` and amounts as integer units of
``tick_size`` (Gemini's name for the base-currency increment). ``Scale`` turns those
integers back into the decimal strings Gemini sends, without ever touching a float.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

__all__ = ["BUILTIN", "Scale", "SymbolSpec", "spec_for"]


class Scale:
    """Exact conversion between integer multiples of an increment and decimal strings.

    ``render`` trims trailing zeros ("60000.5", "0.1", "0"), as Gemini's current feeds do;
    ``render_fixed`` keeps the increment's places ("60000.50"), as its 2018 feed did.
    """

    __slots__ = ("_pow10_exp", "increment", "places")

    def __init__(self, increment: Decimal) -> None:
        if increment <= 0:
            raise ValueError(f"increment must be positive, got {increment}")
        self.increment = increment
        norm = increment.normalize()
        _, digits, exp = norm.as_tuple()
        assert isinstance(exp, int)
        self.places = max(0, -exp)
        # The fast path covers the usual increments (1e-8, 0.01, 1, 10 ...).
        self._pow10_exp: int | None = exp if digits == (1,) else None

    def render(self, n: int) -> str:
        return _trim(self.render_fixed(n))

    def render_fixed(self, n: int) -> str:
        exp = self._pow10_exp
        if exp is None:
            return format(n * self.increment, "f") if self.places else str(int(n * self.increment))
        if exp >= 0:
            return str(n * 10**exp)
        sign = "-" if n < 0 else ""
        digits = str(abs(n)).rjust(self.places + 1, "0")
        return f"{sign}{digits[:-self.places]}.{digits[-self.places:]}"

    def to_units(self, text: str) -> int:
        """Parse a decimal string that must lie exactly on the grid."""
        q, r = divmod(Decimal(text), self.increment)
        if r != 0:
            raise ValueError(f"{text!r} is not a multiple of {self.increment}")
        return int(q)


def _trim(s: str) -> str:
    if "." not in s:
        return s
    s = s.rstrip("0").rstrip(".")
    return "0" if s in ("", "-0", "-") else s


def _num(text: str) -> orjson.Fragment:
    # JSON number spelled exactly as Gemini does (e.g. 0.00000001), not via float repr.
    return orjson.Fragment(text.encode())


@dataclass(frozen=True)
class SymbolSpec:
    """What the simulator needs to know about one instrument."""

    symbol: str
    base: str
    quote: str
    quote_increment: str  # price step, e.g. "0.01"
    tick_size: str  # amount step, e.g. "0.00000001"
    min_order_size: str
    ref_price: str  # where the initial book is centred
    typical_size: str  # median order size in base currency
    product_type: str = "spot"
    contract_type: str = "vanilla"
    contract_price_currency: str | None = None
    price_scale: Scale = field(init=False, repr=False, compare=False)
    amount_scale: Scale = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "price_scale", Scale(Decimal(self.quote_increment)))
        object.__setattr__(self, "amount_scale", Scale(Decimal(self.tick_size)))

    def details(self) -> dict[str, Any]:
        """The /v1/symbols/details/:symbol body (key order as observed in 2026)."""
        return {
            "symbol": self.symbol,
            "quote_currency": self.quote,
            "tick_size": _num(self.tick_size),
            "quote_increment": _num(self.quote_increment),
            "min_order_size": self.min_order_size,
            "status": "open",
            "wrap_enabled": False,
            "product_type": self.product_type,
            "contract_type": self.contract_type,
            "contract_price_currency": self.contract_price_currency or self.quote,
            "base_currency": self.base,
        }


def _spot(sym: str, base: str, quote: str, qinc: str, tick: str, mino: str, px: str, size: str) -> SymbolSpec:
    return SymbolSpec(sym, base, quote, qinc, tick, mino, px, size)


# Increments and minimum sizes as Gemini publishes them; prices and sizes are just plausible.
BUILTIN: dict[str, SymbolSpec] = {
    s.symbol: s
    for s in (
        _spot("BTCUSD", "BTC", "USD", "0.01", "0.00000001", "0.00001", "60000", "0.05"),
        _spot("ETHUSD", "ETH", "USD", "0.01", "0.000001", "0.001", "3000", "0.8"),
        _spot("SOLUSD", "SOL", "USD", "0.001", "0.000001", "0.001", "150", "12"),
        _spot("LTCUSD", "LTC", "USD", "0.01", "0.00001", "0.01", "80", "5"),
        _spot("DOGEUSD", "DOGE", "USD", "0.00001", "0.000001", "0.1", "0.15", "3000"),
        _spot("LINKUSD", "LINK", "USD", "0.00001", "0.000001", "0.1", "15", "50"),
        _spot("XRPUSD", "XRP", "USD", "0.00001", "0.000001", "0.1", "0.6", "1000"),
        _spot("SHIBUSD", "SHIB", "USD", "0.000000001", "0.000001", "1000", "0.00002", "50000000"),
        _spot("ETHBTC", "ETH", "BTC", "0.00001", "0.000001", "0.001", "0.05", "1"),
        _spot("BTCEUR", "BTC", "EUR", "0.01", "0.00000001", "0.00001", "55000", "0.05"),
        _spot("BTCGBP", "BTC", "GBP", "0.01", "0.00000001", "0.00001", "47000", "0.05"),
        _spot("BTCUSDT", "BTC", "USDT", "0.01", "0.00000001", "0.00001", "60000", "0.05"),
        _spot("ETHUSDT", "ETH", "USDT", "0.01", "0.000001", "0.001", "3000", "0.8"),
        # Perpetuals: increments that are not powers of ten exercise exact rendering.
        SymbolSpec("BTCUSDCPERP", "BTC", "USDC", "0.5", "0.0001", "0.0001", "60000", "0.05",
                   product_type="swap", contract_type="linear", contract_price_currency="GUSD"),
        SymbolSpec("SOLUSDCPERP", "SOL", "USDC", "0.005", "0.1", "0.1", "150", "12",
                   product_type="swap", contract_type="linear", contract_price_currency="GUSD"),
    )
}

_QUOTES = ("GUSD", "USDT", "USDC", "USD", "EUR", "GBP", "SGD", "DAI", "BTC", "ETH")
_VALID = re.compile(r"^[A-Z0-9]{4,16}$")


def spec_for(symbol: str) -> SymbolSpec:
    """The built-in spec, or a generic one for an unknown but Gemini-looking symbol."""
    sym = symbol.upper()
    if sym in BUILTIN:
        return BUILTIN[sym]
    if not _VALID.match(sym):
        raise ValueError(f"not a valid-looking Gemini symbol: {symbol!r}")
    core, perp = (sym[:-4], True) if sym.endswith("PERP") else (sym, False)
    for quote in _QUOTES:
        if core.endswith(quote) and len(core) > len(quote):
            base = core[: -len(quote)]
            break
    else:
        base, quote = core[:-3] or core, core[-3:]
    if perp:
        return SymbolSpec(sym, base, quote, "0.01", "0.0001", "0.001", "100", "10",
                          product_type="swap", contract_type="linear", contract_price_currency="GUSD")
    return SymbolSpec(sym, base, quote, "0.01", "0.000001", "0.001", "100", "10")
