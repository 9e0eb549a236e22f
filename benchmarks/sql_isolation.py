"""Does an analyst's heavy query slow ingestion down? The store's sink rate with and without one.

    python -m benchmarks.sql_isolation [--events 400000] [--phase-s 5]

1. Produces a seeded simulation (event times in the past) to fresh topics: a backlog.
2. Starts the real store role (``oddstream store``, embedded chDB) on it; no worker, so the
   store sinks the raw events only.
3. Alternates phases of ``--phase-s`` seconds while the backlog drains: *quiet* (no query)
   and *heavy* (one client posting a CPU-heavy aggregate to ``/sql`` back to back, each
   within the endpoint's limits). The sink's rate in a phase is the growth of
   ``rows_written`` (``/healthz``) over it.
4. Prints both rates (medians over the phases) and their ratio, the baseline measured in
   the same run. Goal: heavy / quiet >= 0.5 (issue 11).

Uses KAFKA_BOOTSTRAP_SERVERS if set, else starts a local broker on a free port.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from benchmarks.kafka import kafka_for_benchmark
from infra.broker import free_port
from oddstream.kafka.admin import ensure_topics
from oddstream.settings import Settings
from oddstream.simulator.run import run_simulation

HEAVY = "SELECT sum(cityHash64(number) % 7) FROM numbers(300000000)"


def written(url: str) -> int:
    return int(httpx.get(f"{url}/healthz", timeout=10).json()["rows_written"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--phase-s", type=float, default=5.0)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="oddstream-bench-"))
    bootstrap, broker = kafka_for_benchmark(data)
    store = None
    try:
        settings = Settings(
            kafka_bootstrap_servers=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:8]}.", data_dir=data,
            store_port=free_port(),
        )  # fmt: skip
        ensure_topics(settings)
        start = int(time.time() * 1000) - int(args.events / settings.simulator_rate * 1000) - 120_000
        run_simulation(settings, events=args.events, realtime=False, start_ms=start, show_progress=False)
        print(f"backlog: {args.events:,} simulated events")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ODDSTREAM_")}
        env.update(
            ODDSTREAM_KAFKA_BOOTSTRAP_SERVERS=bootstrap, ODDSTREAM_TOPIC_PREFIX=settings.topic_prefix,
            ODDSTREAM_DATA_DIR=str(data), ODDSTREAM_STORE_PORT=str(settings.store_port),
            ODDSTREAM_LOG_LEVEL="warn",
        )  # fmt: skip
        log = (data / "store.log").open("wb")
        store = subprocess.Popen(
            [sys.executable, "-m", "oddstream", "store"], env=env, stdout=log, stderr=log
        )
        url = settings.sql_endpoint
        deadline = time.monotonic() + 120
        while True:
            try:
                if written(url) > 0:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or store.poll() is not None:
                raise SystemExit(f"the store did not start; see {data / 'store.log'}")
            time.sleep(0.2)

        heavy_on = threading.Event()
        queries = {"ok": 0, "cut": 0}

        def analyst() -> None:
            with httpx.Client(timeout=120) as client:
                while True:
                    heavy_on.wait()
                    answer = client.post(f"{url}/sql", content=HEAVY)
                    queries["ok" if answer.status_code == 200 else "cut"] += 1

        threading.Thread(target=analyst, daemon=True).start()
        rates: dict[str, list[float]] = {"quiet": [], "heavy": []}
        phase = "quiet"
        while True:
            (heavy_on.set if phase == "heavy" else heavy_on.clear)()
            before, started = written(url), time.monotonic()
            time.sleep(args.phase_s)
            rows = written(url) - before
            if rows < 1_000 or written(url) >= args.events:
                break  # the backlog is drained: the rest of the phase measured nothing
            rates[phase].append(rows / (time.monotonic() - started))
            print(f"  {phase:<5} {rates[phase][-1]:>10,.0f} rows/s")
            phase = "heavy" if phase == "quiet" else "quiet"
        heavy_on.clear()
        if not rates["quiet"] or not rates["heavy"]:
            raise SystemExit("the backlog drained before both phases were measured: raise --events")
        quiet, heavy = statistics.median(rates["quiet"]), statistics.median(rates["heavy"])
        print(f"heavy query: {HEAVY}  ({queries['ok']} answered, {queries['cut']} cut by a limit)")
        print(f"sink without a query (baseline): {quiet:>10,.0f} rows/s  ({len(rates['quiet'])} phases)")
        print(f"sink while a heavy query runs:   {heavy:>10,.0f} rows/s  ({len(rates['heavy'])} phases)")
        print(f"ratio heavy/quiet:               {heavy / quiet:>10.2f}  (goal >= 0.5)")
    finally:
        if store is not None:
            store.terminate()
            store.wait(30)
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
