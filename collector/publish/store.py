"""The cursor files (I/O, blocking: called in a thread).

One per stream, in its folder: `<dir>/<SYMBOL>/.published` (raw frames:
`<SYMBOL>/raw/.published`), one JSON line (cursor.py). Written whole or not at all:
`.published.new` is written, fsynced, renamed over the cursor, and the folder fsynced.
Both are opened without following a symlink (runtime/tree.py). A cursor that cannot be
read is reported by the caller and the stream starts over (see publisher.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from collector.publish.cursor import MAX_CURSOR_BYTES, Cursor, CursorError, decode, encode
from collector.runtime import tree

CURSOR = ".published"
_NEW = CURSOR + ".new"


def load(root: Path, key: str) -> Cursor | None:
    """The stream's cursor; None when it has none; CursorError (saying why) when it has
    one that cannot be used. A missing folder is no cursor."""
    path = root / key / CURSOR
    try:
        with tree.folder_fd(root, key.split("/")) as dir_fd:
            fd = tree.open_file(dir_fd, CURSOR, path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CursorError(f"{path}: {exc}") from None
    try:
        data = os.read(fd, MAX_CURSOR_BYTES + 1)
    except OSError as exc:
        raise CursorError(f"{path}: {exc}") from None
    finally:
        os.close(fd)
    try:
        return decode(data, key)
    except CursorError as exc:
        raise CursorError(f"{path}: {exc}") from None


def save(root: Path, cursor: Cursor) -> None:
    """Write the cursor durably (OSError when it cannot be)."""
    key = cursor.key
    with tree.folder_fd(root, key.split("/")) as dir_fd:
        fd = tree.open_file(dir_fd, _NEW, root / key / _NEW, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            data = encode(cursor)
            if os.write(fd, data) != len(data):
                raise OSError(f"short write of {root / key / _NEW}")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(_NEW, CURSOR, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
