"""Pace the simulator onto Kafka, with a progress display and a ground-truth file."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from oddstream.producer import EventProducer
from oddstream.settings import Settings
from oddstream.simulator.model import MarketSimulator, disorder


def run_simulation(
    settings: Settings,
    events: int | None = None,
    realtime: bool = True,
    ground_truth: Path | None = None,
    start_ms: int | None = None,
    show_progress: bool = True,
    out_of_order: float = 0.0,
    max_delay_ms: int = 90_000,
) -> int:
    """Produce ``events`` events (forever when None); return how many were acknowledged.

    With ``realtime`` the simulated clock follows the wall clock (event time is
    now, at ``simulator_rate`` events per second); without it the events go out
    as fast as Kafka takes them, with event times spaced at that rate. With
    ``out_of_order`` > 0 that fraction of quotes, bets and system events is delivered
    up to ``max_delay_ms`` of event time late (some beyond the windows' grace).
    """
    origin_ms = start_ms if start_ms is not None else int(time.time() * 1000)
    sim = MarketSimulator(
        seed=settings.simulator_seed,
        start_ms=origin_ms,
        markets=settings.simulator_markets,
        rate_per_s=settings.simulator_rate,
        anomaly_rate=settings.simulator_anomaly_rate,
        mispricing_rate=settings.simulator_mispricing_rate,
    )
    truth_path = ground_truth or settings.data_dir / "simulator" / "ground_truth.jsonl"
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    written_truth = 0
    wall_origin = time.monotonic()
    sent = 0
    with (
        EventProducer(settings) as producer,
        Progress(
            SpinnerColumn(),
            TextColumn("[bold]simulating[/] {task.completed:,.0f} events"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            disable=not show_progress,
        ) as progress,
    ):
        task = progress.add_task("simulate", total=events, rate="")
        try:
            stream = sim.events()
            if out_of_order > 0:
                stream = disorder(stream, settings.simulator_seed, out_of_order, max_delay_ms)
            for event in stream:
                if events is not None and sent >= events:
                    break
                if realtime:
                    ahead_s = (sim.clock_ms - origin_ms) / 1000 - (time.monotonic() - wall_origin)
                    if ahead_s > 0:
                        producer.flush()
                        time.sleep(ahead_s)
                producer.publish_event(event)
                sent += 1
                if sent % 500 == 0:
                    elapsed = max(time.monotonic() - wall_origin, 1e-9)
                    progress.update(task, completed=sent, rate=f"{sent / elapsed:,.0f}/s")
                if len(sim.ground_truth) > written_truth:
                    with truth_path.open("a") as fh:
                        for row in sim.ground_truth[written_truth:]:
                            fh.write(json.dumps(row) + "\n")
                    written_truth = len(sim.ground_truth)
        except KeyboardInterrupt:
            pass
        progress.update(task, completed=sent)
    return producer.delivered
