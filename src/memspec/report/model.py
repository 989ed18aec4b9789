"""The report model: everything a report says, as frozen data with math pre-rendered.

Math strings are LaTeX (GitHub's Markdown math is LaTeX too); names are raw and each
template escapes them for its format. What the JSON report carries as well is a `Math`:
the expression's text (sympy's `str`), its LaTeX and, where the JSON lists it, its exact
value. Only `report/build.py` (and the section builders it calls) creates these.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

__all__ = [
    "AssumptionRow",
    "Comparison",
    "ComparisonRow",
    "FlopRow",
    "Flops",
    "Group",
    "Math",
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
class Math:
    """One expression, printed for JSON (`text`) and for Markdown and LaTeX (`latex`).

    The LaTeX is printed when first read: JSON, a tool's format that a command line
    asks for cold, never reads it, and sympy's LaTeX printer is the slowest part of a
    report (`expr` is None where the LaTeX was given)."""

    text: str
    expr: sp.Expr | None = field(compare=False)
    value: int | None = None  # its exact integer under the bindings, where JSON lists it
    given: str | None = field(default=None, compare=False)

    @property
    def latex(self) -> str:
        if self.given is not None:
            return self.given
        from memspec.symbolic.printers import latex  # memoized

        return latex(self.expr)


@dataclass(frozen=True, slots=True)
class Row:
    """One line item: a tensor (or class of tensors) and its count."""

    name: str
    shape: str
    dims: tuple[str, ...]  # the shape's dims as text, for JSON
    dtype: str
    elements: Math  # of one copy
    copies: Math
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
    rows: tuple[Row, ...]  # in the category's order
    groups: tuple[Group, ...]  # the same rows, grouped by repeat region
    structured: str
    expanded: Math  # the elements
    bytes_terms: tuple[tuple[str, int, str], ...]  # (dtype, bytes per element, elements)
    bytes: Math
    value_elements: str | None
    value_bytes: str | None
    value_human: str | None


@dataclass(frozen=True, slots=True)
class SymbolRow:
    symbol: Math
    name: str
    value: str  # "", a bound integer, or "default ..." as math-bearing text


@dataclass(frozen=True, slots=True)
class SummaryRow:
    title: str
    elements: Math
    bytes: Math
    value_bytes: str | None
    value_human: str | None


@dataclass(frozen=True, slots=True)
class AssumptionRow:
    """A shape assumption (`H divides D`): as math, where it arises, and as plain text."""

    math: str  # text with embedded `$math$`
    where: str  # the location, or ""
    text: str


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """A view, saved copy or gradient decided at the bound sizes that differs for general
    ones: the sizes as math and as text, the value or op, both outcomes, the location."""

    math: str  # `$B = 1$`
    text: str  # `B = 1`
    subject: str
    outcome: str
    general: str
    where: str

    @property
    def plain(self) -> str:
        return f"at {self.text}, {self.subject} {self.outcome}; for general sizes, {self.general}"


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
    forward: Math
    backward: Math
    copies: Math


@dataclass(frozen=True, slots=True)
class Flops:
    """The training step's matrix-product FLOPs, and the training time if asked for."""

    rows: tuple[FlopRow, ...]
    structured: str
    forward: Math
    backward: Math
    total: Math
    optimizer: Math  # the optimizer step's FLOPs
    step: Math  # forward + backward + optimizer
    values: tuple[str, str, str] | None  # forward, backward, total, formatted
    step_value: str | None
    optimizer_rule: str | None  # how many per element, in words; None: no rule
    training: str | None
    training_seconds: float | None
    # the forward FLOPs backward runs again, and the total with them; None: none
    recompute: Math | None = None
    with_recompute: Math | None = None


@dataclass(frozen=True, slots=True)
class PeakRow:
    """One category: the textbook sum's term, the peak's, and why they differ."""

    key: str
    title: str
    summed: str  # math; "" for a category the sum has none of (temporaries)
    at_peak: Math | None  # None when the peak's moment depends on the sizes
    value_summed: str | None
    value_at_peak: str | None
    why: str
    difference: str = ""  # math: at the peak minus summed
    value_difference: str | None = None


@dataclass(frozen=True, slots=True)
class PeakMoment:
    label: str
    bytes: Math
    value: str | None


@dataclass(frozen=True, slots=True)
class Peak:
    """The true peak of a training step beside the textbook sum, or why there is none."""

    unavailable: str | None
    options: str = ""
    step: tuple[tuple[str, bool | int | str], ...] = ()  # the step's options, by name
    moment: str | None = None  # where the step peaks, when known
    rows: tuple[PeakRow, ...] = ()
    total_summed: str = ""
    total_at_peak: str = ""
    value_summed: str | None = None
    value_at_peak: str | None = None
    gap: str | None = None  # the sum minus the peak, in words, with the values
    total_difference: str = ""
    candidates: tuple[PeakMoment, ...] = ()  # every moment that can be the peak
    moments: tuple[PeakMoment, ...] = ()  # those a report lists, largest first
    more: int = 0  # candidates not listed
    assumptions: tuple[str, ...] = ()
    value: int | None = None  # the peak's bytes, when every size is bound
    # math: the Max over the candidates when the sizes decide among a few (the summary's)
    max_formula: str = ""


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
    recompute: str
    recompute_rules: str  # "" without recomputation
    variants: tuple[tuple[str, str], ...]
    preset: str | None
    bound: bool  # some dim has a value (JSON then lists the values it can)
    symbols: tuple[SymbolRow, ...]
    notes: tuple[str, ...]  # the spec's own `assume "..."` statements, plain text
    assumptions: tuple[AssumptionRow, ...]
    expects: tuple[str, ...]
    summary: tuple[SummaryRow, ...]
    total: SummaryRow
    sections: tuple[Section, ...]
    comparison: Comparison
    flops: Flops
    peak: Peak
    # parameters one token uses (mixtures of experts): (elements, formatted value or None)
    active: tuple[Math, str | None] | None = None
    # decisions taken at the bound sizes that differ from the general ones
    decisions: tuple[DecisionRow, ...] = ()
    # what each data-parallel rank holds (report.ranks.Ranks), None on one device
    ranks: object | None = None
    # tensor parallelism: the configuration in words, and each planned member as
    # (path, style, torch's style); None without
    tensor_parallel: str | None = None
    lora: tuple[str, Math] | None = None  # --lora's settings, the Linear modules wrapped
    hf_config: str | None = None  # --hf-config: the dims the config set, the fields unused
    weights: tuple[str, Math] | None = None  # --weights' format, the Linear modules packed
    # --mode inference's loop, the cache at its end, generate's own tensors at the peak
    inference: tuple[str, Math, tuple[tuple[str, Math], ...]] | None = None
    peak_of: str = "a training step"  # what the true peak is the peak of
    tp_plan: tuple[tuple[str, str, str], ...] = ()
    # the parameters the optimizer trains (requires_grad), and PEFT's line for them when
    # some are frozen (None when none is)
    trainable: Math | None = None
    trainable_line: str | None = None
