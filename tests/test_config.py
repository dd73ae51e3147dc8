import subprocess
import sys
from pathlib import Path

import pytest

from collector import config


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def test_only_symbols_required_and_defaults(tmp_path):
    cfg = config.load(write(tmp_path, '[feed]\nsymbols = ["BTCUSD"]\n'))
    assert cfg.feed.symbols == ("BTCUSD",)
    assert cfg.feed.url == "wss://api.gemini.com/v1/marketdata"
    assert cfg.feed.trades is True
    assert cfg.feed.stale_after_s == 15 and cfg.feed.snapshot_timeout_s == 10
    assert (cfg.feed.backoff_initial_s, cfg.feed.backoff_max_s) == (0.5, 30)
    assert (cfg.feed.connect_burst, cfg.feed.connects_per_minute) == (5, 1)
    assert cfg.feed.max_connects_per_minute == 50  # Gemini: 300 connection attempts per 5 minutes
    assert (cfg.book.depth, cfg.book.emit) == (10, "change")
    assert cfg.output.dir == Path("data")
    assert cfg.log.level == "info"


def test_repo_config_is_valid():
    cfg = config.load(Path(__file__).resolve().parents[1] / "config.toml")
    assert cfg.feed.symbols


def test_int_accepted_for_float_key(tmp_path):
    cfg = config.load(write(tmp_path, '[feed]\nsymbols = ["BTCUSD"]\nstale_after_s = 3\n'))
    assert cfg.feed.stale_after_s == 3.0 and isinstance(cfg.feed.stale_after_s, float)


