"""Event-time window shapes. Pure.

Times are UTC milliseconds; windows are half-open ``[start, end)``.

* :class:`TumblingWindow` - fixed, non-overlapping, aligned to the epoch.
* :class:`HoppingWindow` - fixed size, a new one every ``hop_ms`` (they overlap).
* :class:`SlidingWindow` - one window per event, covering the ``size_ms`` up to and
  including that event: ``[t - size + 1, t + 1)``. Other events join every such window
  whose range holds them.

Example::

    >>> TumblingWindow(60_000).windows_of(125_000)
    [(120000, 180000)]
    >>> HoppingWindow(60_000, 30_000).windows_of(125_000)
    [(90000, 150000), (120000, 180000)]
"""

from __future__ import annotations

from dataclasses import dataclass

Window = tuple[int, int]


def _require_positive(**lengths: int) -> None:
    for name, value in lengths.items():
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")


@dataclass(frozen=True)
class TumblingWindow:
    """Fixed, non-overlapping windows aligned to the epoch."""

    size_ms: int

    def __post_init__(self) -> None:
        _require_positive(size_ms=self.size_ms)

    def start_of(self, event_ms: int) -> int:
        return event_ms - (event_ms % self.size_ms)

    def end_of(self, event_ms: int) -> int:
        return self.start_of(event_ms) + self.size_ms

    def windows_of(self, event_ms: int) -> list[Window]:
        start = self.start_of(event_ms)
        return [(start, start + self.size_ms)]


@dataclass(frozen=True)
class HoppingWindow:
    """Windows of ``size_ms`` starting every ``hop_ms`` (``hop_ms`` divides nothing in particular)."""

    size_ms: int
    hop_ms: int

    def __post_init__(self) -> None:
        _require_positive(size_ms=self.size_ms, hop_ms=self.hop_ms)
        if self.hop_ms > self.size_ms:
            raise ValueError("a hop longer than the window leaves gaps; use a tumbling window")

    def windows_of(self, event_ms: int) -> list[Window]:
        last_start = event_ms - (event_ms % self.hop_ms)
        starts = range(last_start, event_ms - self.size_ms, -self.hop_ms)[::-1]  # oldest first
        # zipped ranges, no per-window Python code (a hot path)
        ends = range(starts.start + self.size_ms, starts.stop + self.size_ms, self.hop_ms)
        return list(zip(starts, ends, strict=True))


@dataclass(frozen=True)
class SlidingWindow:
    """A window of ``size_ms`` ending at (and including) each event."""

    size_ms: int

    def __post_init__(self) -> None:
        _require_positive(size_ms=self.size_ms)

    def own_window(self, event_ms: int) -> Window:
        return (event_ms - self.size_ms + 1, event_ms + 1)

    def holds(self, window: Window, event_ms: int) -> bool:
        return window[0] <= event_ms < window[1]


WindowShape = TumblingWindow | HoppingWindow | SlidingWindow
