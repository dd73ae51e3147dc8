"""A whole exchange's listing and activity mix (pure): ``plan_exchange(n=347, ...)``.

Gemini lists 347 symbols, 13 of them perpetuals (PROTOCOL.md section 3), and most of its
books are quiet: a few busy markets carry nearly all the updates. The plan names the
symbols (the built-in specs first, then real-looking bases against Gemini's quotes),
gives each a spec (increments that suit its price) and an activity: busy books at
``rate`` updates/s with ``depth`` levels, quiet ones at one update every few seconds to
minutes (a seeded mean per symbol) with shallower books.

Names and specs depend on ``n`` only; the quiet intervals and the books on ``seed``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from decimal import Decimal

from .symbols import BUILTIN, SymbolSpec

__all__ = ["GEMINI_LISTED", "GEMINI_PERPS", "ExchangePlan", "SymbolActivity", "listing_names",
           "plan_exchange"]

GEMINI_LISTED = 347  # symbols Gemini listed in 2026 (PROTOCOL.md section 3) ...
GEMINI_PERPS = 13  # ... of which perpetuals (names ending in PERP)

# Bases Gemini has listed, roughly most traded first (names only; prices are made up).
_BASE_NAMES = (
    "BTC ETH SOL XRP DOGE LINK LTC SHIB AVAX DOT BCH UNI AAVE MATIC FIL PEPE ZEC ATOM "
    "ARB OP INJ FET RNDR LDO MKR CRV COMP SNX SUSHI YFI GRT APE SAND MANA AXS GALA "
    "ENS IMX BAT CHZ LRC STORJ SKL AMP ANKR API3 BOND CTX CUBE ELON FTM IOTX JAM LPT "
    "MASK PAXG QNT RARE UMA WIF XTZ ZRX BONK ALI ALCX AUDIO BLUR BNT CHR CVC DIA DPI "
    "EFIL ERN FLOKI FXS GMT GODS GYEN HNT INDEX KNC KP3R LQTY MCO2 MIM MPL NMR OGN OXT "
    "PLA POPCAT PYTH QRDO RAD RAY RBN REVV SAMO SLP SPELL STX SUPER TOKE TRU WCFG XYO "
    "JTO MEW MOODENG PNUT TRUMP GOAT HYPE SUI SEI TIA JUP WLD ONDO ENA TAO NEAR "
    "APT HBAR ICP KAS RUNE THETA ALGO FLOW EGLD XLM EOS NEO KAVA CELO ONE ROSE ZIL"
)
_BASES = tuple(_BASE_NAMES.split())
# Quotes in the order a base gets them: every base has a USD market, fewer the others.
_QUOTES = ("USD", "GUSD", "USDT", "BTC", "ETH", "EUR", "GBP", "SGD", "DAI")
_QUOTE_IN_USD = {"USD": 1.0, "GUSD": 1.0, "USDT": 1.0, "USDC": 1.0, "DAI": 1.0, "EUR": 1.08,
                 "GBP": 1.27, "SGD": 0.74, "BTC": 60_000.0, "ETH": 3_000.0}
# Busy books come from this order first, then the listing's.
_POPULAR = ("BTCUSD", "ETHUSD", "SOLUSD", "BTCUSDCPERP", "ETHGUSDPERP", "XRPUSD", "DOGEUSD",
            "BTCUSDT", "ETHBTC", "LINKUSD", "LTCUSD", "SOLUSDCPERP", "ETHUSDT", "BTCEUR")


@dataclass(frozen=True)
class SymbolActivity:
    """One listed symbol: its spec, mean updates per second and book depth."""

    spec: SymbolSpec
    rate: float  # mean updates/s (Poisson); 0 = a still book
    depth: int  # levels per side
    busy: bool

    @property
    def symbol(self) -> str:
        return self.spec.symbol


@dataclass(frozen=True)
class ExchangePlan:
    """The listing, in the order GET /v1/symbols gives it."""

    symbols: tuple[SymbolActivity, ...]

    @property
    def names(self) -> list[str]:
        return [a.symbol for a in self.symbols]

    @property
    def busy(self) -> list[str]:
        return [a.symbol for a in self.symbols if a.busy]

    @property
    def rates(self) -> dict[str, float]:
        return {a.symbol: a.rate for a in self.symbols}


def _pow10(exp: int) -> str:
    return format(Decimal(1).scaleb(exp), "f")


def _usd_price(base: str) -> float:
    spec = BUILTIN.get(base + "USD")
    if spec is not None:
        return float(spec.ref_price)
    return 10 ** random.Random(f"price:{base}").uniform(-5.0, 3.5)


def _spec(symbol: str, base: str, quote: str, perp: bool) -> SymbolSpec:
    """Increments that suit the price: about five significant digits per price, an
    order of a few thousand dollars about five digits of amount."""
    if symbol in BUILTIN:
        return BUILTIN[symbol]
    usd = _usd_price(base)
    price = usd / _QUOTE_IN_USD.get(quote, 1.0)
    p_exp = max(-10, min(0, math.floor(math.log10(price)) - 4))
    typical = 2_000.0 / usd
    t_exp = max(-8, min(0, math.floor(math.log10(typical)) - 4))
    ref = format(Decimal(repr(price)).quantize(Decimal(1).scaleb(p_exp)), "f")
    size = format(Decimal(repr(typical)).quantize(Decimal(1).scaleb(t_exp)), "f")
    min_order = _pow10(max(t_exp, math.floor(math.log10(typical)) - 2))
    if perp:
        return SymbolSpec(symbol, base, quote, _pow10(p_exp), _pow10(t_exp), min_order, ref, size,
                          product_type="swap", contract_type="linear", contract_price_currency="GUSD")
    return SymbolSpec(symbol, base, quote, _pow10(p_exp), _pow10(t_exp), min_order, ref, size)


def _spot_candidates() -> list[tuple[str, str, str]]:
    """(symbol, base, quote): the built-in spot markets, then each base's USD market, then
    the other quotes tier by tier (the most traded bases first in each tier)."""
    out: dict[str, tuple[str, str]] = {
        s.symbol: (s.base, s.quote) for s in BUILTIN.values() if s.product_type == "spot"}
    for tier, quote in enumerate(_QUOTES):
        for base in _BASES if tier == 0 else _BASES[: len(_BASES) // (tier + 2)]:
            out.setdefault(base + quote, (base, quote))
    for quote in _QUOTES:  # beyond Gemini's size: every pair
        for base in _BASES:
            out.setdefault(base + quote, (base, quote))
    return [(s, b, q) for s, (b, q) in out.items() if b != q]


def _perp_candidates() -> list[tuple[str, str, str]]:
    out = [(s.symbol, s.base, s.quote) for s in BUILTIN.values() if s.product_type == "swap"]
    out += [(f"{b}GUSDPERP", b, "GUSD") for b in _BASES if f"{b}USDCPERP" not in BUILTIN]
    return out


def listing_names(n: int = GEMINI_LISTED, perps: int | None = None) -> list[tuple[str, str, str, bool]]:
    """(symbol, base, quote, is_perp) of an n-symbol listing; ``perps`` defaults to
    Gemini's share (13 of 347)."""
    spot, perp = _spot_candidates(), _perp_candidates()
    if perps is None:
        perps = min(len(perp), round(n * GEMINI_PERPS / GEMINI_LISTED))
    if not 0 <= perps <= min(n, len(perp)):
        raise ValueError(f"perps must be between 0 and {min(n, len(perp))}, got {perps}")
    if n < 1 or n - perps > len(spot):
        raise ValueError(f"n must be between 1 and {len(spot) + perps} with {perps} perps, got {n}")
    return ([(s, b, q, False) for s, b, q in spot[: n - perps]]
            + [(s, b, q, True) for s, b, q in perp[:perps]])


