"""Does the worker's state stay bounded? A long simulation through the real worker and store.

    python -m benchmarks.soak [--events 2000000] [--sample-s 5]

1. Produces a seeded simulation (markets opening, trading, resulting and closing; 3 % of
   events up to 90 s late) to fresh topics: 2M events are about 2.8 hours of event time,
   so markets resulted over an hour ago are evicted many times over.
2. Runs the store and the worker (``oddstream store``, ``oddstream worker``) on it and
   samples, every few seconds, the events the worker has committed and its RSS.
3. Reads the worker's changelog topics back: every partition snapshot's size (manifest
   plus chunks) and when it was written.
4. Prints both over the run and their slopes over its second half (per million events):
   flat state has a slope near 0, against what the first half grew; then each partition's
   snapshot sizes through its life.
5. Prints the worker's snapshot pauses (the time taking a snapshot held its event loop):
   their count and distribution from its metrics, the longest from its log.
6. Checks exactness as tests/integration/test_exactness.py does: every final window in
   ClickHouse equals its SQL recomputation from the raw events, and the late sets match.

Not a test: it prints numbers and exits 0 (1 if the exactness check fails).
Uses KAFKA_BOOTSTRAP_SERVERS if set, else starts a local broker on a free port.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.kafka import kafka_for_benchmark
from benchmarks.worker import committed, end_offsets
from consumers.worker.app import STAGES
from consumers.worker.snapshots import manifest_chunk_keys
from infra.broker import free_port
from oddstream.kafka.admin import ensure_topics
from oddstream.kafka.read import read_topic
from oddstream.settings import Settings
from oddstream.simulator.run import run_simulation
from schemas.topics import Topics
from tests.integration.roles import Role
from tests.integration.test_exactness import RAW_TABLES, expected, mismatches, stored


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    if len(points) < 2:
        return 0.0
    return statistics.linear_regression([x for x, _ in points], [y for _, y in points]).slope


def snapshot_sizes(settings: Settings) -> list[tuple[int, str, int]]:
    """(write ms, "<topic>[<partition>]", bytes incl. chunks) of every snapshot in the changelogs."""
    out = []
    for stage in STAGES.values():  # odds, bets, system and the user stage (bets.by-user)
        chunks: dict[bytes, int] = {}
        for m in read_topic(settings.bootstrap, f"{settings.worker_id}-{stage}-state-changelog"):
            key, value = m.key() or b"", m.value()
            if value is None:
                continue
            if b"/" in key:
                chunks[key] = len(value)
                continue
            size = len(value) + sum(chunks.get(k, 0) for k in manifest_chunk_keys(value, key))
            out.append((m.timestamp()[1], key.decode().split(".", 1)[-1], size))
    return sorted(out)


def snapshot_pauses(settings: Settings, log: Path) -> str:
    """The worker's snapshot pauses: count, mean and the bucket 99 % fall in (its Prometheus
    histogram), and the longest (each pause of 100 ms or more is logged with its length)."""
    text = httpx.get(f"http://127.0.0.1:{settings.worker_metrics_port}/metrics", timeout=10).text
    [family] = [
        f for f in text_string_to_metric_families(text) if f.name == "oddstream_worker_snapshot_pause_seconds"
    ]
    values = {(s.name.rsplit("_", 1)[-1], s.labels.get("le")): s.value for s in family.samples}
    count, total = values[("count", None)], values[("sum", None)]
    buckets = sorted((float(le or "inf"), n) for (kind, le), n in values.items() if kind == "bucket")
    p99 = next(le for le, n in buckets if n >= 0.99 * count)  # the +Inf bucket holds every pause
    logged = [int(ms) for ms in re.findall(r"held the event loop (\d+) ms", log.read_text(errors="replace"))]
    longest = f"{max(logged)} ms" if logged else "under 100 ms"
    return (f"snapshot pauses: {count:,.0f}, mean {total / max(count, 1) * 1000:.1f} ms, 99 % within "
            f"{p99 * 1000:g} ms, {len(logged)} of 100 ms or more, longest {longest}")  # fmt: skip


def per_partition(sizes: list[tuple[int, str, int]]) -> None:
    """Each partition's snapshot sizes through its life: the first, those a quarter, half and
    three quarters of the way through its snapshots, the last, and the largest. (A backlog
    is drained a partition's batch at a time, so a partition's life is a stretch of the run,
    not the run: no slope against the run's events.)"""
    by_name: dict[str, list[float]] = {}
    for _, name, size in sizes:
        by_name.setdefault(name, []).append(size / 1024)
    print(f"\n{'partition':<18} {'snapshots':>9}  KB: {'first':>7} {'1/4':>7} {'1/2':>7} {'3/4':>7} "
          f"{'last':>7} {'largest':>8}")  # fmt: skip
    for name, kb in sorted(by_name.items()):
        at = [kb[min(len(kb) - 1, len(kb) * q // 4)] for q in (1, 2, 3)]
        print(f"{name:<18} {len(kb):>9}      {kb[0]:>7.1f} {at[0]:>7.1f} {at[1]:>7.1f} {at[2]:>7.1f} "
              f"{kb[-1]:>7.1f} {max(kb):>8.1f}")  # fmt: skip


def sql(settings: Settings, text: str) -> list[list[object]]:
    response = httpx.post(f"{settings.sql_endpoint}/sql", content=text, timeout=600)
    response.raise_for_status()
    return response.json()["rows"]  # type: ignore[no-any-return]


def report(samples: list[tuple[int, int, float]], sizes: list[tuple[int, str, int]], total: int,
           began: float) -> None:  # fmt: skip
    """The run as a table, and the slopes of its second half."""
    print(f"{'s':>6} {'committed':>11} {'RSS MB':>8} {'largest snapshot KB':>20} {'all snapshots KB':>17}")
    latest: dict[str, int] = {}
    at = 0
    rows = []
    for wall_ms, n, rss in samples:
        while at < len(sizes) and sizes[at][0] <= wall_ms:
            latest[sizes[at][1]] = sizes[at][2]
            at += 1
        largest, every = max(latest.values(), default=0) / 1024, sum(latest.values()) / 1024
        rows.append((n / 1e6, rss, largest, every, len(latest)))
        print(f"{wall_ms / 1000 - began:>6.0f} {n:>11,} {rss:>8.1f} {largest:>20.1f} {every:>17.1f}"
              f"  ({len(latest)} partitions)")  # fmt: skip
    partitions = len({name for _, name, _ in sizes})
    # a backlog reaches the partitions one after another: each half's slope is over its samples
    # with as many partitions snapshotted as that half ever had (a partition's first snapshot
    # is not growth)
    halves = [[r for r in rows if r[0] * 1e6 < total / 2], [r for r in rows if r[0] * 1e6 >= total / 2]]
    first, second = ([r for r in half if r[4] == max((x[4] for x in half), default=0)] for half in halves)
    for name, column in (("worker RSS MB", 1), ("largest snapshot KB", 2), ("all snapshots KB", 3)):
        late = slope([(r[0], r[column]) for r in second])
        early = slope([(r[0], r[column]) for r in first])
        level = statistics.mean(r[column] for r in second) if second else 0.0
        before = f"first half {early:+.1f}" if len(first) >= 3 else f"first half: {len(first)} sample(s)"
        print(f"{name}: second half mean {level:,.1f}, slope {late:+.1f} per million events ({before})")
    print(f"snapshots written: {len(sizes):,} over {partitions} partitions (slopes over each half's "
          f"samples with all its partitions snapshotted: {len(first)} and {len(second)})")  # fmt: skip


def exact(settings: Settings, topics: Topics, sent: int) -> bool:
    """Every final window in ClickHouse equals its SQL recomputation (tests/integration/test_exactness.py)."""
    counted = " + ".join(f"(SELECT count() FROM {t} FINAL)" for t in RAW_TABLES)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and int(str(sql(settings, f"SELECT {counted}")[0][0])) < sent:
        time.sleep(5)

    def query(text: str) -> list[list[object]]:
        return sql(settings, text)

    problems = mismatches(expected(query, settings), stored(query, settings.specs()))
    deadline = time.monotonic() + 300
    while problems and time.monotonic() < deadline:
        time.sleep(10)
        problems = mismatches(expected(query, settings), stored(query, settings.specs()))
    if problems:
        print(f"\nexactness: {len(problems)} differences:\n" + "\n".join(problems[:20]))
    else:
        print("\nexactness: every final window equals its SQL recomputation; late sets match")
    return not problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--sample-s", type=float, default=5.0)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="oddstream-soak-"))
    bootstrap, broker = kafka_for_benchmark(data)
    roles: list[Role] = []
    try:
        settings = Settings(
            kafka_bootstrap_servers=bootstrap, topic_prefix=f"soak{uuid.uuid4().hex[:8]}.", data_dir=data,
            worker_id=f"soak-{uuid.uuid4().hex[:8]}", store_port=free_port(), worker_metrics_port=free_port(),
            development=True, log_level="warn",
            # the exactness check reads every raw quote back (the sliding windows' recomputation)
            # and every stored window: more than the store's defaults let one query return
            sql_max_result_rows=50_000_000, sql_max_result_bytes=4 << 30, sql_max_memory_bytes=4 << 30,
            sql_max_execution_s=600,
        )  # fmt: skip
        ensure_topics(settings)
        topics = Topics(settings.topic_prefix)
        sources = [topics.odds, topics.bets, topics.name("system")]
        span_ms = int(args.events / settings.simulator_rate * 1000)
        started = time.perf_counter()
        # the simulator's clock runs a few % past events / rate: start early enough that its last
        # events are still in the past (a future event time is dead-lettered)
        origin = int(time.time() * 1000) - int(span_ms * 1.1) - 300_000
        sent = run_simulation(settings, events=args.events, realtime=False, start_ms=origin,
                              show_progress=False, out_of_order=0.03, max_delay_ms=90_000,
                              ground_truth=data / "truth.jsonl")  # fmt: skip
        total = end_offsets(bootstrap, sources)
        print(f"produced {sent:,} events (about {span_ms / 3_600_000:.1f} h of event time) in "
              f"{time.perf_counter() - started:.0f} s; {total:,} on the worker's topics")  # fmt: skip

        roles = [Role(settings, "store"), Role(settings, "worker")]
        worker = roles[1]
        samples: list[tuple[int, int, float]] = []  # (wall ms, committed, worker RSS MB)
        began = time.time()
        done = 0
        while done < total:
            for role in roles:
                if not role.alive():
                    raise SystemExit(f"{role.log.stem} exited: see {role.log}")
            time.sleep(args.sample_s)
            done = committed(bootstrap, settings.worker_id, sources)
            samples.append((int(time.time() * 1000), done, rss_mb(worker.process.pid)))
        seconds = time.time() - began
        print(f"the worker committed all {total:,} in {seconds:.0f} s ({total / seconds:,.0f} events/s, "
              "the store running beside it)\n")  # fmt: skip
        sizes = snapshot_sizes(settings)
        report(samples, sizes, total, began)
        per_partition(sizes)
        print(snapshot_pauses(settings, worker.log))
        sys.exit(0 if exact(settings, topics, sent) else 1)
    finally:
        for role in reversed(roles):
            role.stop()
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
