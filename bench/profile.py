"""Summarise a `py-spy record --format raw` profile: where the time goes.

    python -m bench.profile FILE.raw [--top 30]

Collapsed stacks ("frame;frame;... count") become three tables: self time by function
(the leaf frame of every sample), total time by function (on the stack at all), and self
time by package/module group, each in % of all samples (idle excluded: py-spy drops
samples of threads waiting in the kernel unless --idle).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _split(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip(), ""
    return m.group("func"), m.group("file")


def _short(path: str) -> str:
    for marker in ("site-packages/", "lib/python3"):
        i = path.find(marker)
        if i >= 0:
            path = path[i + len(marker):]
            if marker == "lib/python3":
                path = path.split("/", 1)[-1]
            break
    return path


def group_of(path: str) -> str:
    p = _short(path)
    if p.startswith("collector/"):
        return p
    if p.startswith("websockets/"):
        return "websockets/" + p.split("/")[-1]
    if p.startswith(("asyncio/", "<frozen", "threading", "concurrent/", "selectors")):
        return "stdlib: " + p.split("/")[0]
    if p.startswith("picows"):
        return "picows"
    return p.split("/")[0] or "?"


def summarise(raw: str, title: str = "", top: int = 30) -> str:
    self_fn: Counter[str] = Counter()
    total_fn: Counter[str] = Counter()
    self_group: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        line = line.rstrip()
        if not line:
            continue
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        frames = [f for f in stack.split(";") if f]
        if frames and not _FRAME.match(frames[0].strip()):
            threads[frames[0]] += count  # --threads puts the thread first
            frames = frames[1:]
        if not frames:
            continue
        total += count
        seen = set()
        for f in frames:
            func, path = _split(f)
            key = f"{func} ({_short(path)})"
            if key not in seen:
                total_fn[key] += count
                seen.add(key)
        func, path = _split(frames[-1])
        self_fn[f"{func} ({_short(path)})"] += count
        self_group[group_of(path)] += count
    if not total:
        return f"{title}\n(no samples)\n"

    def pct(n: int) -> str:
        return f"{100.0 * n / total:6.2f}%"

    out = []
    if title:
        out += [title, ""]
    out.append(f"{total} samples (active threads only)")
    if threads:
        out += ["", "by thread:"] + [f"  {pct(n)}  {t}" for t, n in threads.most_common()]
    out += ["", "self time by module group:"]
    out += [f"  {pct(n)}  {g}" for g, n in self_group.most_common(top)]
    out += ["", f"self time by function (top {top}):"]
    out += [f"  {pct(n)}  {k}" for k, n in self_fn.most_common(top)]
    out += ["", f"total time by function (top {top}, on the stack at all):"]
    out += [f"  {pct(n)}  {k}" for k, n in total_fn.most_common(top)]
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.profile")
    p.add_argument("raw")
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args()
    with open(args.raw) as f:
        print(summarise(f.read(), top=args.top), end="")


if __name__ == "__main__":
    main()
