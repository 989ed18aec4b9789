"""`--grid B=1,2,4,8 --grid L=1024:8192:x2`: the values a sweep takes, read and counted.

A grid is the product of its axes. Each axis is a dim's name and a list of items, each a
value or a range: `a:b` (a to b in steps of 1), `a:b:k` or `a:b:+k` (steps of k) and
`a:b:xk` (a, a*k, a*k^2, ... up to b), both ends included. An axis's length is worked out
before any value is made, so a grid too large to evaluate is refused with the limit
stated and never allocated.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from memspec.errors import UsageError

__all__ = ["MAX_POINTS", "Axis", "parse_axis", "points"]

# The most points one sweep evaluates: ten million points of a few int64 columns each
# stay under a gigabyte, and take seconds, not minutes.
MAX_POINTS = 10_000_000

_NUMBER = r"[0-9][0-9_]*"
_ITEM = re.compile(rf"^({_NUMBER})(?::({_NUMBER})(?::([+x]?)({_NUMBER}))?)?$")


@dataclass(frozen=True, slots=True)
class Axis:
    name: str  # as the user wrote it (a symbol or a long name)
    values: tuple[int, ...]  # distinct, in the order given


def _number(text: str, where: str) -> int:
    from memspec.symbolic.bind import MAX_VALUE

    value = int(text.replace("_", ""))
    if value <= 0:
        raise UsageError(f"{where}: sizes are positive, got {value}")
    if value > MAX_VALUE:
        raise UsageError(f"{where}: {value} is larger than any model size ({MAX_VALUE:.0e})")
    return value


def _item(text: str, where: str) -> range | list[int]:
    """One item's values, lazily where it is a range (its length known without them)."""
    match = _ITEM.match(text.strip())
    if match is None:
        raise UsageError(
            f"{where}: {text.strip()!r} is not a value or a range (a:b, a:b:k, a:b:xk)"
        )
    start_text, stop_text, kind, step_text = match.groups()
    start = _number(start_text, where)
    if stop_text is None:
        return [start]
    stop = _number(stop_text, where)
    if stop < start:
        raise UsageError(f"{where}: the range {text.strip()} ends below its start")
    step = _number(step_text, where) if step_text is not None else 1
    if kind == "x":
        if step < 2:
            raise UsageError(f"{where}: a geometric range needs a factor of 2 or more")
        values = [start]
        while values[-1] * step <= stop:
            values.append(values[-1] * step)
        return values  # at most log2(MAX_VALUE) + 1 values
    return range(start, stop + 1, step)


def parse_axis(text: str, limit: int = MAX_POINTS) -> tuple[Axis, int]:
    """`B=1,2,4:16:x2` -> (Axis("B", (1, 2, 4, 8, 16)), 5). An axis longer than `limit`
    is refused before its values are made."""
    where = f"--grid {text}"
    name, sep, body = text.partition("=")
    name = name.strip()
    if not sep or not name or not body.strip():
        raise UsageError(f"{where}: expected NAME=VALUES, e.g. --grid B=1,2,4,8")
    items = [_item(part, where) for part in body.split(",")]
    length = sum(len(item) for item in items)
    if length > limit:
        raise UsageError(
            f"{where}: {length:,} values, more than the {limit:,} points a sweep evaluates"
        )
    values = tuple(dict.fromkeys(v for item in items for v in item))
    return Axis(name, values), len(values)


def points(axes: tuple[Axis, ...]) -> int:
    """The number of points of the grid, refused above MAX_POINTS."""
    count = math.prod(len(a.values) for a in axes)
    if count > MAX_POINTS:
        sizes = " x ".join(f"{len(a.values):,} {a.name}" for a in axes)
        raise UsageError(
            f"--grid: {sizes} is {count:,} points, more than the {MAX_POINTS:,} a sweep "
            "evaluates; take fewer values (a geometric range a:b:x2 covers a span in few)"
        )
    return count
