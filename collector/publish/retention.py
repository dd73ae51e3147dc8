"""Retention's question with [publish] on: is this closed segment published yet? (I/O,
blocking: the writer asks on its background thread.)

The answer comes from the durable cursors on disk (store.py), not from the publisher,
which runs in a process of its own: a segment is kept unless its stream's cursor is past
every line of it. The cursor is written after the acknowledgements, so it can only be
behind the stream, and a segment is kept a little longer, never deleted early. A stream
with no cursor, or one that cannot be read, keeps every segment; a segment with no
line to publish, or that cannot be read, is not kept.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from collector.core.format import RAW_DIR, SegmentName
from collector.publish import store
from collector.publish.cursor import CursorError
from collector.publish.follow import segment_head

log = structlog.get_logger("publish")

MAX_REMEMBERED = 100_000  # segments already warned about (one warning each)


class KeepUnpublished:
    """`writer.retain_filter`: True for a segment under `directory` not yet published.
    `raw`: raw frames are published too (publish.raw and output.raw)."""

    def __init__(self, directory: Path, raw: bool = False) -> None:
        self.directory = directory
        self.raw = raw
        self._warned: set[Path] = set()

    def __call__(self, path: Path) -> bool:
        keep = self.unpublished(path)
        if keep and path not in self._warned:
            if len(self._warned) >= MAX_REMEMBERED:
                self._warned.clear()
            self._warned.add(path)
            log.warning("retention: keeping a segment not yet published", path=str(path))
        return keep

    def unpublished(self, path: Path) -> bool:
        try:
            parts = path.relative_to(self.directory).parts
        except ValueError:
            return False
        key = "/".join(parts[:-1])
        seg = SegmentName.parse(parts[-1])
        if seg is None or (key.endswith(f"/{RAW_DIR}") and not self.raw):
            return False
        try:
            cursor = store.load(self.directory, key)
        except CursorError:
            cursor = None
        if cursor is None:
            return True  # not one of its lines is known to be in the stream
        done = cursor.at.file
        if seg.start_s != done.start_s:
            return seg.start_s > done.start_s
        try:
            head = segment_head(self.directory, path)
        except OSError:
            head = None  # unreadable: the publisher skips it too
        return head is not None and head >= done[:2]
