"""`collector probe`'s report (pure): the measurements as a table of p50 / p90 / p99 / max,
one paragraph of conclusion in numbers, or JSON. probe.py measures; this only reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# (key, label): the table's rows, in order
ROWS = (
    ("dns", "DNS lookup"),
    ("tcp", "TCP connect"),
    ("tls", "TLS handshake"),
    ("first_byte", "REST first byte (request sent -> first byte)"),
    ("rest_fresh", "REST round trip, new connection (set-up included)"),
    ("rest_kept", "REST round trip, kept-alive connection"),
    ("ws_handshake", "WebSocket handshake"),
    ("ws_snapshot", "WebSocket handshake -> snapshot"),
    ("stream_delay", "stream: exchange stamp -> receive, per change"),
    ("staleness", "REST book age against the live stream"),
)
QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


@dataclass
class Row:
    key: str
    label: str
    values_ms: list[float] = field(default_factory=list)
    note: str = ""  # why there are no values, or what to know about them

    def stat(self, name: str) -> float | None:
        if not self.values_ms:
            return None
        if name == "max":
            return max(self.values_ms)
        return quantile(self.values_ms, dict(QUANTILES)[name])


def quantile(values: Sequence[float], q: float) -> float:
    """The nearest-rank quantile: the smallest value with at least q of them at or below."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def rows() -> dict[str, Row]:
    return {key: Row(key, label) for key, label in ROWS}


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def table(report: dict[str, Row]) -> str:
    """Every row, measured or not, with n, p50, p90, p99 and max in milliseconds."""
    width = max(len(label) for _, label in ROWS)
    head = f"{'':{width}}  {'n':>4}  {'p50':>7}  {'p90':>7}  {'p99':>7}  {'max':>7}  (ms)"
    lines = [head]
    for key, label in ROWS:
        row = report[key]
        if not row.values_ms:
            lines.append(f"{label:{width}}  {0:>4}  {'n/a':>7}  {'':>7}  {'':>7}  {'':>7}  {row.note}")
            continue
        cells = "  ".join(f"{_ms(row.stat(name)):>7}" for name in ("p50", "p90", "p99", "max"))
        lines.append(f"{label:{width}}  {len(row.values_ms):>4}  {cells}  {row.note}".rstrip())
    return "\n".join(lines)


def conclusion(report: dict[str, Row], clock_note: str) -> str:
    """One paragraph: what REST costs, how old its book is, how fast the stream is."""
    def p50(key: str) -> str | None:
        value = report[key].stat("p50")
        return None if value is None else f"{_ms(value)} ms"

    parts = []
    fresh, kept = p50("rest_fresh"), p50("rest_kept")
    if fresh:
        setup = ", ".join(f"{name} {v}" for name, key in (("DNS", "dns"), ("TCP", "tcp"), ("TLS", "tls"),
                                                          ("first byte", "first_byte"))
                          if (v := p50(key)))
        text = f"REST answers in {fresh} over a new connection ({setup})"
        text += (f" and in {kept} over a kept-alive one" if kept else
                 f", kept-alive not measured ({report['rest_kept'].note or 'no answer'})")
        parts.append(text)
    else:
        parts.append("REST could not be measured")
    stale = report["staleness"]
    if stale.values_ms:
        parts.append(f"shows a book {_ms(stale.stat('p50'))} ms old (p90 {_ms(stale.stat('p90'))} ms) "
                     "against the live stream")
    else:
        parts.append(f"its book's age against the stream is unknown ({stale.note or 'no match'})")
    delay = report["stream_delay"]
    if delay.values_ms:
        parts.append(f"the stream delivers a change {_ms(delay.stat('p50'))} ms after the exchange "
                     f"stamped it (p90 {_ms(delay.stat('p90'))} ms; {clock_note})")
    else:
        parts.append(f"the stream's delay is unknown ({delay.note or 'no change seen'})")
    snap = p50("ws_snapshot")
    tail = f" A new stream takes {p50('ws_handshake')} to open and {snap} more to its snapshot." \
        if snap else ""
    return "; ".join(parts) + ". Figures are medians (p50) unless named." + tail


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def as_json(report: dict[str, Row], conclusion_text: str, meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {**meta, "rows": {}, "conclusion": conclusion_text}
    for key, row in report.items():
        out["rows"][key] = {
            "label": row.label, "n": len(row.values_ms), "note": row.note or None,
            **{name: _round(row.stat(name)) for name in ("p50", "p90", "p99", "max")},
            "values_ms": [round(v, 3) for v in row.values_ms],
        }
    return out
