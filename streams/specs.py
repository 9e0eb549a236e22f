"""Window specs: which windows the worker runs besides the one-minute tumbling ones. Pure.

Every kind always runs the *primary* spec, ``1m``: tumbling windows of
``window_size_ms`` (the ``*_windows_1m`` tables, the ``market:<id>`` channels). Each extra
spec runs its own engines for the kinds it names, and its results go to their own tables
(``<table>_<spec>``, e.g. ``bet_windows_5m_every_1m``) and channels (``market:<id>@<spec>``).
The window events carry the spec's name in their ``spec`` field.

=============  ========  ==========  =========  =================================
spec           shape     size        advance    kinds
=============  ========  ==========  =========  =================================
5m_every_1m    hopping   5 minutes   1 minute   market, bets
60s_sliding    sliding   60 seconds  (a quote)  price: velocity over the last 60 s
=============  ========  ==========  =========  =================================

A sliding window is one per event, covering the ``size`` up to and including it
(:class:`~streams.windows.SlidingWindow`): the price window of a quote is that
selection's prices at that bookmaker over the 60 s before it. Sliding specs are offered
for ``price`` only: a window per quote costs a fold of the quotes it covers, which is a
handful for one bookmaker's price but the whole book's quotes for a market.

Example::

    >>> parse_specs('[{"name": "15m", "kinds": ["bets"], "shape": "tumbling", "size_ms": 900000}]')
    (WindowSpec(name='15m', kinds=('bets',), shape='tumbling', size_ms=900000, advance_ms=0),)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from streams.windows import HoppingWindow, SlidingWindow, TumblingWindow, WindowShape

PRIMARY = "1m"
EVENT_TYPE_OF_KIND = {  # the event each window kind emits, in every spec
    "market": "OddsWindowUpdated",
    "price": "PriceWindowUpdated",
    "bets": "BetWindowUpdated",
    "service": "ServiceWindowUpdated",
    "route": "RouteWindowUpdated",
    "user": "UserWindowUpdated",
}
KINDS = ("market", "price", "bets", "service", "route")  # user windows are partials: primary only
SHAPES = ("tumbling", "hopping", "sliding")
SLIDING_KINDS = ("price",)
NAME = re.compile(r"[a-z0-9_]{1,32}")
MAX_WINDOWS_PER_EVENT = 60  # a hopping spec's size / advance: each event joins that many windows


@dataclass(frozen=True)
class WindowSpec:
    name: str
    kinds: tuple[str, ...]
    shape: str
    size_ms: int
    advance_ms: int = 0  # hopping: a new window every advance_ms

    def __post_init__(self) -> None:
        problems = spec_problems(self)
        if problems:
            raise ValueError(f"window spec {self.name!r}: " + "; ".join(problems))

    def window(self) -> WindowShape:
        if self.shape == "hopping":
            return HoppingWindow(self.size_ms, self.advance_ms)
        if self.shape == "sliding":
            return SlidingWindow(self.size_ms)
        return TumblingWindow(self.size_ms)


def spec_problems(spec: WindowSpec) -> list[str]:
    """Every reason ``spec`` cannot run (empty: it can)."""
    problems = []
    if not isinstance(spec.name, str) or not NAME.fullmatch(spec.name):
        problems.append("a name is 1-32 characters of a-z, 0-9 and _")
    elif spec.name == PRIMARY:
        problems.append(f"{PRIMARY!r} is the primary spec (window_size_ms); pick another name")
    if spec.shape not in SHAPES:
        problems.append(f"shape must be one of {', '.join(SHAPES)}, got {spec.shape!r}")
    if not spec.kinds:
        problems.append(f"name at least one kind of {', '.join(KINDS)}")
    for kind in spec.kinds:
        if kind not in KINDS:
            problems.append(f"unknown kind {kind!r} (one of {', '.join(KINDS)})")
        elif spec.shape == "sliding" and kind not in SLIDING_KINDS:
            problems.append(f"sliding windows are offered for {', '.join(SLIDING_KINDS)} only, not {kind!r}")
    if len(set(spec.kinds)) != len(spec.kinds):
        problems.append("a kind is named twice")
    if not isinstance(spec.size_ms, int) or spec.size_ms < 1_000:
        problems.append("size_ms must be at least 1000")
    if spec.shape == "hopping":
        if not isinstance(spec.advance_ms, int) or spec.advance_ms < 1_000:
            problems.append("a hopping spec needs advance_ms of at least 1000")
        elif spec.advance_ms > spec.size_ms:
            problems.append("advance_ms longer than size_ms leaves gaps; use a tumbling spec")
        elif spec.size_ms // spec.advance_ms > MAX_WINDOWS_PER_EVENT:
            problems.append(f"size_ms / advance_ms above {MAX_WINDOWS_PER_EVENT} windows per event")
    elif spec.advance_ms:
        problems.append(f"advance_ms is for hopping specs, not {spec.shape}")
    return problems


DEFAULT_SPECS = (
    WindowSpec("5m_every_1m", ("market", "bets"), "hopping", 300_000, 60_000),
    WindowSpec("60s_sliding", ("price",), "sliding", 60_000),
)


def parse_specs(text: str | list[dict[str, Any]]) -> tuple[WindowSpec, ...]:
    """Specs from JSON (a list of ``{name, kinds, shape, size_ms, advance_ms}``); raise
    ``ValueError`` naming every problem."""
    items = json.loads(text) if isinstance(text, str) else text
    if not isinstance(items, list):
        raise ValueError("window specs are a JSON list of {name, kinds, shape, size_ms, advance_ms}")
    specs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"window spec {i}: an object, got {type(item).__name__}")
        unknown = set(item) - {"name", "kinds", "shape", "size_ms", "advance_ms"}
        if unknown:
            raise ValueError(f"window spec {i}: unknown fields {sorted(unknown)}")
        kinds = item.get("kinds", [])
        if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
            raise ValueError(f"window spec {i}: kinds is a list of names")
        specs.append(
            WindowSpec(
                item.get("name", ""),
                tuple(kinds),
                item.get("shape", ""),
                item.get("size_ms", 0),
                item.get("advance_ms", 0),
            )
        )
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"window spec names must differ: {names}")
    return tuple(specs)


def specs_json(specs: tuple[WindowSpec, ...]) -> str:
    return json.dumps(
        [
            {"name": s.name, "kinds": list(s.kinds), "shape": s.shape, "size_ms": s.size_ms}
            | ({"advance_ms": s.advance_ms} if s.shape == "hopping" else {})
            for s in specs
        ]
    )


def engine_name(kind: str, spec: str) -> str:
    """The engine (and late-event kind) of ``kind`` in ``spec``: the kind itself for ``1m``."""
    return kind if spec == PRIMARY else f"{kind}@{spec}"