@pytest.mark.parametrize(
    "text, key",
    [
        ("[feed]\n", "feed.symbols"),
        ("", "feed.symbols"),
        ('[feed]\nsymbols = []\n', "feed.symbols"),
        ('[feed]\nsymbols = "BTCUSD"\n', "feed.symbols"),
        ('[feed]\nsymbols = ["btc usd"]\n', "feed.symbols"),
        ('[feed]\nsymbols = ["BTCUSD", "BTCUSD"]\n', "feed.symbols"),
        ('[feed]\nsymbols = ["BTCUSD"]\nsymbol = 1\n', "feed.symbol"),
        ('[feed]\nsymbols = ["BTCUSD"]\ntrades = "yes"\n', "feed.trades"),
        ('[feed]\nsymbols = ["BTCUSD"]\nstale_after_s = 0\n', "feed.stale_after_s"),
        ('[feed]\nsymbols = ["BTCUSD"]\nstale_after_s = true\n', "feed.stale_after_s"),
        ('[feed]\nsymbols = ["BTCUSD"]\nurl = "http://x"\n', "feed.url"),
        ('[feed]\nsymbols = ["BTCUSD"]\nconnect_burst = 0\n', "feed.connect_burst"),
        ('[feed]\nsymbols = ["BTCUSD"]\ntransport = "aiohttp"\n', "feed.transport"),
        ('[feed]\nsymbols = ["BTCUSD"]\nrepair = "pray"\n', "feed.repair"),
        ('[feed]\nsymbols = ["BTCUSD"]\nconnect_burst = 1.5\n', "feed.connect_burst"),
        ('[feed]\nsymbols = ["BTCUSD"]\nbackoff_initial_s = 5\nbackoff_max_s = 1\n', "feed.backoff_max_s"),
        ('[feed]\nsymbols = ["BTCUSD"]\n[book]\ndepth = 0\n', "book.depth"),
        ('[feed]\nsymbols = ["BTCUSD"]\n[book]\nemit = "sometimes"\n', "book.emit"),
        ('[feed]\nsymbols = ["BTCUSD"]\n[output]\ndir = 3\n', "output.dir"),
        ('[feed]\nsymbols = ["BTCUSD"]\n[output]\nqueue_size = 0\n', "output.queue_size"),
        ('[feed]\nsymbols = ["BTCUSD"]\n[log]\nlevel = "loud"\n', "log.level"),
        ('[feed]\nsymbols = ["BTCUSD"]\n[metrix]\n', "metrix"),
        ('feed = 3\n', "feed"),
    ],
)
def test_errors_name_key_and_file(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    assert str(err.value).startswith(f"{path}: {key}: ")


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(config.ConfigError, match="not found"):
        config.load(tmp_path / "missing.toml")
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.load(write(tmp_path, "[feed\n"))


def test_cli_exits_78_naming_the_key(tmp_path):
    path = write(tmp_path, '[feed]\nsymbols = ["BTCUSD"]\n[book]\ndepth = "ten"\n')
    proc = subprocess.run([sys.executable, "-m", "collector", "run", "--config", str(path)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 78
    assert "book.depth" in proc.stderr and str(path) in proc.stderr


def test_cli_default_config_is_cwd(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "collector", "run"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 78
    assert "config.toml" in proc.stderr and "not found" in proc.stderr


# ---- symbol discovery (issue 15): globs, exclude, rest_url, discover_s ----

def test_discovery_keys_defaults_and_globs(tmp_path):
    cfg = config.load(write(tmp_path, '[feed]\nsymbols = ["BTCUSD"]\n'))
    assert cfg.feed.exclude == () and cfg.feed.discover_s == 300
    assert cfg.feed.rest_url == "https://api.gemini.com"
    cfg = config.load(write(tmp_path, '[feed]\nsymbols = ["*USD", "ETH?TC", "[AB]*", "SOLUSD"]\n'
                                      'exclude = ["*PERP", "[!B]*GUSD"]\nrest_url = "http://127.0.0.1:8080"\n'
                                      'discover_s = 60\n'))
    assert cfg.feed.symbols == ("*USD", "ETH?TC", "[AB]*", "SOLUSD")
    assert cfg.feed.exclude == ("*PERP", "[!B]*GUSD")
    assert (cfg.feed.rest_url, cfg.feed.discover_s) == ("http://127.0.0.1:8080", 60.0)


@pytest.mark.parametrize(
    "extra, key",
    [
        ('symbols = ["*usd"]', "feed.symbols"),
        ('symbols = ["*"]\nexclude = ["*PERP", "*PERP"]', "feed.exclude"),
        ('symbols = ["BTC*", "BTC*"]', "feed.symbols"),
        ('symbols = ["BTC/*"]', "feed.symbols"),
        ('symbols = ["BT"]', "feed.symbols"),  # an exact symbol keeps today's rule
        ('symbols = ["*"]\nexclude = ["perp"]', "feed.exclude"),
        ('symbols = ["*"]\nexclude = "X"', "feed.exclude"),
        ('symbols = ["*"]\nrest_url = "wss://api.gemini.com"', "feed.rest_url"),
        ('symbols = ["*"]\nrest_url = "https://"', "feed.rest_url"),
        ('symbols = ["*"]\nrest_url = "https://a b"', "feed.rest_url"),
        ('symbols = ["*"]\ndiscover_s = 0', "feed.discover_s"),
        ('symbols = ["*"]\ndiscover_s = 604801', "feed.discover_s"),
        ('symbols = ["*"]\ndiscover_s = nan', "feed.discover_s"),
    ],
)
def test_discovery_errors_name_key_and_file(tmp_path, extra, key):
    path = write(tmp_path, f"[feed]\n{extra}\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    assert str(err.value).startswith(f"{path}: {key}: ")
    assert "unknown key" not in str(err.value)


def test_discovery_keys_apply_on_reload():
    from collector.runtime.app import restart_keys
    old = config.from_dict({"feed": {"symbols": ["BTCUSD"]}})
    new = config.from_dict({"feed": {"symbols": ["*"], "exclude": ["*PERP"], "discover_s": 5,
                                     "rest_url": "http://127.0.0.1:1"}})
    assert restart_keys(old, new) == []
