"""Which files hold a symbol's records, in read order (see README "Output").

`<dir>/<SYMBOL>/current.jsonl` is the active segment; closed segments are named
`format.SegmentName`, possibly compressed. A symbol's segments are read in
(start time, N) order, `current.jsonl` last.

- `*.tmp` files (a compression in progress) and files named for another symbol
  are left out.
- A segment present both uncompressed and compressed is one `Segment`; its
  uncompressed file (which is complete) is preferred, and if that disappears before
  it is opened (the compression just finished) the compressed one is opened instead.
- A directory that cannot be listed (or an entry whose kind cannot be told, such as
  a symlink loop) raises `ReadError` naming it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from collector.core.format import COMPRESSED, CURRENT, RAW_DIR, SegmentName
from collector.tools.decoding import ReadError, open_binary

# Uncompressed first: it is complete.
_PREFERENCE = ("", *(suffix for suffix in COMPRESSED.values() if suffix))
_CURRENT_KEY = (sys.maxsize, sys.maxsize)


@dataclass(frozen=True)
class Segment:
    """One segment of a symbol: the files that may hold it, preferred first."""

    symbol: str
    key: tuple[int, int]  # (start ns from the name, N); current.jsonl: (max, max)
    paths: tuple[Path, ...]

    @property
    def is_current(self) -> bool:
        return self.paths[0].name == CURRENT

    @property
    def start_ns(self) -> int | None:
        return None if self.is_current else self.key[0]


def list_segments(folder: Path | str, symbol: str | None = None) -> list[Segment]:
    """The segments in `folder` (a symbol's directory, or its `raw/`), in read order.

    Files named for another symbol than `symbol` (default: the folder's name, or
    its parent's for `raw/`) and `*.tmp` files are left out."""
    folder = Path(folder)
    if symbol is None:
        symbol = folder.parent.name if folder.name == RAW_DIR else folder.name
    found: dict[tuple[int, int], SegmentName] = {}
    has_current = False
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ReadError(folder, None, f"cannot list: {exc.strerror or exc}") from None
    for entry in entries:
        if entry.name == CURRENT:
            has_current = True
            continue
        name = SegmentName.parse(entry.name)
        if name is not None and name.symbol == symbol:
            found[(name.start_s * 10**9, name.n)] = name
    # every variant, preferred first; unlisted ones too, for the file that appears
    # while we read (its uncompressed twin was just removed)
    segs = [Segment(symbol, key, tuple(folder / (found[key].plain + c) for c in _PREFERENCE))
            for key in sorted(found)]
    if has_current:
        segs.append(Segment(symbol, _CURRENT_KEY, (folder / CURRENT,)))
    return segs


def list_symbols(directory: Path | str) -> list[str]:
    """Symbol directories under `directory` that hold at least one segment."""
    out = []
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        raise ReadError(directory, None, f"cannot list: {exc.strerror or exc}") from None
    for entry in entries:
        try:
            is_dir = entry.is_dir()
        except OSError as exc:  # a symlink loop, say
            raise ReadError(entry.path, None, f"cannot read: {exc.strerror or exc}") from None
        if is_dir and list_segments(entry.path):
            out.append(entry.name)
    return out


def open_segment(seg: Segment) -> tuple[Path, IO[bytes]] | None:
    """(path, stream) of the first of `seg`'s files that exists; None when all are gone."""
    for path in seg.paths:
        try:
            return path, open_binary(path)
        except FileNotFoundError:
            continue
    return None
