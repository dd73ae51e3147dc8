"""TOML configuration -> frozen dataclasses.

Every error names the key and the file, and the CLI turns it into exit status 78
(EX_CONFIG), which systemd's RestartPreventExitStatus=78 keeps from looping.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from collector.core import symbols as symbol_rules
from collector.core.health import EXIT_AFTER_S, WRITER_STUCK_S
from collector.gemini import limits

EX_CONFIG = 78
# Patterns are used with fullmatch: "$" would also accept a trailing newline.
_DURATION = re.compile(r"([1-9][0-9]{0,8})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION_S = 100 * 365 * 86400  # output.rotate and output.retain
_LISTEN = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]*)):(?P<port>[0-9]{1,5})")
_CREDENTIALS = re.compile(r"^([^:/?#]*://)[^/?#]*@")  # scheme://user:password@ -> hidden in messages
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")  # a DNS label (underscores do resolve)
WEEK_S = 7 * 86400.0
# Every number key -> (lowest, whether the lowest itself is allowed, highest). Beyond the highest
# is a mistake that can break timers (threading's waits overflow past ~9.2e9 s) or int(mb * 2**20).
RANGES: dict[str, tuple[float, bool, float]] = {
    **{f"feed.{k}": (0.0, False, WEEK_S) for k in (
        "stale_after_s", "snapshot_timeout_s", "backoff_initial_s", "backoff_max_s",
        "refused_retry_s", "ping_interval_s", "ping_timeout_s", "retry_after_max_s")},
    "feed.healthy_after_s": (0.0, True, WEEK_S),
    "feed.discover_s": (0.0, False, WEEK_S),
    "feed.connect_burst": (1, True, 10_000),
    "feed.symbols_per_socket": (1, True, 1000),
    "feed.connects_per_minute": (0.0, False, 1e6),
    "feed.max_connects_per_minute": (0.0, False, 1e6),
    "book.depth": (1, True, 1000),
    "output.queue_size": (1, True, 10_000_000),
    "output.batch_max": (1, True, 10_000_000),
    "output.max_segment_mb": (0.0, False, 1e6),  # a terabyte
    "output.fsync_interval_s": (0.0, False, WEEK_S),
    "output.min_free_mb": (0.0, True, 1e9),  # a petabyte
    "output.retain_gb": (0.0, True, 1e6),
    "health.writer_stuck_s": (0.0, False, WEEK_S),
    "health.exit_after_s": (0.0, False, WEEK_S),
    "audit.interval_s": (0.0, True, WEEK_S),  # 0 = off
    "audit.depth": (1, True, 1000),
    "audit.max_age_s": (0.0, False, WEEK_S),
    "publish.replicas": (1, True, 5),  # JetStream's largest replica count
    "publish.stuck_s": (0.0, False, WEEK_S),
    "publish.stop_timeout_s": (0.0, False, 3600.0),
    "publish.nice": (1, True, 19),
}
# File descriptors, measured: per symbol its socket, current.jsonl and that file's folder (and
# with output.raw the raw file and its folder), over about 15 fixed; the reserve holds those
# (stdio, event loop, lock, metrics listener and clients, heartbeat, compression, resolver).
FD_PER_SYMBOL, FD_PER_RAW, FD_RESERVE = 3, 2, 64
GLOB_SYMBOLS = 500  # a glob may match a whole exchange: Gemini lists 347 symbols
COMPRESSIONS = ("zstd", "gzip", "none")
TRANSPORTS = ("websockets", "picows")  # feed.transport; transport.py implements them
PICOWS_INSTALL_HINT = 'needs picows, which is not installed: pip install "gemini-collector[picows]"'
REPAIRS = ("resubscribe", "reconnect")
# feed.api -> the default feed.url
DEFAULT_URLS = {"v1": "wss://api.gemini.com/v1/marketdata", "current": "wss://ws.gemini.com"}


def parse_duration(text: str) -> int:
    """"5s", "15m", "1h", "1d" -> seconds."""
    m = _DURATION.fullmatch(text)
    if not m or int(m.group(1)) * _UNITS[m.group(2)] > MAX_DURATION_S:
        raise ValueError(f"not a duration: {_show(text)}")
    return int(m.group(1)) * _UNITS[m.group(2)]


def parse_listen(text: str) -> tuple[str, int]:
    """`"127.0.0.1:9464"`, `"[::1]:9464"`, `"0.0.0.0:9464"` -> (host, port); ValueError
    otherwise. Port 0 picks a free port (tests)."""
    m = _LISTEN.fullmatch(text)
    if not m:
        raise ValueError(f"not HOST:PORT (an IPv6 host in brackets): {_show(text)}")
    host = m.group("v6") if m.group("v6") is not None else m.group("host")
    port = int(m.group("port"))
    if not host or port > 65535:
        raise ValueError(f"not HOST:PORT with a host and a port up to 65535: {_show(text)}")
    try:
        check_host(host, bracketed=m.group("v6") is not None)
    except ValueError as exc:
        raise ValueError(f"not HOST:PORT: {exc}") from None
    return host, port


def check_host(host: str, bracketed: bool = False) -> None:
    """ValueError unless `host` is an IP address (IPv6 when it was in brackets) or a DNS
    name (ASCII labels; an internationalised name in its xn-- form)."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    if bracketed and not isinstance(addr, ipaddress.IPv6Address):
        raise ValueError(f"{_show(host)} in brackets is not an IPv6 address")
    if addr is not None:
        return
    if re.fullmatch(r"[0-9.]+", host):
        raise ValueError(f"{_show(host)} is not a valid IPv4 address")
    name = host.removesuffix(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(f"{_show(host)} is neither an IP address nor a host name")


def check_url(url: str, api: str, schemes: tuple[str, ...] = ("ws", "wss")) -> None:
    """ValueError unless `url` is a ws:// or wss:// URL (or one of `schemes`) with a host, a
    port from 1 to 65535 if any, no credentials, no fragment, and for v1 no query (the
    symbol is appended). feed.rest_url passes api "rest" and schemes http, https. A
    password or token in the URL is never repeated in the message."""
    shown = _show(_CREDENTIALS.sub(r"\1***@", url))
    if not url.isprintable() or " " in url:
        raise ValueError(f"contains a space or a control character: {shown}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        why = str(exc) if "@" not in url else "bad port or host"
        raise ValueError(f"not a URL ({why}): {shown}") from None
    if parts.scheme not in schemes:
        raise ValueError(f"must start with {' or '.join(f'{x}://' for x in schemes)}, got {shown}")
    if not parts.hostname:
        raise ValueError(f"has no host: {shown}")
    check_host(parts.hostname, bracketed=parts.netloc.rpartition("@")[2].startswith("["))
    if port == 0:  # websockets would quietly connect to 80 or 443 instead
        raise ValueError(f"port 0 is not a port to connect to: {shown}")
    if "@" in parts.netloc:
        raise ValueError("must not carry credentials (the URL is logged and written into segment headers)")
    if parts.fragment or url.endswith("#"):
        raise ValueError(f"must not have a #fragment: {shown}")
    if api in ("v1", "rest") and (parts.query or "?" in url):
        why = "(the path is appended)" if api == "rest" else "with api = \"v1\" (the symbol is appended)"
        raise ValueError(f"must not have a ?query {why}: {shown}")


def symbols_planned(cfg: Config) -> int:
    """How many symbols the descriptor budget plans for: the exact entries of
    feed.symbols, and GLOB_SYMBOLS more when it has a glob."""
    exact = sum(not symbol_rules.is_glob(s) for s in cfg.feed.symbols)
    return exact + (GLOB_SYMBOLS if exact < len(cfg.feed.symbols) else 0)


def fds_needed(cfg: Config) -> int:
    """File descriptors a collector with this config needs: per symbol its files, and
    its socket unless symbols share sockets (current API, feed.symbols_per_socket > 1)."""
    n = symbols_planned(cfg)
    files = (FD_PER_SYMBOL - 1 + (FD_PER_RAW if cfg.output.raw else 0)) * n
    per_socket = cfg.feed.symbols_per_socket if cfg.feed.api == "current" else 1
    return FD_RESERVE + files + math.ceil(n / per_socket)


def check_transport(cfg: FeedConfig) -> None:
    """ValueError if cfg.transport names a client that is not installed (found without
    importing it), so a bad choice is refused when the config is loaded, not at the
    first connect."""
    if cfg.transport == "picows" and find_spec("picows") is None:
        raise ValueError(PICOWS_INSTALL_HINT)


class ConfigError(Exception):
    """A config that cannot be used; the message names the key and the file."""


@dataclass(frozen=True)
class FeedConfig:
    symbols: tuple[str, ...]  # exact symbols or globs ("*" = every listed symbol)
    url: str = ""  # "" = DEFAULT_URLS[api]
    trades: bool = True
    stale_after_s: float = 15.0
    snapshot_timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    healthy_after_s: float = 60.0  # a stream up this long resets the backoff
    connect_burst: int = 5
    connects_per_minute: float = 1.0
    max_connects_per_minute: float = limits.CONNECTS_PER_MINUTE  # across all symbols (and the burst)
    refused_retry_s: float = 300.0  # a symbol the exchange does not know (404)
    retry_after_max_s: float = 300.0  # cap on an exchange's HTTP Retry-After
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0
    api: str = "v1"  # "v1" (one socket per symbol, socket_sequence) or "current" (ws.gemini.com)
    transport: str = "websockets"  # or "picows" (optional extra, faster receive path)
    repair: str = "resubscribe"  # current API: heal a gap on the same socket, or "reconnect"
    exclude: tuple[str, ...] = ()  # globs removed after matching
    rest_url: str = "https://api.gemini.com"  # GET {rest_url}/v1/symbols when a glob is used
    discover_s: float = 300.0  # re-read the listing this often
    symbols_per_socket: int = 50  # current API: symbols multiplexed on one connection (1 = own socket)

    def __post_init__(self) -> None:
        if not self.url and self.api in DEFAULT_URLS:
            object.__setattr__(self, "url", DEFAULT_URLS[self.api])


@dataclass(frozen=True)
class BookConfig:
    depth: int = 10
    emit: str = "change"


@dataclass(frozen=True)
class OutputConfig:
    dir: Path = Path("data")
    queue_size: int = 10000
    batch_max: int = 1000
    rotate: str = "1h"  # UTC-aligned segment period
    max_segment_mb: float = 512
    compress: str = "zstd"
    raw: bool = False
    fsync: str = "rotate"
    fsync_interval_s: float = 1.0
    min_free_mb: float = 1024
    retain: str = ""  # delete closed segments older than this ("" = keep)
    retain_gb: float = 0  # ... or beyond this total size (0 = no bound)

    @property
    def rotate_s(self) -> int:
        return parse_duration(self.rotate)

    @property
    def retain_s(self) -> int | None:
        return parse_duration(self.retain) if self.retain else None


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = ""  # "HOST:PORT" serves /metrics and /healthz; "" = off


@dataclass(frozen=True)
class HealthConfig:
    writer_stuck_s: float = WRITER_STUCK_S  # records queued, none written this long: unhealthy, no WATCHDOG=1
    exit_after_s: float = EXIT_AFTER_S  # event loop blocked or writer stuck this long: exit 70


@dataclass(frozen=True)
class AuditConfig:
    """[audit]: the live books held against the exchange's REST book (runtime/audit.py)."""

    interval_s: float = 0.0  # each symbol audited this often (round robin); 0 = off
    depth: int = 10  # levels per side compared
    max_age_s: float = 2.0  # how far before the request a matching stream state may lie


@dataclass(frozen=True)
class PublishConfig:
    """[publish]: every record also to a NATS JetStream stream (collector/publish)."""

    url: str | tuple[str, ...] = ""  # "nats://host:4222", or a list of one cluster's URLs; "" = off
    stream: str = "GEMINI"  # created if missing, with subjects "<subject>.>"
    subject: str = "gemini"  # records go to "<subject>.<SYMBOL>"
    raw: bool = False  # also output.raw's frames, to "<subject>.raw.<SYMBOL>"
    creds: str = ""  # a NATS .creds file (needs the nkeys package)
    token_file: str = ""  # ... or a file holding a token
    tls_ca: str = ""  # CA bundle to check the server's certificate (tls:// URLs)
    tls_cert: str = ""  # client certificate (and its key, unless in tls_key)
    tls_key: str = ""
    max_age: str = ""  # a stream created by the collector keeps messages this long ("" = no limit)
    replicas: int = 1  # ... on this many servers of a cluster
    stuck_s: float = 60.0  # records waiting and none published for this long: unhealthy
    stop_timeout_s: float = 3.0  # on SIGTERM, catch up for at most this long
    spawn: bool = True  # `collector run` starts the publisher process; false: `collector publish` runs apart
    nice: int = 10  # the publisher process's niceness: with every CPU busy, recording comes first

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.url,) if isinstance(self.url, str) else self.url

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    @property
    def max_age_s(self) -> int | None:
        return parse_duration(self.max_age) if self.max_age else None


@dataclass(frozen=True)
class Config:
    feed: FeedConfig
    book: BookConfig = field(default_factory=BookConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    path: Path | None = None


_SECTIONS: dict[str, type] = {"feed": FeedConfig, "book": BookConfig, "output": OutputConfig,
                              "log": LogConfig, "metrics": MetricsConfig, "health": HealthConfig,
                              "publish": PublishConfig, "audit": AuditConfig}
_LEVELS = ("debug", "info", "warning", "error", "critical")


def load(path: str | Path) -> Config:
    """Read and validate a config file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return from_dict(raw, path)


def from_dict(raw: dict[str, Any], path: Path | None = None) -> Config:
    where = str(path) if path else "<config>"

    def fail(key: str, why: str) -> ConfigError:
        return ConfigError(f"{where}: {key}: {why}")

    for name in raw:
        if name not in _SECTIONS:
            raise fail(name, f"unknown section (known: {', '.join(_SECTIONS)})")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise fail(name, "must be a table")
        sections[name] = _build(cls, name, table, fail)
    _check(sections, fail)
    return Config(path=path, **sections)


Fail = Callable[[str, str], ConfigError]  # (dotted key, why) -> the error to raise


def _build(cls: type, section: str, table: dict[str, Any], fail: Fail) -> Any:
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{section}.{key}"
        if key not in known:
            raise fail(dotted, f"unknown key (known: {', '.join(known)})")
        values[key] = _coerce(dotted, str(known[key].type), value, fail)
    missing = [n for n, f in known.items() if n not in values and _no_default(f)]
    if missing:
        raise fail(f"{section}.{missing[0]}", "required key is missing")
    return cls(**values)


def _no_default(f: Any) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


def _coerce(key: str, typ: str, value: Any, fail: Fail) -> Any:
    # Field types are strings (from __future__ annotations); keep the set small.
    if typ == "bool":
        if not isinstance(value, bool):
            raise fail(key, f"must be true or false, got {_show(value)}")
        return value
    if typ == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(key, f"must be an integer, got {_show(value)}")
        return value
    if typ == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(key, f"must be a number, got {_show(value)}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float range
            number = math.inf
        if not math.isfinite(number):  # nan compares false with every bound
            raise fail(key, f"must be a finite number, got {_show(value)}")
        return number
    if typ == "str":
        if not isinstance(value, str):
            raise fail(key, f"must be a string, got {_show(value)}")
        return value
    if typ == "Path":
        if not isinstance(value, str) or not value:
            raise fail(key, f"must be a non-empty path string, got {_show(value)}")
        if "\0" in value:
            raise fail(key, f"must not contain a NUL character, got {_show(value)}")
        return Path(value)
    if typ == "str | tuple[str, ...]":  # one string, or a list of them
        if isinstance(value, str):
            return value
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise fail(key, f"must be a string or a non-empty list of strings, got {_show(value)}")
        return tuple(value)
    if typ == "tuple[str, ...]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail(key, f"must be a list of strings, got {_show(value)}")
        return tuple(value)
    raise AssertionError(f"unhandled config type {typ}")  # pragma: no cover


def _check(s: dict[str, Any], fail: Fail) -> None:
    feed: FeedConfig = s["feed"]
    if not feed.symbols:
        raise fail("feed.symbols", "must list at least one symbol")
    bad = (symbol_rules.entry_errors("feed.symbols", feed.symbols)
           or symbol_rules.entry_errors("feed.exclude", feed.exclude, exact_ok=False))
    if bad:
        raise fail(*bad)
    try:
        check_url(feed.rest_url, "rest", ("http", "https"))
    except ValueError as exc:
        raise fail("feed.rest_url", str(exc)) from None
    if feed.api not in DEFAULT_URLS:
        raise fail("feed.api", f"must be one of {', '.join(DEFAULT_URLS)}, got {feed.api!r}")
    if feed.transport not in TRANSPORTS:
        raise fail("feed.transport", f"must be one of {', '.join(TRANSPORTS)}, got {feed.transport!r}")
    try:
        check_transport(feed)
    except ValueError as exc:
        raise fail("feed.transport", str(exc)) from None
    if feed.repair not in REPAIRS:
        raise fail("feed.repair", f"must be one of {', '.join(REPAIRS)}, got {feed.repair!r}")
    try:
        check_url(feed.url, feed.api)
    except ValueError as exc:
        raise fail("feed.url", str(exc)) from None
    _check_ranges(s, fail)
    if feed.backoff_max_s < feed.backoff_initial_s:
        raise fail("feed.backoff_max_s", "must be at least feed.backoff_initial_s")
    book: BookConfig = s["book"]
    if book.emit not in ("change", "every"):
        raise fail("book.emit", f"must be \"change\" or \"every\", got {book.emit!r}")
    out: OutputConfig = s["output"]
    for key in ("rotate", "retain"):
        value = getattr(out, key)
        if value or key == "rotate":
            try:
                parse_duration(value)
            except ValueError:
                raise fail(f"output.{key}", f"must be a duration such as \"5s\", \"15m\", \"1h\", "
                           f"\"1d\", up to {MAX_DURATION_S // 86400}d, got {_show(value)}") from None
    if out.compress not in COMPRESSIONS:
        raise fail("output.compress", f"must be one of {', '.join(COMPRESSIONS)}, got {out.compress!r}")
    if out.fsync not in ("rotate", "interval"):
        raise fail("output.fsync", f"must be \"rotate\" or \"interval\", got {out.fsync!r}")
    level = s["log"].level
    if level not in _LEVELS:
        raise fail("log.level", f"must be one of {', '.join(_LEVELS)}, got {level!r}")
    listen = s["metrics"].listen
    if listen:
        try:
            parse_listen(listen)
        except ValueError as exc:
            raise fail("metrics.listen", str(exc)) from None
    health: HealthConfig = s["health"]
    if health.exit_after_s < health.writer_stuck_s:
        raise fail("health.exit_after_s", "must be at least health.writer_stuck_s")
    bad = publish_errors(s["publish"])
    if bad:
        raise fail(*bad)


_NATS_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")  # a stream name: no dots, spaces or wildcards
_NATS_SUBJECT = re.compile(r"(?=.{1,200}\Z)[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


def check_nats_url(url: str) -> None:
    """ValueError unless `url` is a nats:// or tls:// URL with a host, a port from 1 to
    65535 if any, and nothing else (credentials go in publish.creds or publish.token_file:
    the URL is logged and written into segment headers)."""
    check_url(url, "nats", ("nats", "tls"))
    parts = urlsplit(url)
    if parts.path not in ("", "/") or parts.query or "?" in url:
        raise ValueError(f"must be only scheme://host:port, got {_show(url)}")


def publish_errors(pub: PublishConfig) -> tuple[str, str] | None:
    """(key, why) of the first thing wrong in [publish], else None. Files named must exist
    now: a missing one is certainly a config error (exit 78)."""
    for url in pub.urls if pub.url else ():
        try:
            check_nats_url(url)
        except ValueError as exc:
            why = str(exc).replace("must not carry credentials", "must not carry credentials (put them "
                                   "in publish.creds or publish.token_file)")
            return "publish.url", why
    if not _NATS_NAME.fullmatch(pub.stream):
        return "publish.stream", f"must be 1 to 255 letters, digits, _ or -, got {_show(pub.stream)}"
    if not _NATS_SUBJECT.fullmatch(pub.subject):
        return "publish.subject", (f"must be dot-separated tokens of letters, digits, _ or - (no "
                                   f"wildcards), got {_show(pub.subject)}")
    if pub.creds and pub.token_file:
        return "publish.token_file", "give publish.creds or publish.token_file, not both"
    if pub.tls_key and not pub.tls_cert:
        return "publish.tls_key", "needs publish.tls_cert"
    for key in ("creds", "token_file", "tls_ca", "tls_cert", "tls_key"):
        value = getattr(pub, key)
        if value and not Path(value).is_file():
            return f"publish.{key}", f"no such file: {_show(value)}"
    if pub.creds and find_spec("nkeys") is None:
        return "publish.creds", 'needs the nkeys package, which is not installed: pip install nkeys'
    if pub.max_age:
        try:
            parse_duration(pub.max_age)
        except ValueError:
            return "publish.max_age", f"must be a duration such as \"7d\", got {_show(pub.max_age)}"
    return None


def _check_ranges(s: dict[str, Any], fail: Fail) -> None:
    for dotted, (low, low_ok, high) in RANGES.items():
        section, key = dotted.split(".")
        value = getattr(s[section], key)
        if low_ok and not low <= value <= high:
            raise fail(dotted, f"must be between {low:g} and {high:.0f}, got {_show(value)}")
        if not low_ok and not low < value <= high:
            raise fail(dotted, f"must be greater than {low:g} and at most {high:.0f}, got {_show(value)}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


def to_dict(cfg: Config) -> dict[str, Any]:
    """The effective config as JSON-ready data (for segment headers)."""
    return {
        name: {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(getattr(cfg, name)).items()}
        for name in _SECTIONS
    }
