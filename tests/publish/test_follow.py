"""Following a stream's files (collector/publish/follow.py) on real files in tmp_path:
the lines `collector cat` prints, ids that survive rotation and compression, resuming
from a cursor, a growing current.jsonl, and files that are not what they should be."""

from __future__ import annotations

import os
from pathlib import Path

from collector.core import format
from collector.core.format import CURRENT, Reason
from collector.publish.cursor import Position
from collector.publish.follow import Follower, Line
from collector.tools.reading import read_lines
from tests.helpers.publish import SYM, T0, book, compress_segment, head, seg, trade, write


def everything(f: Follower) -> list[Line]:
    out: list[Line] = []
    while batch := f.read(7, 1 << 20):  # small batches: the state carries between calls
        out += batch
    return out


def cat(root: Path) -> list[bytes]:
    return [line[:-1] for line in read_lines(root, SYM)]


def three_segments(root: Path) -> Path:
    """Closed zstd, closed gzip, then current.jsonl; carried-over books; a resync
    followed in the next segment by a genuine first book."""
    folder = root / SYM
    b1, b2, b3 = book(T0 * 10**9 + 2, "101"), book(T0 * 10**9 + 4, "102"), book((T0 + 60) * 10**9 + 2, "103")
    write(folder, seg(T0), head(), format.resync(SYM, Reason.START, T0 * 10**9 + 1), b1,
          trade(T0 * 10**9 + 3), b2, compress="zstd")
    write(folder, seg(T0 + 60), head(T0 + 60), b2, trade((T0 + 60) * 10**9 + 1), b3,
          format.resync(SYM, Reason.GAP, (T0 + 60) * 10**9 + 3, expected_seq=5, got_seq=7), compress="gzip")
    write(folder, CURRENT, head(T0 + 120), book((T0 + 120) * 10**9 + 1, "104"), trade((T0 + 120) * 10**9 + 2))
    return folder


def test_the_lines_are_what_cat_prints(tmp_path):
    three_segments(tmp_path)
    lines = everything(Follower(tmp_path, SYM))
    assert [ln.data for ln in lines] == cat(tmp_path)
    assert len(lines) == 9  # 3 headers and one carried-over book left out
    assert len({ln.msg_id for ln in lines}) == len(lines)


def test_ids_are_the_same_after_rotation_and_compression(tmp_path):
    folder = three_segments(tmp_path)
    before = everything(Follower(tmp_path, SYM))
    os.rename(folder / CURRENT, folder / seg(T0 + 120))  # what the writer's rotation does
    compress_segment(folder, seg(T0 + 120))
    write(folder, CURRENT, head(T0 + 180), trade((T0 + 180) * 10**9 + 1))
    after = everything(Follower(tmp_path, SYM))
    assert [(ln.msg_id, ln.data) for ln in after[:len(before)]] == [(ln.msg_id, ln.data) for ln in before]
    assert [ln.data for ln in after] == cat(tmp_path)


def test_resuming_from_any_cursor_gives_the_rest(tmp_path):
    three_segments(tmp_path)
    lines = everything(Follower(tmp_path, SYM))
    for k, line in enumerate(lines):
        cursor = Follower(tmp_path, SYM).cursor(line)
        rest = everything(Follower(tmp_path, SYM, cursor))
        assert [ln.msg_id for ln in rest] == [ln.msg_id for ln in lines[k + 1:]], f"after line {k}"


