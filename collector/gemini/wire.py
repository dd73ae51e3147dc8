"""What both of Gemini's market-data APIs share on the wire (pure): a frame is one JSON
object, and a frame that breaks the protocol is an `InvalidFrame`."""

from __future__ import annotations

from typing import Any, TypeGuard

import orjson

_SAMPLE_CHARS = 200


class InvalidFrame(ValueError):
    """A frame that breaks the protocol; `sample` is its first characters, for the log."""

    def __init__(self, why: str, raw: bytes | str) -> None:
        super().__init__(why)
        self.why = why
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
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


def is_int(v: Any) -> TypeGuard[int]:
    """An int that is not a bool (JSON true is not a number here)."""
    return isinstance(v, int) and not isinstance(v, bool)
