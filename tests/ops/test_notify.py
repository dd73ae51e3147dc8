"""collector.ops.notify: systemd's notify protocol through real datagram sockets; the last
test runs the real `collector run` process, which needs the Monitor wired into
collector/runtime/app.py and skips until it is.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid

import pytest

import collector.runtime.app
from collector.ops.notify import Notifier, socket_address, watchdog_interval
from tests.helpers.notify import NotifySocket, index_of

INTEGRATED = hasattr(collector.runtime.app, "Monitor")


# ---- the protocol --------------------------------------------------------------------------

def test_path_socket_round_trip(tmp_path):
    path = str(tmp_path / "notify")
    listener = NotifySocket(path)
    listener.sock.setblocking(True)
    listener.sock.settimeout(5)
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert n.enabled
    started = time.perf_counter()
    assert n.send("READY=1", "STATUS=2/2 feeds live")
    assert listener.sock.recv(4096) == b"READY=1\nSTATUS=2/2 feeds live"
    took = time.perf_counter() - started
    print(f"notify round trip (send + recv, path socket): {took * 1e6:.0f} us")
    n.close()
    listener.close()


def test_abstract_socket_round_trip():
    name = f"collector-test-{uuid.uuid4().hex}"
    listener = NotifySocket("\0" + name)
    listener.sock.settimeout(5)
    listener.sock.setblocking(True)
    n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
    assert n.address == "\0" + name
    assert n.send("WATCHDOG=1")
    assert listener.sock.recv(4096) == b"WATCHDOG=1"
    n.close()
    listener.close()


def test_without_notify_socket_every_send_is_a_noop():
    n = Notifier.from_env({})
    assert not n.enabled and not n.send("READY=1") and n.sent == 0


def test_unusable_socket_is_reported_not_raised(tmp_path):
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert not n.send("READY=1") and not n.send("WATCHDOG=1")
    assert Notifier.from_env({"NOTIFY_SOCKET": "relative/path"}).address is None
    assert socket_address("vsock:2:1234") is None and socket_address("@") is None


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec(env, expected):
    assert watchdog_interval(env, pid=4242) == expected


# ---- the real process ------------------------------------------------------------------------

@pytest.mark.skipif(not INTEGRATED, reason="needs app integration (Monitor in collector/runtime/app.py)")
async def test_collector_run_speaks_the_notify_protocol(tmp_path):
    from collector.sim import SimExchange
    from tests.helpers.app import write_config

    listener = NotifySocket(str(tmp_path / "notify"))
    async with SimExchange(["BTCUSD", "ETHUSD"], seed=8, rate=100.0, heartbeat_s=0.05) as sim:
        cfg = tmp_path / "config.toml"
        write_config(cfg, sim.ws_url, tmp_path / "data", ["BTCUSD", "ETHUSD"])
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
        with open(tmp_path / "stderr.log", "wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "collector", "run", "--config", str(cfg), env=env, stderr=err)
        try:
            await listener.wait_for(lambda m: any("READY=1" in x.split("\n") for x in m), what="READY")
            ready = index_of(listener.messages, "READY=1")
            await listener.wait_for(lambda m: any("STATUS=2/2 feeds live" in x for x in m[ready:]),
                                    what="both feeds live in STATUS")
            await listener.wait_for(lambda m: listener.count("WATCHDOG=1", after=ready) >= 3,
                                    what="WATCHDOG=1 x3")
            assert listener.count("WATCHDOG=1", after=0) == listener.count("WATCHDOG=1", after=ready)
            proc.send_signal(signal.SIGTERM)
            await listener.wait_for(lambda m: any("STOPPING=1" in x.split("\n") for x in m),
                                    what="STOPPING")
            assert await asyncio.wait_for(proc.wait(), 10) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            listener.close()
    assert (tmp_path / "stderr.log").read_text().count('"ready"') == 1
