"""How long `collector run` takes from SIGTERM to exit under load.

    .venv/bin/python -m bench.stop_time [--symbols 20] [--rate 100] [--trials 3]

Starts the simulator in this process, `collector run` as a child against it, sends
SIGTERM after a few seconds of recording and prints the time to exit and the status.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path

from collector.sim import SimExchange


async def main(symbols: int, rate: float, trials: int, seconds: float) -> None:
    names = [f"SYM{i:02d}USD" for i in range(symbols)]
    async with SimExchange(names, seed=1, rate=rate, heartbeat_s=1.0, record_truth=False) as sim:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "config.toml"
            cfg.write_text(f'[feed]\nurl = "{sim.ws_url}"\nsymbols = {names!r}\n'.replace("'", '"')
                           + f'[output]\ndir = "{tmp}/data"\n[log]\nlevel = "warning"\n')
            for _ in range(trials):
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "collector", "run", "--config", str(cfg))
                await asyncio.sleep(seconds)
                sent = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                status = await proc.wait()
                print(f"{symbols} symbols x {rate:g} updates/s: SIGTERM -> exit {status} "
                      f"in {time.monotonic() - sent:.3f} s")


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.stop_time")
    p.add_argument("--symbols", type=int, default=20)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    a = p.parse_args()
    asyncio.run(main(a.symbols, a.rate, a.trials, a.seconds))
