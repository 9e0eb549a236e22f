"""System health for the ``health`` channel, from Kafka offsets. Pure: the caller reads them.

Every ``HEALTH_EVERY_S`` while someone is subscribed, the gateway reads the end offsets of
the source topics, the derived topics and the dead-letter topic, and the worker group's
committed offsets; two readings give rates:

* ``events_in_per_s``: records appended to the source topics (odds, bets, system) a second;
* ``derived_per_s``: records appended to the derived topics (windows, insights) a second;
* ``worker_lag``: source records not yet committed by the worker's group;
* ``gateway_lag``: derived records the gateway has not fanned out yet;
* ``dead_letters`` (all time) and ``dead_letters_per_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.protocol import Position

HEALTH_EVERY_S = 2.0


@dataclass(frozen=True)
class Reading:
    at: float  # seconds, monotonic
    source_ends: dict[Position, int]
    worker_committed: dict[Position, int | None]
    derived_ends: dict[Position, int]
    dead_letter_ends: dict[Position, int]


def health(
    previous: Reading | None, now: Reading, live_next: dict[Position, int]
) -> dict[str, float | int | None]:
    def rate(before: dict[Position, int], after: dict[Position, int]) -> float | None:
        if previous is None or now.at <= previous.at:
            return None
        return max(0, sum(after.values()) - sum(before.values())) / (now.at - previous.at)

    return {
        "events_in_per_s": rate(previous.source_ends if previous else {}, now.source_ends),
        "derived_per_s": rate(previous.derived_ends if previous else {}, now.derived_ends),
        "worker_lag": sum(
            max(0, end - (now.worker_committed.get(tp) or 0)) for tp, end in now.source_ends.items()
        ),
        "gateway_lag": sum(max(0, end - live_next.get(tp, end)) for tp, end in now.derived_ends.items()),
        "dead_letters": sum(now.dead_letter_ends.values()),
        "dead_letters_per_s": rate(previous.dead_letter_ends if previous else {}, now.dead_letter_ends),
    }
