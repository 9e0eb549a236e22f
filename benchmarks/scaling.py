"""Scaling out: one and two worker processes in one group on the same backlog, and how long
a rebalance pauses a worker.

    make bench-scaling      (python -m benchmarks.scaling [--events 400000])

1. The same seeded simulation is produced to two fresh topic sets (6 partitions each).
2. One worker drains the first set; two workers (one consumer group, started together)
   drain the second. Each rate is the least-squares slope of the group's committed offsets
   (sampled every 0.5 s) from the moment every worker holds its partitions to the moment
   95 % of the backlog is committed, so start-up and the group's first join are not counted.
   The CPU seconds of the workers and of the broker (every Kafka JVM on the machine) over
   the same interval are reported: on a 2-core machine the broker's share is what the
   workers cannot have.
3. Rebalance pauses: one worker drains a third backlog while a second joins and leaves
   (SIGTERM) several times; each pause is the time from the staying worker's revocation
   ("Revoking previously assigned partitions") to its last partition taken back (restored
   from its snapshot or started), from its log.

Prints the speed-up next to the ideal for this machine (min(2, cores)), and the pauses'
p50 and max. Goal (issue 15): >= 1.6x with two workers on two cores. Not a test.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

from benchmarks.kafka import kafka_for_benchmark
from benchmarks.worker import committed, end_offsets
from oddstream.kafka.admin import ensure_topics
from oddstream.settings import Settings
from oddstream.simulator.run import run_simulation
from schemas.topics import Topics

STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the processes so far (from /proc)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def kafka_pids() -> list[int]:
    """Every Kafka JVM on this machine (the benchmark's broker, or the one it was pointed at)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"java" in command and b"kafka" in command.lower():
                pids.append(int(entry.name))
    return pids


class Workers:
    """Worker processes of one group, their logs under ``work``."""

    def __init__(self, settings: Settings, work: Path) -> None:
        self.settings, self.work = settings, work
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ODDSTREAM_")}
        env.update(ODDSTREAM_KAFKA_BOOTSTRAP_SERVERS=self.settings.bootstrap,
                   ODDSTREAM_TOPIC_PREFIX=self.settings.topic_prefix, ODDSTREAM_DATA_DIR=str(self.work),
                   ODDSTREAM_WORKER_ID=self.settings.worker_id, ODDSTREAM_LOG_LEVEL="info",
                   ODDSTREAM_DEVELOPMENT="true", ODDSTREAM_WORKER_METRICS_PORT="0")  # fmt: skip
        return env

    def start(self, name: str) -> None:
        log = (self.work / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "oddstream", "worker"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def log(self, name: str) -> str:
        return (self.work / f"{name}.log").read_text(errors="replace")

    def holding(self, name: str) -> bool:
        """The worker has taken partitions since its last assignment."""
        text = self.log(name)
        at = text.rfind("Executing _on_partitions_assigned")
        return at >= 0 and ("restored snapshot" in text[at:] or "no snapshot" in text[at:])

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        process.terminate()
        process.wait(60)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)


def produce(settings: Settings, events: int, start_ms: int) -> int:
    ensure_topics(settings)
    run_simulation(settings, events=events, realtime=False, start_ms=start_ms, show_progress=False)
    topics = Topics(settings.topic_prefix)
    return end_offsets(settings.bootstrap, [topics.odds, topics.bets, topics.name("system")])


def drain(settings: Settings, work: Path, count: int, total: int) -> tuple[float, float, float]:
    """(events/s, workers' CPU s, broker CPU s) of ``count`` workers draining the backlog."""
    topics = Topics(settings.topic_prefix)
    sources = [topics.odds, topics.bets, topics.name("system")]
    workers = Workers(settings, work)
    names = [f"worker-{i}" for i in range(1, count + 1)]
    try:
        for name in names:
            workers.start(name)
        while not all(workers.holding(n) for n in names) or (
            count > 1 and _still_rebalancing(workers, names)
        ):
            if any(p.poll() is not None for p in workers.processes.values()):
                raise SystemExit(f"a worker exited: see {work}")
            time.sleep(0.2)
        pids = [p.pid for p in workers.processes.values()]
        t0 = time.monotonic()
        cpu0, broker0 = cpu_seconds(pids), cpu_seconds(kafka_pids())
        samples = [(0.0, committed(settings.bootstrap, settings.worker_id, sources))]
        while samples[-1][1] < 0.95 * total:
            if any(p.poll() is not None for p in workers.processes.values()):
                raise SystemExit(f"a worker exited while draining: see {work}")
            time.sleep(0.5)
            samples.append(
                (time.monotonic() - t0, committed(settings.bootstrap, settings.worker_id, sources))
            )
        elapsed = time.monotonic() - t0
        cpu, broker = cpu_seconds(pids) - cpu0, cpu_seconds(kafka_pids()) - broker0
        return slope(samples), cpu / elapsed, broker / elapsed
    finally:
        workers.stop_all()


def slope(samples: list[tuple[float, int]]) -> float:
    """Least-squares events/s through the committed-offset samples (commits come in steps of
    about a second; a fit over every sample is steadier than two end points)."""
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_c = sum(c for _, c in samples) / n
    num = sum((t - mean_t) * (c - mean_c) for t, c in samples)
    den = sum((t - mean_t) ** 2 for t, _ in samples)
    return num / den if den else 0.0


def _still_rebalancing(workers: Workers, names: list[str]) -> bool:
    """A worker that took partitions before the others joined gives some back: wait for the
    generation every worker is in."""
    generations = []
    for name in names:
        found = re.findall(r"generation id (\d+)", workers.log(name))
        generations.append(found[-1] if found else None)
    return len(set(generations)) != 1


def pauses(settings: Settings, work: Path, joins: int) -> list[float]:
    """Seconds the staying worker stood still at each rebalance (revocation -> partitions back)."""
    workers = Workers(settings, work)
    try:
        workers.start("stays")
        while not workers.holding("stays"):
            time.sleep(0.2)
        for i in range(joins):
            workers.start(f"comes-{i}")
            while not workers.holding(f"comes-{i}"):
                time.sleep(0.2)
            time.sleep(2)
            workers.stop(f"comes-{i}")
            time.sleep(4)
    finally:
        workers.stop_all()
    lines = workers.log("stays").splitlines()
    out, revoked = [], None
    for n, line in enumerate(lines):
        stamp = STAMP.match(line)
        if stamp and "Revoking previously assigned partitions" in line and "set()" not in line:
            revoked = _when(stamp.group(1))
        elif stamp and "Executing _on_partitions_assigned" in line and revoked is not None:
            back = _when(stamp.group(1))
            for later in lines[n + 1 :]:
                if "Revoking previously assigned partitions" in later:
                    break
                taken = STAMP.match(later)
                if taken and ("restored snapshot" in later or "no snapshot" in later):
                    back = _when(taken.group(1))
            out.append(back - revoked)
            revoked = None
    return out


def fresh(bootstrap: str, data_dir: Path) -> Settings:
    """Settings of one run: its own topics and consumer group."""
    tag = uuid.uuid4().hex[:8]
    return Settings(kafka_bootstrap_servers=bootstrap, topic_prefix=f"scale{tag}.", data_dir=data_dir,
                    worker_id=f"scale-{tag}")  # fmt: skip


def _when(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--joins", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="oddstream-scaling-"))
    bootstrap, broker = kafka_for_benchmark(work)
    try:
        start = int(time.time() * 1000) - int(args.events / 200 * 1000) - 120_000
        runs = {}
        for count in (1, 2):
            settings = fresh(bootstrap, work / f"run{count}")
            total = produce(settings, args.events, start)
            runs[count] = drain(settings, work / f"run{count}", count, total)
            rate, cpu, broker_cpu = runs[count]
            print(f"{count} worker(s): {rate:9,.0f} events/s   workers {cpu:.2f} cores, "
                  f"broker {broker_cpu:.2f} cores   ({total:,} records)")  # fmt: skip
        cores = os.cpu_count() or 1
        ideal = min(2, cores)
        speedup = runs[2][0] / runs[1][0]
        print(f"speed-up with two workers: {speedup:.2f}x   (ideal on {cores} cores: {ideal:.1f}x; "
              f"goal >= 1.6x; the broker took {runs[2][2]:.2f} cores meanwhile)")  # fmt: skip
        settings = fresh(bootstrap, work / "pauses")
        produce(settings, args.events, start)
        measured = pauses(settings, work / "pauses", args.joins)
        if measured:
            print(f"rebalance pauses of the staying worker over {len(measured)} rebalances: "
                  f"p50 {statistics.median(measured):.2f} s, max {max(measured):.2f} s")  # fmt: skip
        else:
            print(f"no rebalance seen in the staying worker's log ({work / 'pauses' / 'stays.log'})")
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
