"""What both of Gemini's market-data APIs share on the wire (pure): a frame is one JSON
object, and a frame that breaks the protocol is an `InvalidFrame`.

Whatever a peer sends, a problem is explained in a few characters: `show` is a bounded
repr (a value nested 1,000 deep or a string of a megabyte would otherwise cost a
RecursionError or a record of that size), and a sample is the frame's first characters.
"""

from __future__ import annotations

import json
import re
import reprlib
from collections.abc import Sequence
from typing import Any, TypeGuard

import orjson

_SAMPLE_CHARS = 200
# A handshake refused with Retry-After: delay-seconds (digits; a fraction is tolerated).
# More than a day is no sane answer, and is ignored like an HTTP date, a sign, an exponent,
# inf or nan, or two values: the feed's backoff applies instead.
SANE_RETRY_AFTER_S = 86_400.0
_SECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?\Z")
_I64_MIN, _U64_MAX = -(2**63), 2**64 - 1  # the integers orjson writes

_show = reprlib.Repr()
_show.maxstring = _show.maxother = 60
_show.maxlevel = 3


def show(value: Any) -> str:
    """A short repr of a value read from a frame, for error details: at most about 100
    characters and 3 levels deep, and it never raises."""
    try:
        return _show.repr(value)
    except Exception:  # a repr that fails: say what it was
        return f"<{type(value).__name__}>"


class InvalidFrame(ValueError):
    """A frame that breaks the protocol; `sample` is its first characters, for the log."""

    def __init__(self, why: str, raw: bytes | str) -> None:
        super().__init__(why)
        self.why = why
        if isinstance(raw, str):  # lone surrogates (which no record may hold) escaped
            text = raw[:_SAMPLE_CHARS].encode("utf-8", "backslashreplace").decode("utf-8")
        else:  # no more bytes decoded than 200 characters can take
            text = raw[: _SAMPLE_CHARS * 4].decode("utf-8", "replace")
        self.sample = text[:_SAMPLE_CHARS]


def json_object(raw: bytes | str) -> dict[str, Any]:
    """A frame's JSON object, or InvalidFrame."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidFrame("not JSON", raw) from None
    if not isinstance(msg, dict):
        raise InvalidFrame("not a JSON object", raw)
    return msg


def _int(text: str) -> int | orjson.Fragment:
    """An integer orjson writes back as it was written; any other (beyond 64 bits, or
    -0) kept as its text."""
    if len(text) <= 20 and text != "-0":
        n = int(text)
        if _I64_MIN <= n <= _U64_MAX:
            return n
    return orjson.Fragment(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: orjson refuses them too


def exact_object(raw: bytes | str) -> dict[str, Any]:
    """A frame's JSON object with every number kept as written, for frames whose fields
    are recorded as they are (auction events). orjson reads a number as a binary float
    (1.10000000000000000001 -> 1.1, and integers beyond 64 bits too); here each float,
    and each integer orjson could not write, is an `orjson.Fragment` of its text, which
    orjson writes back verbatim. The stdlib decoder, several times slower than
    `json_object`: call it only for text `json_object` accepted (it is stricter: no NaN,
    no lone surrogates, no byte order mark)."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        msg = json.loads(text, parse_float=orjson.Fragment, parse_int=_int,
                         parse_constant=_no_constant)
    except RecursionError:
        raise InvalidFrame("nested too deep to record", raw) from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        raise InvalidFrame("not JSON", raw) from None
    if not isinstance(msg, dict):
        raise InvalidFrame("not a JSON object", raw)
    return msg


def retry_after_s(values: Sequence[str], cap: float) -> float | None:
    """The seconds the Retry-After header(s) `values` ask for, at most `cap`; None unless
    there is one, and it is a sane number of seconds."""
    if len(values) != 1 or not _SECONDS.match(value := values[0].strip()):
        return None
    seconds = float(value)
    return min(seconds, cap) if seconds <= SANE_RETRY_AFTER_S else None


def is_int(v: Any) -> TypeGuard[int]:
    """An int that is not a bool (JSON true is not a number here)."""
    return isinstance(v, int) and not isinstance(v, bool)
