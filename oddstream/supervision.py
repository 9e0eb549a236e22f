"""When `oddstream up` restarts a role that exited, and when it gives up. Pure.

A role that exits is restarted after a backoff that doubles with each exit in a row
(1 s, 2 s, 4 s ... at most ``max_backoff_s``); a role that ran for ``stable_after_s``
before exiting starts again from the shortest backoff. A role that exits
``crash_loop_exits`` times within ``crash_loop_window_s`` is crash-looping: restarting it
again would only hide the problem, so `up` stops everything and says which role and why.

Example::

    policy = RestartPolicy()
    state = RoleRestarts()
    decision = policy.on_exit(state, now_s=100.0, ran_s=3.0)   # Restart(after_s=1.0)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Restart:
    after_s: float


@dataclass(frozen=True)
class GiveUp:
    reason: str


@dataclass
class RoleRestarts:
    """What the supervisor remembers of one role's exits."""

    restarts: int = 0
    in_a_row: int = 0
    exits: deque[float] = field(default_factory=deque)


@dataclass(frozen=True)
class RestartPolicy:
    first_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    stable_after_s: float = 60.0
    crash_loop_exits: int = 5
    crash_loop_window_s: float = 120.0

    def on_exit(self, state: RoleRestarts, now_s: float, ran_s: float) -> Restart | GiveUp:
        """Record an exit at ``now_s`` of a run that lasted ``ran_s``; say what to do."""
        state.exits.append(now_s)
        while state.exits and state.exits[0] < now_s - self.crash_loop_window_s:
            state.exits.popleft()
        if len(state.exits) >= self.crash_loop_exits:
            return GiveUp(
                f"exited {len(state.exits)} times within {self.crash_loop_window_s:g} s (crash loop)"
            )
        state.in_a_row = 1 if ran_s >= self.stable_after_s else state.in_a_row + 1
        state.restarts += 1
        backoff = self.first_backoff_s * 2 ** (state.in_a_row - 1)
        return Restart(min(backoff, self.max_backoff_s))
