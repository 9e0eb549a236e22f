"""`oddstream up`'s restart policy: backoff, reset after a stable run, crash-loop limit."""

from __future__ import annotations

import pytest

from oddstream.supervision import GiveUp, Restart, RestartPolicy, RoleRestarts

pytestmark = pytest.mark.pure


def test_backoff_doubles_for_exits_in_a_row_up_to_the_maximum() -> None:
    policy = RestartPolicy(max_backoff_s=5.0, crash_loop_exits=100)
    state = RoleRestarts()
    waits = [policy.on_exit(state, now_s=i * 1000.0, ran_s=1.0) for i in range(5)]
    assert waits == [Restart(1.0), Restart(2.0), Restart(4.0), Restart(5.0), Restart(5.0)]
    assert state.restarts == 5


def test_a_stable_run_resets_the_backoff() -> None:
    policy = RestartPolicy()
    state = RoleRestarts()
    policy.on_exit(state, 0.0, 1.0)
    policy.on_exit(state, 10.0, 1.0)
    assert policy.on_exit(state, 500.0, 300.0) == Restart(1.0)


def test_too_many_exits_within_the_window_is_a_crash_loop() -> None:
    policy = RestartPolicy(crash_loop_exits=3, crash_loop_window_s=60.0)
    state = RoleRestarts()
    assert isinstance(policy.on_exit(state, 0.0, 1.0), Restart)
    assert isinstance(policy.on_exit(state, 10.0, 1.0), Restart)
    verdict = policy.on_exit(state, 20.0, 1.0)
    assert isinstance(verdict, GiveUp) and "3 times within 60 s" in verdict.reason


def test_exits_spread_wider_than_the_window_never_give_up() -> None:
    policy = RestartPolicy(crash_loop_exits=3, crash_loop_window_s=60.0)
    state = RoleRestarts()
    for i in range(20):
        assert isinstance(policy.on_exit(state, i * 31.0, 1.0), Restart)