def test_a_growing_current_file_whole_lines_only_and_across_rotation(tmp_path):
    folder = tmp_path / SYM
    write(folder, CURRENT, head(), format.resync(SYM, Reason.START, T0 * 10**9 + 1))
    f = Follower(tmp_path, SYM)
    assert len(f.read(100, 1 << 20)) == 1
    assert f.read(100, 1 << 20) == [] and not f.ready()
    last = book(T0 * 10**9 + 2)
    with open(folder / CURRENT, "ab") as cur:
        cur.write(last[:30])  # a line being written
        cur.flush()
        assert f.ready() and f.read(100, 1 << 20) == []
        cur.write(last[30:] + trade(T0 * 10**9 + 3))
    assert [ln.data for ln in f.read(100, 1 << 20)] == [last[:-1], trade(T0 * 10**9 + 3)[:-1]]
    # rotation: renamed (the open file is read to its end), a new current.jsonl
    # carrying the last book
    with open(folder / CURRENT, "ab") as cur:
        cur.write(trade(T0 * 10**9 + 4))
    os.rename(folder / CURRENT, folder / seg(T0))
    write(folder, CURRENT, head(T0 + 60), last, trade((T0 + 60) * 10**9 + 1))
    assert f.ready()
    assert [ln.data for ln in f.read(100, 1 << 20)] == [trade(T0 * 10**9 + 4)[:-1],
                                                         trade((T0 + 60) * 10**9 + 1)[:-1]]
    assert [ln.data for ln in everything(Follower(tmp_path, SYM))] == cat(tmp_path)


def test_skip_to_goes_on_after_the_line_named(tmp_path):
    three_segments(tmp_path)
    lines = everything(Follower(tmp_path, SYM))
    for k in (0, 3, 4, len(lines) - 1):
        f = Follower(tmp_path, SYM)
        f.skip_to(Position(lines[k].file, lines[k].end - len(lines[k].data) - 1))
        assert [ln.msg_id for ln in everything(f)] == [ln.msg_id for ln in lines[k + 1:]]


def test_twin_segments_get_distinct_ids(tmp_path):
    """A segment closed by size whose only book is its first line, and the next one
    carrying that book over: the same period and first recv_ns."""
    folder = tmp_path / SYM
    x = book(T0 * 10**9 + 1)
    write(folder, seg(T0, 1), head(), x, trade(T0 * 10**9 + 2))
    write(folder, seg(T0, 2), head(), x, trade(T0 * 10**9 + 3))
    write(folder, CURRENT, head(), x, trade(T0 * 10**9 + 4))
    lines = everything(Follower(tmp_path, SYM))
    assert [ln.data for ln in lines] == cat(tmp_path)
    assert len({ln.msg_id for ln in lines}) == len(lines) == 4
    assert [ln.file.dup for ln in lines] == [0, 0, 1, 2]


def test_files_that_cannot_be_read_are_skipped_and_counted(tmp_path):
    folder = tmp_path / SYM
    skipped: list[str] = []
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(head() + trade(T0 * 10**9 + 9))
    write(folder, seg(T0), head(), trade(T0 * 10**9 + 1), b'{"type":"trade","x":"' + b"y" * 5000 + b'"}\n',
          trade(T0 * 10**9 + 2))
    write(folder, seg(T0 + 60), head(T0 + 60), trade((T0 + 60) * 10**9 + 1) * 200, compress="zstd")
    zst = folder / (seg(T0 + 60) + ".zst")
    zst.write_bytes(zst.read_bytes()[:-20])  # cut short
    (folder / seg(T0 + 120)).symlink_to(outside)  # never followed
    write(folder, CURRENT, head(T0 + 180), trade((T0 + 180) * 10**9 + 1))
    lines = everything(Follower(tmp_path, SYM, max_line=1000, on_skip=skipped.append))
    data = [ln.data for ln in lines]
    assert data[:2] == [trade(T0 * 10**9 + 1)[:-1], trade(T0 * 10**9 + 2)[:-1]]  # the long line skipped
    assert data[-1] == trade((T0 + 180) * 10**9 + 1)[:-1]
    assert trade(T0 * 10**9 + 9)[:-1] not in data
    assert sorted(skipped) == ["too long", "unreadable file", "unreadable file"]


def test_ready_while_whole_lines_wait_in_the_buffer(tmp_path):
    folder = tmp_path / SYM
    write(folder, CURRENT, head(), *(trade(T0 * 10**9 + i) for i in range(10)))
    f = Follower(tmp_path, SYM)
    assert len(f.read(4, 1 << 20)) == 4
    assert f.ready()  # the file is read to its end, six lines are not handed out yet
    assert len(f.read(100, 1 << 20)) == 6
    assert not f.ready()
