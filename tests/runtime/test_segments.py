import gzip
import os
from pathlib import Path

import zstandard

from collector.core.format import SegmentName
from collector.runtime import segments, tree
from collector.tools.decoding import open_binary


def touch(path: Path, data: bytes = b"x\n", mtime: float | None = None) -> Path:
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_period_start_is_utc_aligned():
    t = 1_764_000_000.7  # 2025-11-24T16:00:00.7Z
    assert segments.period_start(t, 3600) == 1_764_000_000
    assert segments.period_start(t + 3599, 3600) == 1_764_000_000
    assert segments.period_start(t + 3600, 3600) == 1_764_003_600
    assert segments.period_start(t, 86400) % 86400 == 0
    assert SegmentName(1_764_000_000, 1, "BTCUSD").plain == "BTCUSD.20251124T160000Z.jsonl"


def test_names_order_and_suffixes(tmp_path):
    start = 1_764_000_000

    def free() -> str:
        return segments.free_name(os.listdir(tmp_path), "BTCUSD", start)

    first = free()
    assert first == "BTCUSD.20251124T160000Z.jsonl"
    touch(tmp_path / first)
    second = free()
    assert second == "BTCUSD.20251124T160000Z-2.jsonl"
    touch(tmp_path / second)
    touch(tmp_path / (free() + ".zst"))
    touch(tmp_path / "BTCUSD.20251124T150000Z.jsonl.gz")
    touch(tmp_path / "current.jsonl")
    touch(tmp_path / "notes.txt")
    names = [s.path.name for s in segments.closed_segments(tmp_path)]
    assert names == ["BTCUSD.20251124T150000Z.jsonl.gz", "BTCUSD.20251124T160000Z.jsonl",
                     "BTCUSD.20251124T160000Z-2.jsonl", "BTCUSD.20251124T160000Z-3.jsonl.zst"]
    assert free().endswith("-4.jsonl")
    # -10 sorts after -9, not after -1
    for n in range(4, 11):
        touch(tmp_path / f"BTCUSD.20251124T160000Z-{n}.jsonl")
    assert segments.closed_segments(tmp_path)[-1].path.name == "BTCUSD.20251124T160000Z-10.jsonl"


def unzstd(path: Path) -> bytes:
    with open(path, "rb") as f:
        return zstandard.ZstdDecompressor().stream_reader(f).read()


def ungzip(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


def test_compress_round_trips_and_removes_the_plain_file(tmp_path):
    data = b"".join(b'{"n":%d}\n' % i for i in range(10000))
    for method, opener in (("zstd", unzstd), ("gzip", ungzip)):
        name = f"BTCUSD.20251124T160000Z-{method}.jsonl".replace("-zstd", "").replace("-gzip", "-2")
        plain = touch(tmp_path / name, data)
        with tree.folder_fd(tmp_path) as fd:
            final = tmp_path / segments.compress_at(fd, tmp_path, plain.name, method)
        assert not plain.exists() and final.exists()
        assert opener(final) == data
        with open_binary(final) as f:
            assert f.read() == data
    assert not list(tmp_path.glob("*.tmp"))


def test_pending_compression_repairs_an_interrupted_one(tmp_path):
    done = touch(tmp_path / "BTCUSD.20251124T150000Z.jsonl")
    touch(tmp_path / "BTCUSD.20251124T150000Z.jsonl.zst")  # compressed, plain not yet removed
    half = touch(tmp_path / "BTCUSD.20251124T160000Z.jsonl.zst.tmp")  # crashed mid-way
    todo = touch(tmp_path / "BTCUSD.20251124T160000Z.jsonl")
    with tree.folder_fd(tmp_path) as fd:
        assert segments.pending_compression(fd) == [todo.name]
    assert not done.exists() and not half.exists()


def test_retention_by_age_and_size(tmp_path):
    now = 2_000_000_000.0
    a = tmp_path / "BTCUSD"
    b = tmp_path / "ETHUSD" / "raw"
    a.mkdir()
    b.mkdir(parents=True)
    old = touch(a / "BTCUSD.20251124T150000Z.jsonl.zst", b"x" * 100, mtime=now - 40 * 86400)
    mid = touch(b / "ETHUSD.20251124T160000Z.jsonl.zst", b"x" * 100, mtime=now - 10 * 86400)
    new = touch(a / "BTCUSD.20251124T170000Z.jsonl.zst", b"x" * 100, mtime=now - 3600)
    touch(a / "current.jsonl", b"x" * 1000, mtime=now - 90 * 86400)  # never a retention target
    assert segments.expired(tmp_path, None, None, now) == []
    assert segments.expired(tmp_path, 30 * 86400, None, now) == [old]
    assert segments.expired(tmp_path, None, 150, now) == [old, mid]
    assert segments.expired(tmp_path, 30 * 86400, 250, now) == [old]
    assert new.exists()
