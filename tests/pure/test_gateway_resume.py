"""Resuming a subscription from a position: parsing it and planning the replay, with values."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.epoch import epoch_of
from gateway.protocol import ProtocolError, Since, parse_command
from gateway.resume import NotRecovered, Replay, plan_resume

pytestmark = pytest.mark.pure

LIVE = {("w", 0): 100, ("w", 1): 40, ("a", 0): 0}  # next offsets the live fan-out hands out
STARTS = {("w", 0): 10, ("w", 1): 0, ("a", 0): 0}


def since(positions: dict[tuple[str, int], int], epoch: str = "e1") -> Since:
    return Since(epoch, positions)


def test_a_subscribe_with_positions_parses() -> None:
    frame = {
        "op": "subscribe", "channels": ["markets"],
        "since": {"epoch": "e1", "positions": {"w": [41, 7], "a": [-1]}},
    }  # fmt: skip
    command = parse_command(json.dumps(frame))
    assert command.since == Since("e1", {("w", 0): 41, ("w", 1): 7, ("a", 0): -1})


def test_positions_go_out_as_they_come_back() -> None:
    from gateway.protocol import parse_since, positions_message

    positions = {("w", 1): 7, ("w", 0): 41, ("a", 0): -1}
    assert positions_message(positions) == {"a": [-1], "w": [41, 7]}
    assert parse_since({"epoch": "e1", "positions": positions_message(positions)}).positions == positions


@pytest.mark.parametrize(
    "since",
    [
        "yesterday",
        {"positions": {}},
        {"epoch": 7, "positions": {}},
        {"epoch": "e" * 65, "positions": {}},
        {"epoch": "e1", "positions": [{"topic": "w", "partition": 0, "offset": 1}]},
        {"epoch": "e1", "positions": {"w": 1}},
        {"epoch": "e1", "positions": {"w": [1, "2"]}},
        {"epoch": "e1", "positions": {"w": [-2]}},
        {"epoch": "e1", "positions": {"w": [1.5]}},
        {"epoch": "e1", "positions": {"w": [True]}},
        {"epoch": "e1", "positions": {"w": [2**63]}},
        {"epoch": "e1", "positions": {"": [1]}},
        {"epoch": "e1", "positions": {"w": [1] * 1001}},
        {"epoch": "e1", "positions": {f"t{n}": [1] * 100 for n in range(11)}},
    ],
)
def test_a_bad_position_is_refused_with_a_reason(since: object) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_command(json.dumps({"op": "subscribe", "channels": ["markets"], "since": since}))
    assert caught.value.code == "bad_request" and str(caught.value)


def test_since_goes_with_subscribe_only() -> None:
    with pytest.raises(ProtocolError):
        parse_command('{"op":"unsubscribe","channels":["markets"],"since":{"epoch":"e1","positions":{}}}')


def test_the_replay_covers_exactly_what_came_after_each_position() -> None:
    plan = plan_resume(since({("w", 0): 41, ("w", 1): 39, ("a", 0): -1}), "e1", LIVE, STARTS, 1_000)
    # w[0]: 42..99; w[1] is caught up; a[0] is empty
    assert plan == Replay({("w", 0): (42, 100)}) and plan.records == 58


def test_positions_of_topics_the_gateway_no_longer_reads_are_ignored() -> None:
    plan = plan_resume(since({**{tp: o - 1 for tp, o in LIVE.items()}, ("old", 0): 5}), "e1", LIVE, STARTS, 0)
    assert plan == Replay({})


@pytest.mark.parametrize(
    "positions, epoch, limit, code",
    [
        ({("w", 0): 41, ("w", 1): 39, ("a", 0): -1}, "e0", 1_000, "epoch_changed"),
        ({("w", 0): 41, ("w", 1): 39}, "e1", 1_000, "unknown_position"),
        ({("w", 0): 8, ("w", 1): 39, ("a", 0): -1}, "e1", 1_000, "too_old"),  # the log starts at 10
        ({("w", 0): 41, ("w", 1): 40, ("a", 0): -1}, "e1", 1_000, "ahead_of_log"),  # 40 is not there yet
        ({("w", 0): 41, ("w", 1): 39, ("a", 0): -1}, "e1", 57, "too_far"),  # 58 records to read
    ],
)
def test_a_resume_that_cannot_be_exact_says_why(
    positions: dict[tuple[str, int], int], epoch: str, limit: int, code: str
) -> None:
    plan = plan_resume(since(positions, epoch), "e1", LIVE, STARTS, limit)
    assert isinstance(plan, NotRecovered) and plan.code == code and plan.reason


@given(
    st.dictionaries(
        st.tuples(st.sampled_from(["w", "a", "b"]), st.integers(0, 3)),
        st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50)),
        min_size=1,
    )
)
def test_replay_then_live_is_every_offset_after_the_position_once(
    partitions: dict[tuple[str, int], tuple[int, int, int]],
) -> None:
    """For any log (start <= position + 1 <= live end), replayed offsets followed by live ones
    are exactly the offsets after the position, each once."""
    live, starts, positions = {}, {}, {}
    for tp, (a, b, c) in partitions.items():
        start, seen, end = sorted((a, b, c))
        live[tp], starts[tp], positions[tp] = end, start, seen - 1
    plan = plan_resume(since(positions), "e1", live, starts, 10**9)
    assert isinstance(plan, Replay)
    for tp in live:
        replayed = list(range(*plan.ranges.get(tp, (0, 0))))
        later_live = list(range(live[tp], live[tp] + 5))
        assert replayed + later_live == list(range(positions[tp] + 1, live[tp] + 5))


def test_the_epoch_changes_exactly_when_a_topic_id_does() -> None:
    ids = {"w": "taGiz8+cTV2ZU3M92aamwQ", "a": "Xq1lHq2aT0GkqQ3C7XOcbg"}
    assert epoch_of(ids) == epoch_of(dict(reversed(ids.items()))) and len(epoch_of(ids)) == 16
    assert epoch_of({**ids, "a": "0000000000000000000000"}) != epoch_of(ids)
