"""Resuming a subscription from a client's last positions. Pure: the caller supplies the
gateway's live positions and the log's first offsets, and reads the planned ranges.

The log is the history: a client that was away says, per topic-partition, the offset of the
last event it accounted for; the gateway replays the records after it up to where its live
fan-out stands (``live_next``, the next offset it will fan out), then the client continues
live. Replay covers ``[position + 1, live_next)`` and live frames start at ``live_next``: no
gap and no duplicate.

A resume is refused (``recovered: false``, with a code and a reason) when the epoch differs
(a topic was deleted and created again: its offsets mean other records), when a position is
missing, older than the log (retention deleted what was missed) or ahead of it, or when
more records would have to be read than the gateway replays for one subscribe.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.protocol import Position, Since


@dataclass(frozen=True)
class Replay:
    """Read ``[start, end)`` of each topic-partition; ``records`` in all."""

    ranges: dict[Position, tuple[int, int]]

    @property
    def records(self) -> int:
        return sum(end - start for start, end in self.ranges.values())


@dataclass(frozen=True)
class NotRecovered:
    code: str  # epoch_changed | unknown_position | too_old | ahead_of_log | too_far
    reason: str


def plan_resume(
    since: Since,
    epoch: str,
    live_next: dict[Position, int],
    log_start: dict[Position, int],
    max_records: int,
) -> Replay | NotRecovered:
    if since.epoch != epoch:
        return NotRecovered(
            "epoch_changed",
            f"the positions are of epoch {since.epoch[:64]!r}, the gateway's log is epoch {epoch!r} "
            "(a topic was created again): its offsets mean other records",
        )
    ranges: dict[Position, tuple[int, int]] = {}
    for tp, live in sorted(live_next.items()):
        topic, partition = tp
        if tp not in since.positions:
            return NotRecovered(
                "unknown_position",
                f"no position for {topic}[{partition}]; send every position of the last subscribed "
                "message, updated by the frames since",
            )
        start = since.positions[tp] + 1
        if start > live:
            return NotRecovered(
                "ahead_of_log", f"{topic}[{partition}]: position {start - 1} is past the log's end ({live})"
            )
        if start < log_start.get(tp, 0):
            return NotRecovered(
                "too_old",
                f"{topic}[{partition}]: position {start - 1} is older than the log, which starts at "
                f"{log_start[tp]} (retention deleted what was missed)",
            )
        if start < live:
            ranges[tp] = (start, live)
    plan = Replay(ranges)
    if plan.records > max_records:
        return NotRecovered(
            "too_far",
            f"{plan.records} records to read since the positions, more than the {max_records} the gateway "
            "replays for one subscribe",
        )
    return plan
