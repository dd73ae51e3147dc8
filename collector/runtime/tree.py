"""The output tree, opened without following a symlink (I/O).

Below `output.dir` (itself as configured, a symlink or not) each folder is opened in its
parent's descriptor and each file in its folder's, with O_NOFOLLOW: a symlink (or a
FIFO...) where the collector keeps a folder or a file is refused (`UnsafePath`, naming
it). Files are created 0o644 & ~umask: current, closed and compressed alike.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from collector.core.format import RAW_DIR

FILE_MODE = 0o644  # narrowed by the umask, alike for current, closed and compressed files
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted under a file's name must not hang the writer
_FILE_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class UnsafePath(OSError):
    """A symlink or another kind of file where the collector keeps a file or a folder."""

    def __str__(self) -> str:
        return str(self.strerror)


def refusal(dir_fd: int, name: str, path: Path, want: str) -> UnsafePath | None:
    """UnsafePath when `name` (in `dir_fd`) exists and is not a `want` ("file"/"folder")."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    if stat.S_ISLNK(st.st_mode):
        why = "is a symbolic link"
    elif stat.S_ISDIR(st.st_mode) if want == "folder" else stat.S_ISREG(st.st_mode):
        return None
    else:
        why = "is not a regular file" if want == "file" else "is not a directory"
    return UnsafePath(errno.ELOOP, f"{path} {why}; the collector keeps a {want} there and never "
                                   "follows a link out of output.dir (remove or replace it)")


def open_folder(root: Path, parts: Sequence[str] = (), create: bool = False) -> int:
    """A descriptor of `root/parts...`: `root` as given, each part opened inside the one
    before without following a symlink (created when `create`)."""
    if create:
        root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    path = root
    try:
        for part in parts:
            path = path / part
            if part in ("", ".", "..") or "/" in part:
                raise UnsafePath(errno.EINVAL, f"{path}: not a plain folder name")
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise (refusal(fd, part, path, "folder") or exc) from None
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_file(dir_fd: int, name: str, path: Path, flags: int) -> int:
    """os.open `name` in `dir_fd` without following a symlink; a regular file or UnsafePath."""
    try:
        fd = os.open(name, flags | _FILE_FLAGS, FILE_MODE, dir_fd=dir_fd)
    except OSError as exc:
        raise (refusal(dir_fd, name, path, "file") or exc) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafePath(errno.EINVAL, f"{path} is not a regular file; the collector "
                                           "keeps a file there (remove or replace it)")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def folder_fd(root: Path, parts: Sequence[str] = (), create: bool = False) -> Iterator[int]:
    """`open_folder` for a `with` block."""
    fd = open_folder(root, parts, create)
    try:
        yield fd
    finally:
        os.close(fd)


def stream_folders(root: Path) -> list[str]:
    """"SYMBOL" and "SYMBOL/raw" of the stream folders in `root`: real directories only."""
    found = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False):
            raw = Path(entry.path, RAW_DIR)
            found += [entry.name, f"{entry.name}/{RAW_DIR}"] if raw.is_dir() and not raw.is_symlink() \
                else [entry.name]
    return found


class Held(Exception):
    """Another process holds the lock (`holder`: the pid it wrote, or "unknown")."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def hold_lock(directory: Path, name: str, create: bool = False) -> int:
    """Hold an flock on the file `name` in `directory` for the process's lifetime and write
    our pid in it; Held when another process holds it, UnsafePath for a symlink (or a
    non-file) in its place. The fd is the lock: keep it open."""
    with folder_fd(directory, create=create) as dir_fd:
        fd = open_file(dir_fd, name, directory / name, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise Held(holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
