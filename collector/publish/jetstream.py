"""The NATS side of publishing (I/O): connecting, the stream, pipelined publishes.

`connect` opens one connection (no reconnection by nats-py: the publisher reconnects
with its own backoff and resends from what was acknowledged). Its failures are either
`ConfigProblem`, certainly the operator's to mend (credentials refused, a creds or TLS
file that cannot be used, a client certificate the server requires and was not given, a
stream whose subjects conflict, JetStream off), or anything else (a server that cannot be
reached or whose certificate is not trusted, a connection lost), worth retrying.

`Pipe` publishes many messages without waiting for each acknowledgement: every message
carries a reply subject under one inbox of the connection, and the acks are counted per
`Batch` as they come (about 60,000 messages/s here, against 4,000 when each publish is
awaited). JetStream stores one connection's messages to one stream in the order sent.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import structlog

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

    from collector.config import PublishConfig

log = structlog.get_logger("publish")

CONNECT_TIMEOUT_S = 5.0
API_TIMEOUT_S = 5.0
MSG_ID = "Nats-Msg-Id"
# Errors a JetStream API or publish answers with that a retry will not mend
# (https://github.com/nats-io/nats-server/blob/main/server/errors.json).
SUBJECTS_OVERLAP = 10065
STREAM_NAME_IN_USE = 10058
MESSAGE_TOO_LARGE = 10054


class ConfigProblem(Exception):
    """A problem only the operator can mend (exit 78 at start, else reported and retried)."""


class AckError(Exception):
    """A publish the stream refused: `code`/`err_code` from its answer."""

    def __init__(self, text: str, code: int | None = None, err_code: int | None = None) -> None:
        super().__init__(text)
        self.code, self.err_code = code, err_code


def tls_context(cfg: PublishConfig) -> ssl.SSLContext | None:
    """The TLS context from publish.tls_ca, tls_cert and tls_key (None: nats-py's own for
    a tls:// URL). ConfigProblem when a file cannot be used."""
    if not (cfg.tls_ca or cfg.tls_cert):
        return None
    try:
        ctx = ssl.create_default_context(cafile=cfg.tls_ca or None)
        if cfg.tls_cert:
            ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigProblem(f"publish.tls_ca, tls_cert or tls_key cannot be used: {exc}") from None
    return ctx


def credentials(cfg: PublishConfig) -> dict[str, Any]:
    """nats-py's connect() keywords for publish.creds or publish.token_file."""
    if cfg.creds:
        return {"user_credentials": cfg.creds}
    if cfg.token_file:
        try:
            token = Path(cfg.token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigProblem(f"publish.token_file {cfg.token_file}: cannot be read: {exc}") from None
        if not token:
            raise ConfigProblem(f"publish.token_file {cfg.token_file}: is empty")
        return {"token": token}
    return {}


def _auth_refused(text: str) -> bool:
    return "authorization violation" in text.lower() or "authentication" in text.lower()


async def connect(cfg: PublishConfig, lost: Callable[[], Awaitable[None]] | None = None,
                  name: str = "gemini-collector") -> Client:
    """One connection to one of publish.url's servers, or an exception saying why not
    (ConfigProblem for refused credentials); never a credential in a message. `lost` is
    called when the connection ends."""
    from nats.aio.client import Client
    from nats.errors import Error as NatsError

    errors: list[BaseException] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc_kw: dict[str, Any] = dict(
        servers=list(cfg.urls), name=name, allow_reconnect=False, max_reconnect_attempts=1,
        reconnect_time_wait=0.2, connect_timeout=2, error_cb=on_error, tls=tls_context(cfg),
        **credentials(cfg))
    if lost is not None:
        nc_kw.update(disconnected_cb=lost, closed_cb=lost)
    nc = Client()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await nc.connect(**nc_kw)
            return nc
    except ConfigProblem:
        raise
    except (NatsError, OSError, TimeoutError, ssl.SSLError, ValueError) as exc:
        why = errors[-1] if errors else exc
        text = str(why) or type(why).__name__
        if _auth_refused(text) or any(_auth_refused(str(e)) for e in errors):
            raise ConfigProblem(f"NATS refused the credentials (publish.creds / publish.token_file): "
                                f"{text}") from None
        if isinstance(why, ssl.SSLCertVerificationError):
            raise ConnectionError(f"the certificate of the NATS server at {', '.join(cfg.urls)} is not "
                                  f"trusted (publish.tls_ca names the CA that signed it): {text}") from None
        # The server's INFO (read before the handshake) says it wants a client certificate:
        # without one the handshake fails as "certificate required" or, as often, a bare
        # "Connection lost", so the INFO is what tells it for certain.
        if nc._server_info.get("tls_verify") and not cfg.tls_cert:
            raise ConfigProblem("the NATS server requires a client certificate: set publish.tls_cert "
                                f"(and publish.tls_key) ({text})") from None
        if isinstance(why, FileNotFoundError | PermissionError | IsADirectoryError):
            raise ConfigProblem(f"publish.creds cannot be read: {text}") from None
        raise ConnectionError(f"cannot connect to NATS at {', '.join(cfg.urls)}: {text}") from None


def covers(filters: Sequence[str], prefix: str) -> bool:
    """Whether one of a stream's subject filters takes every subject under `prefix.`"""
    want = prefix.split(".")
    for filt in filters:
        tokens = filt.split(".")
        for i, token in enumerate(tokens):
            if token == ">":
                return True
            if i >= len(want):
                break
            if token not in ("*", want[i]):
                break
    return False


async def ensure_stream(js: JetStreamContext, cfg: PublishConfig) -> None:
    """The stream, created if missing with subjects "<subject>.>"; ConfigProblem when it
    exists without taking those subjects, or they are another stream's."""
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

    wanted = f"{cfg.subject}.>"
    try:
        info = await js.stream_info(cfg.stream)
    except NotFoundError:
        info = None
    except ServiceUnavailableError:
        raise ConfigProblem("the NATS server has no JetStream (start it with -js / jetstream {})") from None
    if info is not None:
        have = list(info.config.subjects or [])
        if not covers(have, cfg.subject):
            raise ConfigProblem(f"stream {cfg.stream} exists with subjects {have}, which do not take "
                                f"{wanted} (publish.stream, publish.subject)")
        return
    try:
        await js.add_stream(StreamConfig(
            name=cfg.stream, subjects=[wanted], storage=StorageType.FILE,
            max_age=float(cfg.max_age_s) if cfg.max_age_s else None, num_replicas=cfg.replicas))
    except APIError as exc:
        if exc.err_code in (SUBJECTS_OVERLAP, STREAM_NAME_IN_USE):
            raise ConfigProblem(f"cannot create stream {cfg.stream} with subjects {wanted}: "
                                f"{exc.description} (publish.stream, publish.subject)") from None
        raise
    log.info("stream created", stream=cfg.stream, subjects=[wanted])


class Batch:
    """Messages sent together; `done` once each is acknowledged or refused."""

    __slots__ = ("done", "duplicates", "errors", "left", "no", "size")

    def __init__(self, no: int, size: int) -> None:
        self.no = no
        self.size = size
        self.left = size
        self.duplicates = 0  # acknowledged as already stored (the same Nats-Msg-Id)
        self.errors: dict[int, AckError] = {}  # index -> why the stream refused it
        self.done = asyncio.Event()
        if not size:
            self.done.set()


class Pipe:
    """Pipelined publishes to one stream over one connection."""

    def __init__(self, nc: Client, stream: str) -> None:
        self.nc = nc
        self.stream = stream
        self._ok = b'{"stream":' + orjson.dumps(stream) + b',"seq":'
        self.inbox = nc.new_inbox()
        self.batches: dict[int, Batch] = {}
        self._next = 0
        self.failed: BaseException | None = None

    async def start(self) -> None:
        await self.nc.subscribe(self.inbox + ".*.*", cb=self._ack, pending_msgs_limit=1 << 20,
                                pending_bytes_limit=256 << 20)

    def fail(self, exc: BaseException) -> None:
        """The connection is gone: every batch waiting is done (check `failed`)."""
        if self.failed is None:
            self.failed = exc
        for batch in self.batches.values():
            batch.done.set()

    async def send(self, subject: str, messages: Sequence[tuple[str, bytes]]) -> Batch:
        """Send (msg id, payload) messages; the batch's `done` is set when every one is
        answered, or the connection failed (then `failed` says why)."""
        batch = Batch(self._next, len(messages))
        self._next += 1
        if self.failed is not None:
            batch.done.set()
            return batch
        self.batches[batch.no] = batch
        reply = f"{self.inbox}.{batch.no}."
        publish = self.nc.publish
        try:
            for i, (mid, data) in enumerate(messages):
                await publish(subject, data, reply=f"{reply}{i}", headers={MSG_ID: mid})
        except Exception as exc:
            self.fail(exc)
        return batch

    def forget(self, batch: Batch) -> None:
        self.batches.pop(batch.no, None)

    async def _ack(self, msg: Msg) -> None:
        try:
            _, n_text, i_text = msg.subject.rsplit(".", 2)
            batch = self.batches.get(int(n_text))
            i = int(i_text)
        except ValueError:
            return
        if batch is None or i in batch.errors:
            return
        data = msg.data
        if data.startswith(self._ok):
            if b'"duplicate":true' in data:
                batch.duplicates += 1
            batch.left -= 1
        else:
            batch.errors[i] = self._why(msg)
            batch.left -= 1
        if batch.left <= 0:
            batch.done.set()

    def _why(self, msg: Msg) -> AckError:
        if not msg.data and msg.headers and msg.headers.get("Status") == "503":
            return AckError(f"no stream takes the subject {msg.subject} (stream {self.stream} deleted?)",
                            code=503)
        try:
            rec = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            return AckError(f"not an acknowledgement: {msg.data[:80]!r}")
        err = rec.get("error") if isinstance(rec, dict) else None
        if isinstance(err, dict):
            return AckError(str(err.get("description")), err.get("code"), err.get("err_code"))
        if isinstance(rec, dict) and rec.get("stream") != self.stream:
            return AckError(f"stored by stream {rec.get('stream')!r}, not {self.stream}: another stream "
                            "takes these subjects (publish.subject)", code=409)
        return AckError(f"unexpected acknowledgement: {msg.data[:80]!r}")
