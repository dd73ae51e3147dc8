"""A real nats-server with JetStream per test (tests/helpers/nats_server.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.nats_server import NatsServer


@pytest.fixture
def nats_server(tmp_path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.kill()
