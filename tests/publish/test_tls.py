"""TLS to NATS (tls:// URLs, publish.tls_ca, tls_cert, tls_key) against a real nats-server
serving TLS on 127.0.0.1, with a throwaway CA and certificates made here by the openssl
CLI; and credentials (a token) that never reach a log line. Creds files (.creds, nkeys)
need an operator setup and the nkeys package: not exercised here."""

from __future__ import annotations

import asyncio
import shutil
import signal
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from collector import config
from collector.publish.supervisor import PublisherProcess
from collector.sim import SimExchange
from tests.helpers.e2e import running, wait_until
from tests.helpers.nats_server import NatsServer
from tests.helpers.publish import (
    by_subject,
    config_text,
    file_lines,
    publish_config,
    run_cli,
    stream_messages,
    wait_for,
)

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="the openssl CLI makes the test certificates")

SECRET = "tls-s3cret-token-9731"
DOWN = "ws://127.0.0.1:9/v1/marketdata"  # no exchange: for runs whose records do not matter


@dataclass(frozen=True)
class Pki:
    ca: Path  # signed the server's and the client's certificates
    other_ca: Path  # signed nothing here
    server: tuple[Path, Path]  # (certificate, key), for IP 127.0.0.1
    client: tuple[Path, Path]

    def context(self, client: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if client:
            ctx.load_cert_chain(*self.client)
        return ctx


def _openssl(*args: str | Path) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *map(str, args)], check=True, capture_output=True, timeout=10)


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", cert, "-days", "1", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def _leaf(folder: Path, name: str, ca: tuple[Path, Path], usage: str) -> tuple[Path, Path]:
    cert, key, csr, ext = (folder / f"{name}{x}" for x in (".pem", ".key", ".csr", ".ext"))
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
    ext.write_text(f"subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-out", cert,
             "-days", "1", "-extfile", ext)
    return cert, key


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    folder = tmp_path / "pki"
    folder.mkdir()
    ca = _ca(folder, "test-ca")
    return Pki(ca[0], _ca(folder, "other-ca")[0], _leaf(folder, "server", ca, "serverAuth"),
               _leaf(folder, "client", ca, "clientAuth"))


def tls_server(tmp_path: Path, pki: Pki, verify: bool = False, args: tuple[str, ...] = ()) -> NatsServer:
    """nats-server requiring TLS (and a client certificate signed by the CA, `verify`)."""
    server = NatsServer(tmp_path / "nats", ["--tlsverify" if verify else "--tls",
                                            "--tlscert", str(pki.server[0]), "--tlskey", str(pki.server[1]),
                                            "--tlscacert", str(pki.ca), *args])
    server.start()
    return server


def tls_url(server: NatsServer) -> str:
    return f"tls://127.0.0.1:{server.port}"


