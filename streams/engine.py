"""The event-time window engine: watermark, grace, late events, current and final results.

One engine serves one source partition (its watermark is that partition's). For each
event it returns "current" updates of the windows it joined; when the watermark passes
``window end + grace`` the window is closed and exactly one "final" result is emitted.

* watermark = max event time seen - ``delay_ms`` (bounded out-of-orderness); it never
  goes back and depends on the events only, so lateness is decided by event time alone
  and a replay of the log classifies every event exactly as live processing did. A
  ``clocked`` engine takes its watermark from the caller instead (:meth:`advance_to`):
  for a stream merged from several partitions, whose progress is the slowest one's.
* On a quiet partition, :meth:`WindowEngine.on_idle` moves a separate *idle mark* with
  the processing clock and emits the finals of the windows it passes *early*, so quiet
  markets get results. Such a window stays open until the watermark passes it: if an
  event for it still arrives within the grace, its final is emitted again, revised
  (higher version, same window); otherwise nothing more. The last final of a window is
  therefore always the same, live or replayed.
* An event is late when a window it belongs to is already closed. It is never merged
  into a closed window: the result lists the windows it missed (the caller counts it and
  routes it to a late topic). An event that still has open windows joins those.
* Finals are the same whatever the arrival order, as long as no event is late, if the
  aggregator is order-insensitive (counts, sums, extremes, first/last by event time).

Example::

    engine = WindowEngine(TumblingWindow(60_000), CountAggregator(), delay_ms=5_000, grace_ms=10_000)
    result = engine.process("m1", 1_000, value=None, processing_ms=0)
    result.updates[0].final            # False: a current update
    engine.flush()                     # finals for every open window
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Hashable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Generic, Protocol, TypeVar

from streams.windows import HoppingWindow, SlidingWindow, TumblingWindow, Window, WindowShape

V = TypeVar("V")
V_in = TypeVar("V_in", contravariant=True)
A = TypeVar("A")
K = TypeVar("K", bound=Hashable)
NEVER = -(2**62)
_time = itemgetter(0)  # of a buffered (event ms, value)


class Aggregator(Protocol[V_in, A]):
    """How values fold into a window's aggregate. ``add`` should not depend on order."""

    def zero(self) -> A: ...

    def add(self, aggregate: A, value: V_in, event_ms: int) -> A: ...


@dataclass(frozen=True)
class WindowResult(Generic[K, A]):
    """One emission: a window's aggregate after ``version`` events, current or final."""

    key: K
    start: int
    end: int
    aggregate: A
    version: int
    final: bool


@dataclass(frozen=True)
class LateEvent(Generic[K]):
    """An event that arrived after (some of) its windows closed."""

    key: K
    event_ms: int
    watermark: int
    missed: tuple[Window, ...]


@dataclass(frozen=True)
class Processed(Generic[K, A]):
    updates: list[WindowResult[K, A]]
    finals: list[WindowResult[K, A]]
    late: LateEvent[K] | None


_new = object.__new__


def _result(key: K, start: int, end: int, aggregate: A, version: int, final: bool) -> WindowResult[K, A]:
    """``WindowResult(...)`` without the frozen dataclass's ``__init__`` (a field at a time
    through ``object.__setattr__``): the same value, equal and pickled alike, about 4x faster
    on the per-event path (tests/pure/test_engine.py checks the equality)."""
    result: WindowResult[K, A] = _new(WindowResult)
    fields = result.__dict__
    fields["key"] = key
    fields["start"] = start
    fields["end"] = end
    fields["aggregate"] = aggregate
    fields["version"] = version
    fields["final"] = final
    return result


def _processed(
    updates: list[WindowResult[K, A]], finals: list[WindowResult[K, A]], late: LateEvent[K] | None
) -> Processed[K, A]:
    """``Processed(...)``, built as :func:`_result` is."""
    processed: Processed[K, A] = _new(Processed)
    fields = processed.__dict__
    fields["updates"] = updates
    fields["finals"] = finals
    fields["late"] = late
    return processed


@dataclass
class _Open(Generic[A]):
    aggregate: A
    version: int
    emitted: int = 0  # version of the final already emitted early (0: none)


