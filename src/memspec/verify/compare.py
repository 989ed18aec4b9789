"""Prediction against measurement, item by item: the table `memspec verify` prints."""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass

from memspec.lower.values import concrete, indexed_path
from memspec.passes.results import CategoryResult, LineItem
from memspec.result import CompileResult
from memspec.verify.measure import Measurement

__all__ = ["Row", "Table", "compare"]


@dataclass(frozen=True)
class Row:
    name: str
    predicted: int | None  # None: measured but not predicted
    measured: int | None  # None: predicted but not measured

    @property
    def difference(self) -> int:
        return (self.measured or 0) - (self.predicted or 0)


@dataclass(frozen=True)
class Table:
    category: str
    unit: str  # "elements" or "bytes"
    rows: tuple[Row, ...]

    @property
    def predicted(self) -> int:
        return sum(r.predicted or 0 for r in self.rows)

    @property
    def measured(self) -> int:
        return sum(r.measured or 0 for r in self.rows)

    @property
    def ok(self) -> bool:
        return all(r.difference == 0 for r in self.rows)


def _concrete_names(result: CompileResult, item: LineItem, suffix: str) -> list[str]:
    """The torch names of every copy of a parameter-like item."""
    base = item.path[: len(item.path) - len(suffix)] if suffix else item.path
    regions = [r for r in result.graph.regions if (r.path, r.count) in item.regions]
    chain = tuple(sorted(regions, key=lambda r: r.path.count(".")))
    counts = [range(concrete(r.count, result.substitutions())) for r in chain]
    return [indexed_path(base, chain, idx) + suffix for idx in itertools.product(*counts)]


def _by_item(
    result: CompileResult, category: CategoryResult, measured: dict[str, int], suffix_of
) -> Table:
    rows, claimed = [], set()
    subs = result.substitutions()
    for item in category.items:
        suffix = suffix_of(item)
        names = _concrete_names(result, item, suffix)
        claimed.update(names)
        got = [measured[n] for n in names if n in measured]
        predicted = int(item.total_elements.xreplace(subs))
        rows.append(Row(item.path, predicted, sum(got) if got else None))
    rows += [Row(n, None, v) for n, v in measured.items() if n not in claimed]
    return Table(category.name, "elements", tuple(rows))


def _activations(
    result: CompileResult, category: CategoryResult, measured: dict[str, int]
) -> Table:
    subs = result.substitutions()
    predicted: dict[str, int] = defaultdict(int)
    for item in category.items:
        predicted[item.key or item.path] += int(item.bytes.xreplace(subs))
    rows = [Row(k, v, measured.get(k)) for k, v in predicted.items()]
    rows += [Row(k, None, v) for k, v in measured.items() if k not in predicted]
    return Table("activations", "bytes", tuple(rows))


def compare(result: CompileResult, measured: Measurement) -> list[Table]:
    """One table per category: parameters, buffers, gradients, optimizer state, activations."""
    c = result.categories
    states = result.config.optimizer.states

    def state_suffix(item: LineItem) -> str:
        return "." + item.path.rsplit(".", 1)[1] if item.path.rsplit(".", 1)[1] in states else ""

    return [
        _by_item(result, c["parameters"], measured.parameters, lambda i: ""),
        _by_item(result, c["buffers"], measured.buffers, lambda i: ""),
        _by_item(result, c["gradients"], measured.gradients, lambda i: ".grad"),
        _by_item(result, c["optimizer_state"], measured.optimizer_state, state_suffix),
        _activations(result, c["activations"], measured.activation_bytes),
    ]
