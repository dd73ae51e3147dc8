"""Which symbols to record, given the exchange's listing (pure).

`feed.symbols` entries are exact symbols or fnmatch globs (an entry with `*`, `?` or
`[`), matched against the upper-case listing; `feed.exclude` globs remove symbols after
matching. Exact entries are kept whether listed or not, as before discovery existed (an
unknown one is refused by the exchange and retried, see feed.refused_retry_s); globs
only ever match listed symbols. `shrunk` guards against a listing that lost most of its
symbols at once (a broken answer more likely than a mass delisting).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fnmatch import fnmatchcase

GLOB_CHARS = "*?["
GLOB = re.compile(r"[A-Z0-9*?\[\]!]{1,64}")  # fullmatch: upper-case letters, digits, * ? [ ] !


def is_glob(entry: str) -> bool:
    return any(c in entry for c in GLOB_CHARS)


def has_globs(entries: Iterable[str]) -> bool:
    """Whether these entries need the exchange's listing (an exact-only list does not)."""
    return any(is_glob(e) for e in entries)


def select(listing: Iterable[str], patterns: Iterable[str], exclude: Iterable[str] = ()) -> tuple[str, ...]:
    """The symbols to record, in the order of `patterns` then of `listing`, without
    duplicates; exact patterns always, globs matching listed symbols; minus `exclude`."""
    listed = list(dict.fromkeys(s.upper() for s in listing))
    chosen: dict[str, None] = {}
    for pattern in patterns:
        if is_glob(pattern):
            chosen.update((s, None) for s in listed if fnmatchcase(s, pattern))
        else:
            chosen[pattern] = None
    drop = tuple(exclude)
    return tuple(s for s in chosen if not any(fnmatchcase(s, e) for e in drop))


def shrunk(old: Iterable[str], new: Iterable[str]) -> bool:
    """More than half of the `old` listing is gone from the `new` one."""
    before = set(old)
    gone = len(before - set(new))
    return gone * 2 > len(before)


SYMBOL = re.compile(r"[A-Z0-9]{3,24}")  # also a directory name: no dot, slash or control character


def entry_errors(key: str, entries: Iterable[str], exact_ok: bool = True) -> tuple[str, str] | None:
    """(key, why) for the first entry of `feed.symbols` (or `feed.exclude`) that is
    neither an exact symbol nor a glob of upper-case letters, digits and * ? [ ] !."""
    seen: set[str] = set()
    for entry in entries:
        if is_glob(entry) or not exact_ok:
            if not GLOB.fullmatch(entry):
                return key, (f"{entry[:40]!r} is not a pattern of upper-case letters, digits "
                             "and * ? [ ] ! such as \"BTC*\" or \"*\"")
        elif not SYMBOL.fullmatch(entry):
            return key, f"{entry[:40]!r} is not an upper-case Gemini symbol such as BTCUSD (or a glob)"
        if entry in seen:
            return key, f"lists {entry!r} twice"
        seen.add(entry)
    return None
