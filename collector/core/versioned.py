"""Small JSON documents the collector writes for itself (the publisher's cursors and
status) and reads back as untrusted input (pure)."""

from __future__ import annotations

from typing import Any

import orjson


def load(data: bytes, limit: int, version: int, what: str) -> dict[str, Any]:
    """`data` as a JSON object of at most `limit` bytes whose "v" is `version`; ValueError
    saying what is wrong (`what` names the document: "cursor", "status")."""
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    try:
        rec = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if type(rec) is not dict or rec.get("v") != version:
        raise ValueError(f"not a version {version} {what}")
    return rec
