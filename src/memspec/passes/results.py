"""What passes return: line items with provenance, grouped into categories.

A `LineItem` is one tensor (or one class of tensors) a category counts: its path, shape,
dtype and how many copies exist (`regions`, outermost first: a parameter of a block
inside `repeat N` has `regions == (("layers", N),)`). A `CategoryResult` sums items and
also keeps the structure `N*(per-block) + rest` that a reader can check line by line.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from functools import reduce

import sympy as sp

from memspec.ir.graph import Graph
from memspec.ir.types import DType, Shape, numel
from memspec.source import Span

__all__ = ["CATEGORY_TITLES", "CategoryResult", "LineItem", "Regions", "regions_of"]

# The memory categories the textbook sum adds up, in pipeline order, with their titles.
CATEGORY_TITLES = {
    "parameters": "Parameters",
    "gradients": "Gradients",
    "optimizer_state": "Optimizer state",
    "activations": "Activations",
    "buffers": "Buffers",
}
Regions = tuple[tuple[str, sp.Expr], ...]


def regions_of(graph: Graph, region_id: int | None) -> Regions:
    """(path, count) of each region enclosing `region_id`, outermost first."""
    return tuple((r.path, r.count) for r in graph.region_chain(region_id))


@dataclass(frozen=True, slots=True)
class LineItem:
    path: str
    shape: Shape
    dtype: DType
    regions: Regions = ()
    note: str = ""
    extra: sp.Expr = sp.Integer(1)  # a further factor (e.g. N - 1 for carried tensors)
    key: str = ""  # what `memspec verify` measures it as; defaults to `path`
    span: Span | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def elements(self) -> sp.Expr:
        """Elements of one copy."""
        return numel(self.shape)

    @property
    def multiplicity(self) -> sp.Expr:
        return reduce(sp.Mul, (count for _, count in self.regions), self.extra)

    @property
    def total_elements(self) -> sp.Expr:
        return self.elements * self.multiplicity

    @property
    def bytes(self) -> sp.Expr:
        return self.total_elements * self.dtype.itemsize


@dataclass(frozen=True)
class CategoryResult:
    """One memory category (parameters, gradients, ...) and its items in graph order.
    Its totals are summed once (a report reads them often; a layer may have 10,000
    parameters)."""

    name: str
    items: tuple[LineItem, ...]
    description: str = ""

    @functools.cached_property
    def elements(self) -> sp.Expr:
        return sp.expand(sp.Add(*(i.total_elements for i in self.items)))

    @functools.cached_property
    def bytes(self) -> sp.Expr:
        return sp.expand(sp.Add(*(i.bytes for i in self.items)))

    def structured(self, weight=lambda item: sp.Integer(1)) -> sp.Expr:
        """The total kept in region structure: `N*(block items) + other items`.

        Each region's subtotal is multiplied by its count, so the structure exists by
        construction rather than by factoring. `weight(item)` scales each item (bytes
        per element for a byte count).
        """
        return _structured(self.items, 0, weight)

    def dtypes(self) -> tuple[DType, ...]:
        return tuple(dict.fromkeys(i.dtype for i in self.items))


def _structured(items, depth: int, weight) -> sp.Expr:
    terms = []  # summed at once: adding one at a time is quadratic in the items
    groups: dict[tuple[str, sp.Expr], list[LineItem]] = {}
    for item in items:
        if len(item.regions) > depth:
            groups.setdefault(item.regions[depth], []).append(item)
        else:
            terms.append(sp.expand(item.elements * item.extra * weight(item)))
    for (_, count), members in groups.items():
        terms.append(count * _structured(members, depth + 1, weight))
    return sp.Add(*terms)
