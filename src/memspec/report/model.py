"""The report model: everything a report says, as frozen data with math pre-rendered.

Math strings are LaTeX (GitHub's Markdown math is LaTeX too); names are raw and each
template escapes them for its format. Only `report/build.py` creates these.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Comparison",
    "ComparisonRow",
    "FlopRow",
    "Flops",
    "Group",
    "Peak",
    "PeakMoment",
    "PeakRow",
    "Report",
    "Row",
    "Section",
    "SummaryRow",
    "SymbolRow",
]


@dataclass(frozen=True, slots=True)
class Row:
    """One line item: a tensor (or class of tensors) and its count."""

    name: str
    shape: str
    dtype: str
    elements: str  # of one copy
    copies: str
    note: str
    value: str | None  # total elements of all copies, when bound


@dataclass(frozen=True, slots=True)
class Group:
    """Items sharing a repeat region; `title` empty for items outside any region."""

    title: str
    count: str  # the region's multiplicity, as math ("" outside regions)
    rows: tuple[Row, ...]
    subtotal: str  # elements of one repetition


@dataclass(frozen=True, slots=True)
class Section:
    key: str
    title: str
    description: str
    groups: tuple[Group, ...]
    structured: str
    expanded: str
    bytes_terms: tuple[tuple[str, int, str], ...]  # (dtype, bytes per element, elements)
    bytes: str
    value_elements: str | None
    value_bytes: str | None
    value_human: str | None


@dataclass(frozen=True, slots=True)
class SymbolRow:
    symbol: str  # math
    name: str
    value: str  # "", a bound integer, or "default ..." as math-bearing text


@dataclass(frozen=True, slots=True)
class SummaryRow:
    title: str
    elements: str
    bytes: str
    value_bytes: str | None
    value_human: str | None


@dataclass(frozen=True, slots=True)
class ComparisonRow:
    name: str
    cells: tuple[tuple[str, str], ...]  # per convention: (elements of all copies, note)


@dataclass(frozen=True, slots=True)
class Comparison:
    """Activations under every convention, side by side, and what differs."""

    conventions: tuple[tuple[str, str, str], ...]  # (name, description, what it counts)
    totals: tuple[str, ...]
    differences: tuple[str, ...]  # each convention minus the one in force
    values: tuple[str | None, ...]
    rows: tuple[ComparisonRow, ...]


@dataclass(frozen=True, slots=True)
class FlopRow:
    name: str
    op: str
    forward: str
    backward: str
    copies: str


@dataclass(frozen=True, slots=True)
class Flops:
    """The training step's matrix-product FLOPs, and the training time if asked for."""

    rows: tuple[FlopRow, ...]
    structured: str
    forward: str
    backward: str
    total: str
    values: tuple[str, str, str] | None  # forward, backward, total, formatted
    training: str | None
    optimizer: str | None = None  # the optimizer step's FLOPs, as math
    optimizer_rule: str | None = None  # how many per element, in words
    step: str | None = None  # forward + backward + optimizer, as math
    step_value: str | None = None


@dataclass(frozen=True, slots=True)
class PeakRow:
    """One category: the textbook sum's term, the peak's, and why they differ."""

    title: str
    summed: str  # math; "" for a category the sum has none of (temporaries)
    at_peak: str  # math, or "" when the peak's moment depends on the sizes
    value_summed: str | None
    value_at_peak: str | None
    why: str
    difference: str = ""  # math: at the peak minus summed
    value_difference: str | None = None


@dataclass(frozen=True, slots=True)
class PeakMoment:
    label: str
    bytes: str  # math
    value: str | None


@dataclass(frozen=True, slots=True)
class Peak:
    """The true peak of a training step beside the textbook sum."""

    options: str
    moment: str | None  # where the step peaks, when known
    rows: tuple[PeakRow, ...]
    total_summed: str
    total_at_peak: str
    value_summed: str | None
    value_at_peak: str | None
    gap: str | None  # the sum minus the peak, in words, with the values
    total_difference: str
    moments: tuple[PeakMoment, ...]  # the candidates, largest first
    more: int  # candidates not listed
    assumptions: tuple[str, ...]
    unavailable: str | None


@dataclass(frozen=True, slots=True)
class Report:
    model: str
    spec: str
    precision: str
    precision_rules: str
    optimizer: str
    optimizer_description: str
    convention: str
    convention_description: str
    convention_rules: str
    variants: tuple[tuple[str, str], ...]
    preset: str | None
    symbols: tuple[SymbolRow, ...]
    notes: tuple[str, ...]  # the spec's own `assume "..."` statements, plain text
    assumptions: tuple[tuple[str, str], ...]  # (math text, location)
    expects: tuple[str, ...]
    summary: tuple[SummaryRow, ...]
    total: SummaryRow
    sections: tuple[Section, ...]
    comparison: Comparison
    flops: Flops
    peak: Peak
    # parameters one token uses (mixtures of experts): (elements as math, value or None)
    active: tuple[str, str | None] | None = None
