"""[publish] keys: defaults, and every bad value named by its key (config.py)."""

from __future__ import annotations

import pytest

from collector import config


def load(publish):
    return config.from_dict({"feed": {"symbols": ["BTCUSD"]}, "publish": publish})


def test_defaults_are_off():
    pub = load({}).publish
    assert not pub.enabled and pub.stream == "GEMINI" and pub.subject == "gemini" and not pub.raw
    assert pub.spawn and pub.nice == 10


def test_one_url_or_a_cluster():
    assert load({"url": "nats://127.0.0.1:4222"}).publish.urls == ("nats://127.0.0.1:4222",)
    assert load({"url": ["nats://a:4222", "tls://b:4222"]}).publish.urls == ("nats://a:4222", "tls://b:4222")


@pytest.mark.parametrize(("publish", "key", "says"), [
    ({"url": "nats://user:pw@h:4222"}, "publish.url", "publish.creds or publish.token_file"),
    ({"url": "https://h"}, "publish.url", "nats:// or tls://"),
    ({"url": "nats://h:4222/GEMINI"}, "publish.url", "only scheme://host:port"),
    ({"url": ["nats://h:4222", 5]}, "publish.url", "list of strings"),
    ({"url": []}, "publish.url", "non-empty list"),
    ({"url": "nats://h:99999"}, "publish.url", ""),
    ({"stream": "A.B"}, "publish.stream", "letters, digits"),
    ({"subject": "gemini.>"}, "publish.subject", "no wildcards"),
    ({"subject": ""}, "publish.subject", "tokens"),
    ({"creds": "/nonexistent/x.creds"}, "publish.creds", "no such file"),
    ({"token_file": "/nonexistent/token"}, "publish.token_file", "no such file"),
    ({"tls_key": "/etc/hostname"}, "publish.tls_key", "needs publish.tls_cert"),
    ({"max_age": "forever"}, "publish.max_age", "duration"),
    ({"replicas": 0}, "publish.replicas", "between 1 and 5"),
    ({"stuck_s": 0}, "publish.stuck_s", "greater than 0"),
    ({"stop_timeout_s": float("nan")}, "publish.stop_timeout_s", "finite"),
    ({"raw": "yes"}, "publish.raw", "true or false"),
    ({"spawn": 1}, "publish.spawn", "true or false"),
    ({"nice": 20}, "publish.nice", "between 1 and 19"),
    ({"nice": 0}, "publish.nice", "between 1 and 19"),
    ({"password": "x"}, "publish.password", "unknown key"),
])
def test_bad_values_name_their_key(publish, key, says):
    with pytest.raises(config.ConfigError, match=f"{key}: .*{says}"):
        load(publish)


def test_both_credentials_are_refused(tmp_path):
    (tmp_path / "t").write_text("x")
    with pytest.raises(config.ConfigError, match=r"publish\.token_file: give publish\.creds or"):
        load({"creds": str(tmp_path / "t"), "token_file": str(tmp_path / "t")})