async def run_to_end(path: Path, timeout: float = 10) -> tuple[int, bytes]:
    """`collector run --config PATH` to its end: (exit status, stderr); killed if it outlives
    `timeout` (its publisher child dies with it)."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "collector", "run", "--config",
                                                str(path), stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, err


async def published(url: str, n: int, ctx: ssl.SSLContext, **kw: str) -> bool:
    try:
        return len(await stream_messages(url, tls=ctx, **kw)) >= n
    except Exception:
        return False


async def test_published_over_tls_and_read_back_and_the_token_never_logged(tmp_path, pki):
    server = tls_server(tmp_path, pki, args=("--auth", SECRET))
    url, out, cfg, token = tls_url(server), tmp_path / "data", tmp_path / "config.toml", tmp_path / "token"
    token.write_text(SECRET + "\n")
    try:
        async with SimExchange(["BTCUSD"], seed=41, rate=300.0, depth=20) as sim:
            cfg.write_text(config_text(sim.ws_url, out, ["BTCUSD"],
                                       {"url": url, "tls_ca": str(pki.ca), "token_file": str(token)})
                           + '[log]\nlevel = "debug"\n')
            proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "collector", "run", "--config",
                                                        str(cfg), stderr=asyncio.subprocess.PIPE)
            try:
                await wait_for(lambda: published(url, 200, pki.context(), token=SECRET),
                               what="records in the stream over TLS")
            finally:
                proc.send_signal(signal.SIGTERM)
                _, err = await asyncio.wait_for(proc.communicate(), 15)
            assert proc.returncode == 0, err[-2000:]
        assert b'"publishing to NATS"' in err
        assert SECRET.encode() not in err
        messages = await stream_messages(url, tls=pki.context(), token=SECRET)
        assert by_subject(messages)["gemini.BTCUSD"] == file_lines(out, "BTCUSD")
        # read back with `collector cat tls://TOKEN@HOST:PORT/STREAM?tls_ca=FILE`: the files' lines
        source = f"tls://{SECRET}@127.0.0.1:{server.port}/GEMINI?tls_ca={pki.ca}"
        code, from_stream, err = await run_cli("cat", source, "--symbol", "BTCUSD")
        assert code == 0, err
        assert SECRET.encode() not in err
        code, from_files, _ = await run_cli("cat", str(out), "--symbol", "BTCUSD")
        assert code == 0 and from_stream == from_files and from_stream.count(b"\n") >= 200
        # refusals name the problem, never the token
        for bad, says in ((f"tls://wrong-0xf00d@127.0.0.1:{server.port}/GEMINI?tls_ca={pki.ca}",
                           b"authorization violation"),
                          (f"tls://{SECRET}@127.0.0.1:{server.port}/GEMINI?tls_ca={pki.other_ca}",
                           b"certificate verify failed")):
            code, _, err = await run_cli("cat", bad)
            assert code != 0 and says in err.lower(), err
            assert SECRET.encode() not in err and b"0xf00d" not in err
    finally:
        server.kill()


async def test_a_server_certificate_not_trusted_is_reported_and_retried(tmp_path, pki):
    """publish.tls_ca is not the CA that signed the server's certificate: not connected,
    said plainly, retried (recording goes on, no exit); the right CA then publishes."""
    server = tls_server(tmp_path, pki)
    try:
        cfg = publish_config(DOWN, tmp_path / "data", ["BTCUSD"],
                             {"url": tls_url(server), "tls_ca": str(pki.other_ca)})
        async with running(cfg) as app:
            pub = app.publisher
            assert isinstance(pub, PublisherProcess)
            await wait_until(lambda: pub.last_error is not None, timeout=10, what="the publisher's error")
            why = pub.last_error or ""
            assert "not trusted (publish.tls_ca" in why and "certificate verify failed" in why, why
            assert not pub.connected and app.exit_status == 0
            first = pub.proc.pid if pub.proc is not None else None
            # retried, not given up: the same process goes on reporting errors
            errors = pub.status.errors if pub.status is not None else 0
            await wait_until(lambda: pub.status is not None and pub.status.errors > errors, timeout=10,
                             what="another attempt")
            assert pub.proc is not None and pub.proc.pid == first
    finally:
        server.kill()


async def test_mutual_tls_no_client_certificate_exits_78_the_right_one_publishes(tmp_path, pki):
    server = tls_server(tmp_path, pki, verify=True)
    url, out, path = tls_url(server), tmp_path / "data", tmp_path / "config.toml"
    try:
        path.write_text(config_text(DOWN, out, ["BTCUSD"], {"url": url, "tls_ca": str(pki.ca)}))
        code, err = await run_to_end(path)
        assert code == config.EX_CONFIG, err[-2000:]
        assert b"requires a client certificate: set publish.tls_cert" in err
        async with SimExchange(["BTCUSD"], seed=42, rate=300.0, depth=20) as sim:
            cfg = publish_config(sim.ws_url, out, ["BTCUSD"], {
                "url": url, "tls_ca": str(pki.ca), "tls_cert": str(pki.client[0]),
                "tls_key": str(pki.client[1])})
            async with running(cfg) as app:
                pub = app.publisher
                assert isinstance(pub, PublisherProcess)
                await wait_until(lambda: pub.connected
                                 and pub.stats().get("BTCUSD", {}).get("published", 0) > 200,
                                 timeout=20, what="records published with the client certificate")
        messages = await stream_messages(url, tls=pki.context(client=True))
        assert by_subject(messages)["gemini.BTCUSD"] == file_lines(out, "BTCUSD")
    finally:
        server.kill()


async def test_a_token_in_publish_url_is_refused_without_being_shown(tmp_path, pki):
    path = tmp_path / "config.toml"
    path.write_text(config_text(DOWN, tmp_path / "data", ["BTCUSD"],
                                {"url": f"tls://{SECRET}@127.0.0.1:4222", "tls_ca": str(pki.ca)}))
    code, err = await run_to_end(path)
    assert code == config.EX_CONFIG
    assert b"publish.url" in err and b"must not carry credentials" in err
    assert SECRET.encode() not in err