def plan_exchange(
    n: int = GEMINI_LISTED,
    busy: int = 10,
    rate: float = 50.0,
    depth: int = 2_000,
    *,
    quiet_depth: int = 50,
    quiet_every: tuple[float, float] = (2.0, 180.0),
    perps: int | None = None,
    seed: int | str = 1,
) -> ExchangePlan:
    """``n`` listed symbols: ``busy`` of them at ``rate`` updates/s with ``depth`` levels per
    side, the others quiet: a mean interval between updates drawn per symbol, log-uniform
    within ``quiet_every`` seconds, and ``quiet_depth`` levels per side."""
    if not 0 <= busy <= n:
        raise ValueError(f"busy must be between 0 and n ({n}), got {busy}")
    if rate < 0:
        raise ValueError(f"rate must be >= 0, got {rate}")
    if depth < 2 or quiet_depth < 2:
        raise ValueError("depth and quiet_depth must be at least 2 levels per side")
    lo, hi = quiet_every
    if not 0 < lo <= hi:
        raise ValueError(f"quiet_every must be (low, high) seconds with 0 < low <= high, got {quiet_every}")
    names = listing_names(n, perps)
    listed = [s for s, *_ in names]
    hot = set([s for s in _POPULAR if s in listed][:busy])
    hot.update([s for s in listed if s not in hot][: busy - len(hot)])
    rng = random.Random(f"{seed}:quiet")
    out = []
    for symbol, base, quote, perp in names:
        spec = _spec(symbol, base, quote, perp)
        if symbol in hot:
            out.append(SymbolActivity(spec, rate, depth, True))
        else:
            every = math.exp(rng.uniform(math.log(lo), math.log(hi)))
            out.append(SymbolActivity(spec, 1.0 / every, quiet_depth, False))
    return ExchangePlan(tuple(out))