@dataclass
class WindowEngine(Generic[K, V, A]):
    """Windows per key over event time, for one partition."""

    shape: WindowShape
    aggregator: Aggregator[V, A]
    delay_ms: int = 0
    grace_ms: int = 0
    idle_timeout_ms: int = 30_000
    # True: events do not move the watermark, only advance_to() does (a repartitioned stream,
    # whose inputs' progress the caller tracks: the user stage, streams/processor.py)
    clocked: bool = False
    watermark: int = NEVER
    idle_mark: int = NEVER  # how far idleness closed windows (processing clock)
    max_event_ms: int = NEVER
    last_arrival_ms: int | None = None
    late_events: int = 0
    _open: dict[tuple[K, Window], _Open[A]] = field(default_factory=dict)
    _buffer: dict[K, list[tuple[int, V]]] = field(default_factory=dict)  # sliding only, by event time
    _sliding: dict[K, list[Window]] = field(default_factory=dict)  # sliding only: a key's open windows
    # (end + grace, sequence, key, window) of every window opened: what closes next, without a scan
    _closing: list[tuple[int, int, K, Window]] = field(default_factory=list)
    _opened: int = 0
    _next_close: int = 2**62  # earliest end + grace among open windows (_closing[0])
    _next_prune: int = NEVER  # sliding: when the buffers are next swept of events no window needs

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.grace_ms < 0:
            raise ValueError("delay and grace must not be negative")

    # -- events --------------------------------------------------------------

    def process(self, key: K, event_ms: int, value: V, processing_ms: int) -> Processed[K, A]:
        """Fold one event; return its current updates, any finals it caused, and lateness."""
        self.last_arrival_ms = processing_ms
        if type(self.shape) is TumblingWindow:
            return self._process_tumbling(key, event_ms, value)
        candidates = self._windows_of(key, event_ms)
        missed = tuple(w for w in candidates if self._closed(w) and (key, w) not in self._open)
        joined = [w for w in candidates if w not in missed]
        late = None
        if missed:
            self.late_events += 1
            late = LateEvent(key, event_ms, self.watermark, missed)
        updates = []
        if joined:
            for window in joined:
                slot = self._open.get((key, window))
                if slot is None:
                    slot = self._open[(key, window)] = self._seed(key, window)
                    self._opening(key, window)
                slot.aggregate = self.aggregator.add(slot.aggregate, value, event_ms)
                slot.version += 1
                updates.append(_result(key, window[0], window[1], slot.aggregate, slot.version, False))
            if type(self.shape) is SlidingWindow:
                insort(self._buffer.setdefault(key, []), (event_ms, value), key=_time)
            self.max_event_ms = max(self.max_event_ms, event_ms)
            if not self.clocked:
                self.watermark = max(self.watermark, self.max_event_ms - self.delay_ms)
        return _processed(updates, self._close_ready(), late)

    def _process_tumbling(self, key: K, event_ms: int, value: V) -> Processed[K, A]:
        """:meth:`process` for tumbling windows (one window per event), without the general
        path's lists: the same results (tests/pure/test_windows.py compares both)."""
        size = self.shape.size_ms
        start = event_ms - event_ms % size
        window = (start, start + size)
        slot = self._open.get((key, window))
        if slot is None:
            if window[1] + self.grace_ms <= self.watermark:  # closed, and not open: late
                self.late_events += 1
                return Processed([], self._close_ready(), LateEvent(key, event_ms, self.watermark, (window,)))
            slot = self._open[(key, window)] = _Open(self.aggregator.zero(), 0)
            self._opening(key, window)
        slot.aggregate = self.aggregator.add(slot.aggregate, value, event_ms)
        slot.version += 1
        update = _result(key, start, window[1], slot.aggregate, slot.version, False)
        if event_ms > self.max_event_ms:
            self.max_event_ms = event_ms
            if not self.clocked:
                self.watermark = max(self.watermark, event_ms - self.delay_ms)
        return _processed([update], self._close_ready(), None)

    def on_idle(self, processing_ms: int) -> list[WindowResult[K, A]]:
        """Advance the idle mark with the processing clock after ``idle_timeout_ms`` of silence:
        by the silence past the newest event, and at least to the clock itself (minus the delay),
        so the windows of a stream whose event times lie in the past (a backfill, a replayed
        feed) close once it is quiet, not a window's length of silence later. Either way the
        finals are early: an event that still arrives within the grace revises them."""
        if self.last_arrival_ms is None or self.max_event_ms == NEVER:
            return []
        quiet = processing_ms - self.last_arrival_ms
        if quiet < self.idle_timeout_ms:
            return []
        self.idle_mark = max(
            self.idle_mark, self.max_event_ms - self.delay_ms + quiet, processing_ms - self.delay_ms
        )
        finals = []
        for (key, window), slot in sorted(self._open.items(), key=lambda kv: (kv[0][1], str(kv[0][0]))):
            if window[1] + self.grace_ms <= self.idle_mark and slot.emitted != slot.version:
                slot.emitted = slot.version
                finals.append(WindowResult(key, window[0], window[1], slot.aggregate, slot.version, True))
        return finals

    def advance_to(self, watermark: int) -> list[WindowResult[K, A]]:
        """Move the watermark forward explicitly (e.g. from a partition-wide signal)."""
        self.watermark = max(self.watermark, watermark)
        return self._close_ready()

    def flush(self) -> list[WindowResult[K, A]]:
        """Close every open window (end of a bounded input, e.g. a replay)."""
        return self.advance_to(2**62)

    @property
    def open_windows(self) -> int:
        return len(self._open)

    # -- internals -------------------------------------------------------------

    def _closed(self, window: Window) -> bool:
        return window[1] + self.grace_ms <= self.watermark

    def _windows_of(self, key: K, event_ms: int) -> list[Window]:
        if isinstance(self.shape, TumblingWindow | HoppingWindow):
            return self.shape.windows_of(event_ms)
        own = self.shape.own_window(event_ms)
        existing = [w for w in self._sliding.get(key, ()) if w[0] <= event_ms < w[1]]
        return sorted({own, *existing})

    def _opening(self, key: K, window: Window) -> None:
        close_at = window[1] + self.grace_ms
        self._opened += 1
        heapq.heappush(self._closing, (close_at, self._opened, key, window))
        self._next_close = self._closing[0][0]
        if type(self.shape) is SlidingWindow:
            self._sliding.setdefault(key, []).append(window)

    def _seed(self, key: K, window: Window) -> _Open[A]:
        """A new window; a sliding one starts with the buffered events it covers."""
        slot = _Open(self.aggregator.zero(), 0)
        buffer = self._buffer.get(key)
        if buffer and type(self.shape) is SlidingWindow:
            items = buffer[
                bisect_left(buffer, window[0], key=_time) : bisect_left(buffer, window[1], key=_time)
            ]
            add_many = getattr(self.aggregator, "add_many", None)  # a bulk fold, if it has one
            if add_many is not None:
                slot.aggregate = add_many(slot.aggregate, items)
            else:
                for event_ms, value in items:
                    slot.aggregate = self.aggregator.add(slot.aggregate, value, event_ms)
            slot.version = len(items)
        return slot

    def _close_ready(self) -> list[WindowResult[K, A]]:
        if self.watermark < self._next_close:
            return []
        closing, ready = self._closing, []
        while closing and closing[0][0] <= self.watermark:
            _, _, key, window = heapq.heappop(closing)
            ready.append((key, window))
        ready.sort(key=lambda kw: (kw[1][1], kw[1][0], str(kw[0])))
        finals = []
        sliding = type(self.shape) is SlidingWindow
        for key, window in ready:
            slot = self._open.pop((key, window))
            if slot.emitted != slot.version:  # not already emitted early with this content
                finals.append(WindowResult(key, window[0], window[1], slot.aggregate, slot.version, True))
            if sliding:
                windows = self._sliding[key]
                windows.remove(window)
                if not windows:
                    del self._sliding[key]
        self._next_close = closing[0][0] if closing else 2**62
        if sliding and self.watermark >= self._next_prune:
            self._prune()
        return finals

    def _prune(self) -> None:
        """Drop buffered events older than any window that is open or can still open: a new
        window starts after ``watermark - grace - size``. Swept once per ``size`` of watermark."""
        size = self.shape.size_ms
        horizon = self.watermark - self.grace_ms - size
        self._next_prune = self.watermark + size
        for key, buffer in list(self._buffer.items()):
            del buffer[: bisect_left(buffer, horizon, key=_time)]
            if not buffer:
                del self._buffer[key]
