"""Hostile configs and start-up conditions: an operator's mistake is refused at start with
exit 78 (EX_CONFIG) naming the key and the file, and no traceback, instead of costing
records later.

`config.load()` runs on real files in tmp_path; what the promise says about the process
(exit status, the open-files limit, the output directory) runs `collector run` as a real
subprocess, against the simulator or an address on 127.0.0.1 nobody listens on.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import json
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from collector import config
from tests.helpers.simulator import MakeSim

SYMBOL_LINE = 'symbols = ["BTCUSD"]\n'


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def refused(path: Path, key: str) -> str:
    """config.load(path) must refuse, naming the file and key first; the message."""
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    assert str(err.value).startswith(f"{path}: {key}: "), str(err.value)
    return str(err.value)


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_collector(path: Path, cwd: Path, preexec: Callable[[], None] | None = None,
                  timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector", "run", "--config", str(path)],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=preexec)


def assert_exit_78(proc: subprocess.CompletedProcess[str], path: Path, key: str) -> str:
    assert proc.returncode == config.EX_CONFIG, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{path}: {key}: " in lines[0], proc.stderr[-2000:]
    return lines[0]


def run_until_started(path: Path, cwd: Path, preexec: Callable[[], None] | None = None,
                      timeout: float = 30) -> tuple[int, str]:
    """Start `collector run`, wait for its "started" log line, SIGTERM it; (status, stderr).
    A process that exits first is returned as is."""
    proc = subprocess.Popen([sys.executable, "-m", "collector", "run", "--config", str(path)],
                            cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=preexec)
    assert proc.stderr is not None
    text = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        while b'"event":"started"' not in text and time.monotonic() < deadline:
            if sel.select(timeout=0.2):
                chunk = os.read(proc.stderr.fileno(), 65536)
                if not chunk:
                    break
                text += chunk
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=30)[1]
    return proc.returncode, (text + rest).decode(errors="replace")


# ---- numbers ---------------------------------------------------------------------------

FLOAT_KEYS = [f"{section}.{f.name}" for section, cls in config._SECTIONS.items()
              for f in dataclasses.fields(cls) if f.type == "float"]
INT_KEYS = [f"{section}.{f.name}" for section, cls in config._SECTIONS.items()
            for f in dataclasses.fields(cls) if f.type == "int"]


def one_key(key: str, value: str) -> str:
    section, name = key.split(".")
    if section == "feed":
        return f"[feed]\n{SYMBOL_LINE}{name} = {value}\n"
    return f"[feed]\n{SYMBOL_LINE}[{section}]\n{name} = {value}\n"


ZERO_MEANS_OFF = {"feed.healthy_after_s", "output.min_free_mb", "output.retain_gb", "audit.interval_s"}


@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_float_keys_refuse_nan_inf_and_absurd_values(tmp_path, key):
    """nan passed every `<= 0` test (backoff_initial_s = nan: no reconnect), inf and 1e300
    overflow timers and int(mb * 2**20), an integer beyond float range raised OverflowError
    with a traceback. Zero or below is refused where it makes no sense; the highest value
    allowed loads."""
    for value in ("nan", "+nan", "inf", "-inf", "1e300", "-1e300", "9" * 400, "-1"):
        message = refused(write(tmp_path, one_key(key, value)), key)
        assert len(message) < 300  # a 400-digit number is not echoed whole
    if key not in ZERO_MEANS_OFF:
        refused(write(tmp_path, one_key(key, "0")), key)
    _, low_ok, high = config.RANGES[key]
    assert low_ok == (key in ZERO_MEANS_OFF)
    refused(write(tmp_path, one_key(key, repr(high * 2))), key)
    partner = {"feed.backoff_initial_s": "backoff_max_s", "health.writer_stuck_s": "exit_after_s"}
    extra = f"{partner[key]} = {high!r}\n" if key in partner else ""
    loaded = config.load(write(tmp_path, one_key(key, repr(high)) + extra))
    section, name = key.split(".")
    assert getattr(getattr(loaded, section), name) == high


def test_int_keys_refuse_values_too_large(tmp_path):
    """connect_burst, queue_size and batch_max took 10**30 (TOML's 64-bit bound is not
    enforced by tomllib)."""
    for key in INT_KEYS:
        for value in ("0", "-5", str(10**30), "9" * 400):
            refused(write(tmp_path, one_key(key, value)), key)
    assert set(FLOAT_KEYS + INT_KEYS) == set(config.RANGES)  # a new number key gets a range


def test_retry_after_max_s(tmp_path):
    cfg = config.load(write(tmp_path, f"[feed]\n{SYMBOL_LINE}"))
    assert cfg.feed.retry_after_max_s == 300.0
    assert config.load(write(tmp_path, one_key("feed.retry_after_max_s", "30"))).feed.retry_after_max_s == 30
    for value in ("0", "-1", "nan", "inf", "1e9", '"300"'):
        refused(write(tmp_path, one_key("feed.retry_after_max_s", value)), "feed.retry_after_max_s")


def test_absurd_durations(tmp_path):
    for key in ("rotate", "retain"):
        for value in ("99999999999999999999d", "36501d", "1h\n"):
            text = f"[feed]\n{SYMBOL_LINE}[output]\n{key} = {json.dumps(value)}\n"
            refused(write(tmp_path, text), f"output.{key}")


def test_nan_backoff_exits_78_without_a_traceback(tmp_path):
    path = write(tmp_path, f'[feed]\n{SYMBOL_LINE}url = "ws://127.0.0.1:{closed_port()}"\n'
                           "backoff_initial_s = nan\n[output]\ndir = \"out\"\n")
    assert_exit_78(run_collector(path, tmp_path), path, "feed.backoff_initial_s")


# ---- URLs and addresses ----------------------------------------------------------------

BAD_URLS = [
    "ws://", "wss://", "ws://:443/", "ws://[::1", "ws://[::1]:99999/", "ws://127.0.0.1:99999/x",
    "ws://host:port/", "ws://example.com:-1/", "ws://exa mple.com/", "ws://example.com/\n",
    "ws://ex\x00ample.com/", "ws://-bad-.example.com/", "ws://a..b/", "ws://999.1.1.1/",
    "ws://1.2.3.4.5/", "ws://[example.com]/", "ws://[::zz]/", "ws://bücher.example/",
    "ws://127.0.0.1:0/", "wss://user:secret@example.com/", "ws://example.com/#frag",
    "ws://example.com/?a=1", "http://example.com/", "ftp://example.com/", "example.com",
    "ws:example.com", "ws://" + "a" * 64 + ".com/",
]


def test_feed_url_that_does_not_parse(tmp_path):
    """Each of these loaded, and then every feed crashed and restarted once a second, a
    traceback each time, the process up and recording nothing."""
    for i, url in enumerate(BAD_URLS):
        refused(write(tmp_path, f"[feed]\n{SYMBOL_LINE}url = {json.dumps(url)}\n", f"c{i}.toml"),
                "feed.url")
    good = ["ws://127.0.0.1:8765/v1/marketdata", "wss://api.gemini.com/v1/marketdata",
            "ws://[::1]:8765/", "ws://localhost/", "WSS://API.Gemini.com./v1", "ws://my_host.lan:1/"]
    for url in good:
        assert config.load(write(tmp_path, f"[feed]\n{SYMBOL_LINE}url = {json.dumps(url)}\n")).feed.url == url
    # the current API keeps a query (connect_url merges snapshot= into it)
    text = f'[feed]\n{SYMBOL_LINE}api = "current"\nurl = "wss://ws.gemini.com/?x=1"\n'
    assert config.load(write(tmp_path, text)).feed.url.endswith("?x=1")


def test_feed_url_that_does_not_parse_exits_78(tmp_path):
    path = write(tmp_path, f'[feed]\n{SYMBOL_LINE}url = "ws://[::1"\n[output]\ndir = "out"\n')
    assert_exit_78(run_collector(path, tmp_path), path, "feed.url")


def test_metrics_listen_that_does_not_parse(tmp_path):
    bad = ["ws://", "127.0.0.1:99999", "[::1", "[::1]", "[::1:9464", "exa mple:9464",
           "1.2.3.4.5:9464", "999.1.1.1:9464", "[::zz]:9464", "[127.0.0.1]:9464", "-x-:9464",
           "a..b:9464", ":9464", "127.0.0.1:9464\n", "127.0.0.1: 9464", "host:port"]
    for i, listen in enumerate(bad):
        refused(write(tmp_path, f"[feed]\n{SYMBOL_LINE}[metrics]\nlisten = {json.dumps(listen)}\n",
                      f"m{i}.toml"), "metrics.listen")
    for listen in ("127.0.0.1:0", "[::1]:9464", "0.0.0.0:9464", "localhost:9464", "[::]:1"):
        text = f"[feed]\n{SYMBOL_LINE}[metrics]\nlisten = {json.dumps(listen)}\n"
        assert config.load(write(tmp_path, text)).metrics.listen == listen


# ---- symbols ---------------------------------------------------------------------------

def test_symbols_with_control_characters_or_bad_directory_names(tmp_path):
    """"BTCUSD\\n" passed `^...$` (the `$` matches before a final newline) and became a
    directory named with a newline."""
    bad = ["BTCUSD\n", "BTCUSD\r\n", "\nBTCUSD", "BTC\nUSD", "BTCUSD\x00", "BTC\tUSD", "..", ".",
           "/", "../ETC", "BTC/USD", ".BTCUSD", "BTCUSD.", "-BTCUSD", "BTCUSD ", "btcusd",
           "ＢＴＣＵＳＤ", "BTCUSD\u2028", ""]
    for i, sym in enumerate(bad):
        text = f"[feed]\nsymbols = [{json.dumps(sym)}]\n"
        refused(write(tmp_path, text, f"s{i}.toml"), "feed.symbols")


# ---- output.dir ------------------------------------------------------------------------

def dir_config(tmp_path: Path, out: str, name: str = "config.toml",
               symbols: tuple[str, ...] = ("BTCUSD",)) -> Path:
    return write(tmp_path, f'[feed]\nsymbols = {json.dumps(list(symbols))}\n'
                           f'url = "ws://127.0.0.1:{closed_port()}"\n'
                           f'[output]\ndir = {json.dumps(out)}\n[log]\nlevel = "info"\n', name)


def test_output_dir_that_is_a_file_or_lies_under_one(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "link-to-file").symlink_to("afile")
    cases = {
        "afile": "is a regular file, not a directory",
        "afile/sub/deeper": "lies under afile, a regular file",
        "link-to-file": "is a symbolic link to a regular file",
        "link-to-file/sub": "lies under link-to-file, a symbolic link to a regular file",
    }
    for i, (out, why) in enumerate(cases.items()):
        path = dir_config(tmp_path, out, f"c{i}.toml")
        line = assert_exit_78(run_collector(path, tmp_path), path, "output.dir")
        assert why in line, line
    assert (tmp_path / "afile").read_text() == "x"


def test_output_dir_symlinks(tmp_path):
    """A dangling link at output.dir is refused (it was a FileExistsError traceback); a
    link to a directory is followed: the operator chose it (say, to another disk)."""
    (tmp_path / "dangling").symlink_to("nowhere")
    path = dir_config(tmp_path, "dangling")
    line = assert_exit_78(run_collector(path, tmp_path), path, "output.dir")
    assert "symbolic link that cannot be followed" in line
    assert not (tmp_path / "nowhere").exists()
    (tmp_path / "disk").mkdir()
    (tmp_path / "data").symlink_to("disk")
    status, log = run_until_started(dir_config(tmp_path, "data"), tmp_path)
    assert status == 0 and '"event":"started"' in log, log[-2000:]
    assert (tmp_path / "disk" / ".collector.lock").exists()


def test_output_dir_that_cannot_be_created(tmp_path):
    (tmp_path / "proc-like").mkdir()
    for i, out in enumerate(["/proc/collector-data", "x" * 300]):
        path = dir_config(tmp_path, out, f"c{i}.toml")
        line = assert_exit_78(run_collector(path, tmp_path), path, "output.dir")
        assert "cannot be created" in line, line


def _drop_dac() -> None:
    """In the child, as root: lose the capabilities that override file permissions, so a
    directory owned by someone else is as unwritable as it is for a service user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def unwritable(folder: Path) -> Callable[[], None] | None:
    """Make `folder` unwritable for a collector started with the returned preexec_fn."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return None
    os.chown(folder, 65534, 65534)
    folder.chmod(0o755)
    probe = subprocess.run([sys.executable, "-c", f"open({str(folder / 'x')!r}, 'w')"],
                           preexec_fn=_drop_dac, capture_output=True)
    if probe.returncode == 0:
        pytest.skip("root here keeps write access without CAP_DAC_OVERRIDE")
    return _drop_dac


def test_output_dir_not_writable(tmp_path):
    """The lock file already there (an earlier run), the directory not writable: the
    collector started and dropped every line ("write failed, dropping lines")."""
    out = tmp_path / "data"
    out.mkdir()
    (out / ".collector.lock").touch(mode=0o666)
    (out / ".collector.lock").chmod(0o666)
    preexec = unwritable(out)
    path = dir_config(tmp_path, "data")
    try:
        line = assert_exit_78(run_collector(path, tmp_path, preexec), path, "output.dir")
    finally:
        out.chmod(0o755)
    assert "cannot be written" in line and "Permission denied" in line, line
    assert sorted(p.name for p in out.iterdir()) == [".collector.lock"]  # no probe left


def test_symbol_folder_not_writable(tmp_path):
    """A symbol's folder left by an earlier run as another user: that symbol's lines were
    dropped while the others recorded."""
    out = tmp_path / "data"
    (out / "ETHUSD").mkdir(parents=True)
    preexec = unwritable(out / "ETHUSD")
    if preexec is not None:  # root: out itself must stay writable without the capabilities
        out.chmod(0o777)
    path = dir_config(tmp_path, "data", symbols=("BTCUSD", "ETHUSD"))
    try:
        line = assert_exit_78(run_collector(path, tmp_path, preexec), path, "output.dir")
    finally:
        (out / "ETHUSD").chmod(0o755)
    assert f"(in {Path('data') / 'ETHUSD'})" in line, line


# ---- file descriptors ------------------------------------------------------------------

SYMBOLS_200 = [f"X{i:03d}USD" for i in range(200)]


def nofile(soft: int, hard: int) -> Callable[[], None]:
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return preexec


def test_too_many_symbols_for_the_hard_limit_exits_78(tmp_path):
    """200 symbols need 664 descriptors; under nofile 64/64 the collector started, and
    lost 842 of 1,229 lines in 8 s (only 39 symbols got a file), exit status 0."""
    path = dir_config(tmp_path, "data", symbols=tuple(SYMBOLS_200))
    proc = run_collector(path, tmp_path, nofile(64, 64))
    line = assert_exit_78(proc, path, "feed.symbols")
    need = config.FD_RESERVE + config.FD_PER_SYMBOL * 200
    assert f"200 symbols need {need} file descriptors, " in line and "hard limit" in line
    assert " 64:" in line, line
    assert not (tmp_path / "data").exists()  # refused before anything was made
    with_raw = config.from_dict({"feed": {"symbols": SYMBOLS_200}, "output": {"raw": True}})
    assert config.fds_needed(with_raw) == need + config.FD_PER_RAW * 200
    # symbols sharing sockets need a socket per symbols_per_socket; a glob counts a whole exchange
    shared = config.from_dict({"feed": {"symbols": SYMBOLS_200, "api": "current"}})
    assert config.fds_needed(shared) == config.FD_RESERVE + (config.FD_PER_SYMBOL - 1) * 200 + 4
    globbed = config.from_dict({"feed": {"symbols": ["BTCUSD", "*"]}})
    assert config.fds_needed(globbed) == config.FD_RESERVE + config.FD_PER_SYMBOL * (1 + config.GLOB_SYMBOLS)


async def test_soft_limit_raised_and_no_line_lost(tmp_path, make_sim: MakeSim):
    """Soft 64, hard 4096: the soft limit is raised; every symbol records, and not one
    "Too many open files" or dropped line."""
    sim = await make_sim(symbols=SYMBOLS_200, depth=5, rate=2.0)
    out = tmp_path / "data"
    path = write(tmp_path, f'[feed]\nsymbols = {json.dumps(SYMBOLS_200)}\nurl = "{sim.ws_url}"\n'
                           "connect_burst = 100\nconnects_per_minute = 6000\n"
                           "max_connects_per_minute = 60000\n"
                           f'[output]\ndir = "{out}"\n[log]\nlevel = "info"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector", "run", "--config", str(path), cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        preexec_fn=nofile(64, 4096))
    assert proc.stderr is not None
    log = bytearray()

    async def drain() -> None:
        assert proc.stderr is not None
        while chunk := await proc.stderr.read(65536):
            log.extend(chunk)

    reader = asyncio.create_task(drain())
    try:
        deadline = time.monotonic() + 45
        while not all(_has_book(out / s / "current.jsonl") for s in SYMBOLS_200):
            assert proc.returncode is None, log.decode(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "not every symbol recorded within 45 s"
            await asyncio.sleep(0.25)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        status = await asyncio.wait_for(proc.wait(), 60)
        await asyncio.wait_for(reader, 10)
    text = log.decode(errors="replace")
    assert status == 0, text[-3000:]
    assert "Too many open files" not in text
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    raised = [e for e in events if e["event"] == "raised the open files limit"]
    need = config.FD_RESERVE + config.FD_PER_SYMBOL * 200
    assert raised == [raised[0]] and raised[0]["old"] == 64 and raised[0]["new"] == min(4096, 2 * need)
    stopped = [e for e in events if e["event"] == "stopped"]
    assert stopped and stopped[0]["dropped"] == 0, stopped


def _has_book(path: Path) -> bool:
    try:
        return b'"type":"book"' in path.read_bytes()
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("url", ["wss://u:s3cret@ex ample.com", "wss://u:s3cret@host:0",
                                 "https://u:s3cret@h", "wss://u:s3cret@h:99999", "wss://s3cret@h/#x"])
def test_a_secret_in_a_url_is_never_repeated_in_the_error(url):
    with pytest.raises(config.ConfigError) as err:
        config.from_dict({"feed": {"symbols": ["BTCUSD"], "url": url}})
    assert "feed.url" in str(err.value) and "s3cret" not in str(err.value)
