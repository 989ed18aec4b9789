"""The report's per-rank section: what each data-parallel rank holds, by category, as
formulas in the degree DP (rank 0's, the most any rank holds) and, where everything is
bound, per class of ranks that hold the same."""

from __future__ import annotations

from dataclasses import dataclass

from memspec.passes.results import CATEGORY_TITLES
from memspec.report.model import Math, Row
from memspec.report.quantities import quantity
from memspec.report.sections import item_row
from memspec.result import CompileResult
from memspec.symbolic.bind import format_bytes

__all__ = ["RankItems", "RankRow", "Ranks", "ranks"]


@dataclass(frozen=True, slots=True)
class RankRow:
    """One category: rank 0's bytes, and each rank class's value."""

    key: str
    title: str
    formula: Math
    values: tuple[int | None, ...]  # per class, in `Ranks.classes` order

    @property
    def humans(self) -> tuple[str, ...]:
        return tuple(format_bytes(v) if v is not None else "" for v in self.values)


@dataclass(frozen=True, slots=True)
class RankItems:
    """A sharded category's items as the rank that holds the most holds them."""

    title: str
    description: str
    rows: tuple[Row, ...]


@dataclass(frozen=True, slots=True)
class Ranks:
    description: str
    largest: int  # the rank whose formulas are given: it holds the most
    classes: tuple[str, ...]  # each class's ranks, as text ("ranks 0-5", "rank 6")
    members: tuple[tuple[int, ...], ...]
    rows: tuple[RankRow, ...]
    total: RankRow
    items: tuple[RankItems, ...]


def _span(ranks: tuple[int, ...]) -> str:
    """Ranks as runs: `ranks 0-5, 7`, `rank 3`."""
    runs: list[list[int]] = []
    for r in ranks:
        if runs and r == runs[-1][-1] + 1:
            runs[-1].append(r)
        else:
            runs.append([r])
    text = ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs)
    return f"{'rank' if len(ranks) == 1 else 'ranks'} {text}"


def ranks(result: CompileResult) -> Ranks | None:
    """The per-rank section, or None on a single device."""
    found = result.ranks
    if found is None:
        return None
    classes = found.classes
    rows = tuple(
        RankRow(
            key,
            CATEGORY_TITLES[key],
            quantity(result, category.bytes),
            tuple(result.value(c.categories[key].bytes) for c in classes),
        )
        for key, category in found.largest.categories.items()
    )
    total = RankRow(
        "total",
        "Total",
        quantity(result, found.largest.bytes),
        tuple(result.value(c.bytes) for c in classes),
    )
    sharded = tuple(
        RankItems(
            CATEGORY_TITLES[key],
            category.description,
            tuple(item_row(result, i) for i in category.items),
        )
        for key, category in found.largest.categories.items()
        if category.items != result.categories[key].items  # sharded, or DDP's buckets added
    )
    return Ranks(
        found.parallel.describe(),
        found.largest.ranks[0],
        tuple(_span(c.ranks) for c in classes),
        tuple(c.ranks for c in classes),
        rows,
        total,
        sharded,
    )
