"""Raw-frame log lines (pure): every frame as received, with its receive time.

`<dir>/<SYMBOL>/raw/` segments hold, after their header, one JSON object per line:

    {"type":"connect","url":"wss://...","recv_ns":...}       a new connection
    {"recv_ns":...,"frame":{...the frame, byte for byte...}}  a frame that parsed
    {"recv_ns":...,"text":"..."}                              a frame that did not
    {"type":"sent","recv_ns":...,"text":"..."}                a request the feed sent
    {"type":"resync",...}                                     the feed's resync records

A valid frame is embedded verbatim (no re-encoding, so nothing is lost and it costs
no serialisation); anything else is kept as a JSON string. `sent` lines (current API
only: its SUBSCRIBE/UNSUBSCRIBE requests, as sent, after the frame that caused them)
carry the send time in `recv_ns`, so every line has the same time field.
`collector replay` reads these back into exactly the records `collector run` wrote.
"""

from __future__ import annotations

import orjson

FRAME_PREFIX = b'{"recv_ns":%d,"frame":'


def connect(url: str, recv_ns: int) -> bytes:
    return orjson.dumps({"type": "connect", "url": url, "recv_ns": recv_ns},
                        option=orjson.OPT_APPEND_NEWLINE)


def sent(request: bytes, sent_ns: int) -> bytes:
    return orjson.dumps({"type": "sent", "recv_ns": sent_ns, "text": request.decode()},
                        option=orjson.OPT_APPEND_NEWLINE)


def frame(raw: bytes | str, recv_ns: int, parsed: bool) -> bytes:
    data = raw.encode() if isinstance(raw, str) else raw
    # Verbatim only when the frame is one JSON value on one line: a reader may split
    # on \r as well as \n.
    if parsed and b"\n" not in data and b"\r" not in data:
        return FRAME_PREFIX % recv_ns + data + b"}\n"
    return orjson.dumps({"recv_ns": recv_ns, "text": data.decode("utf-8", "replace")},
                        option=orjson.OPT_APPEND_NEWLINE)


def frame_bytes(line: bytes, recv_ns: int) -> bytes:
    """The original frame of a verbatim `frame` line."""
    return line[len(FRAME_PREFIX % recv_ns):].rstrip(b"\n")[:-1]
