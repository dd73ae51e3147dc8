"""The name of every published file line, and the durable cursor (pure).

A line is named by the file it is in and its byte offset there (in the uncompressed
bytes). A file is named by `FileId`: its header's period start (`segment_start_s`) and
the `recv_ns` of its first line after the header. Both are in the file's first lines, so
the name is the same whether the file is read as `current.jsonl`, as the closed segment
rotation renamed it to, or compressed. Two files of one stream with the same two numbers
(a segment closed early by size whose carried-over book is the only book of the segment
before it) are told apart by `dup`, their rank in name order.

The `Nats-Msg-Id` of a line is `<key>:<start_s>:<first_ns>:<offset>` (`.<dup>` after
`first_ns` when dup > 0), `key` being the symbol, or `SYMBOL/raw` for raw frames.

A `Cursor` says where a stream's publishing stands: every line of its file before
`offset`, and every line of the files before that file, is in the stream (or is never
published: headers and carried-over book lines). `book` is the digest of that file's
last book line before `offset`, so the carried-over copy at the start of the next file
is still recognised after a restart.
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

import orjson

from collector.core import versioned

VERSION = 1
MAX_CURSOR_BYTES = 4096  # a cursor file is read this far, no further
_ID = re.compile(r"(?P<key>[A-Z0-9]+(?:/raw)?):(?P<s>[0-9]+):(?P<f>-?[0-9]+)(?:\.(?P<d>[0-9]+))?"
                 r":(?P<o>[0-9]+)")
_DIGEST = re.compile(r"[0-9a-f]{32}")


class FileId(NamedTuple):
    """A file of a stream, the same before and after rotation and compression."""

    start_s: int  # the header's segment_start_s (0 without a header)
    first_ns: int  # recv_ns of the first line after the header (-1 when it has none)
    dup: int = 0  # rank among the stream's files with the same two numbers


class Position(NamedTuple):
    """A place in a stream: a file and a byte offset in it; ordered as the stream is."""

    file: FileId
    offset: int


class Cursor(NamedTuple):
    key: str  # "SYMBOL" or "SYMBOL/raw"
    at: Position
    book: str | None  # book_digest of the file's last book line before `at`


class CursorError(ValueError):
    """A cursor file that cannot be used; says why."""


def book_digest(line: bytes) -> str:
    return hashlib.blake2b(line, digest_size=16).hexdigest()


def id_prefix(key: str, file: FileId) -> str:
    """`msg_id` without the offset: one string per file."""
    dup = f".{file.dup}" if file.dup else ""
    return f"{key}:{file.start_s}:{file.first_ns}{dup}:"


def msg_id(key: str, at: Position) -> str:
    return f"{id_prefix(key, at.file)}{at.offset}"


def parse_msg_id(text: str) -> tuple[str, Position] | None:
    """(key, the line's start) of a `msg_id`; None for anything else."""
    m = _ID.fullmatch(text)
    if m is None:
        return None
    file = FileId(int(m["s"]), int(m["f"]), int(m["d"] or 0))
    return m["key"], Position(file, int(m["o"]))


def encode(cursor: Cursor) -> bytes:
    file, offset = cursor.at
    return orjson.dumps({"v": VERSION, "key": cursor.key, "start_s": file.start_s,
                         "first_ns": file.first_ns, "dup": file.dup, "offset": offset,
                         "book": cursor.book}, option=orjson.OPT_APPEND_NEWLINE)


def decode(data: bytes, key: str) -> Cursor:
    """The cursor in `data` (a cursor file's bytes) for stream `key`, or CursorError."""
    try:
        rec = versioned.load(data, MAX_CURSOR_BYTES, VERSION, "cursor")
    except ValueError as exc:
        raise CursorError(str(exc)) from None
    if rec.get("key") != key:
        raise CursorError(f"the cursor of {rec.get('key')!r}, not of {key!r}")
    nums = {}
    for name, low in (("start_s", 0), ("first_ns", -1), ("dup", 0), ("offset", 0)):
        value = rec.get(name)
        if type(value) is not int or not low <= value < 2**63:
            raise CursorError(f"{name} {value!r} is not an integer from {low} to 2^63-1")
        nums[name] = value
    book = rec.get("book")
    if book is not None and not (type(book) is str and _DIGEST.fullmatch(book)):
        raise CursorError(f"book {book!r} is not a digest")
    file = FileId(nums["start_s"], nums["first_ns"], nums["dup"])
    return Cursor(key, Position(file, nums["offset"]), book)
