"""What a compile returns: every analysis's result, and the values that resolve them.

`CompileResult` is plain data for the report (`report/`), `solve`, `plot` and `verify`;
expressions are kept raw, and `resolve` applies the dims' defaults. Its `to_*` methods
render it, importing the report only when asked: the report reads results, never the
compile step.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from memspec.config import TrainConfig
from memspec.errors import UsageError
from memspec.hf_config import HfConfigUse
from memspec.ir.graph import Graph
from memspec.passes.expects import ExpectResult
from memspec.passes.flops import FlopsResult
from memspec.passes.peak import PeakResult, StepOptions
from memspec.passes.ranks import RanksResult
from memspec.passes.results import CATEGORY_TITLES, CategoryResult
from memspec.policies import Convention
from memspec.symbolic import bind
from memspec.symbolic.symbols import SymbolTable

__all__ = ["CATEGORY_TITLES", "CompileResult", "ExpectResult"]


@dataclass(frozen=True, kw_only=True)
class CompileResult:
    """Everything a report shows. Expressions are kept raw; `resolve` applies defaults."""

    spec: str
    model: str
    config: TrainConfig
    symbols: SymbolTable
    graph: Graph
    categories: dict[str, CategoryResult]
    conventions: dict[str, CategoryResult]  # activations under every declared convention
    convention_policies: dict[str, Convention]
    bindings: dict[sp.Symbol, int]
    preset: str | None
    variants_used: tuple[tuple[str, str], ...]
    expects: tuple[ExpectResult, ...]
    notes: tuple[str, ...] = ()  # the spec's `assume "..."` statements
    flops: FlopsResult | None = None
    training: tuple[float, float, int] | None = None  # (peak FLOP/s, MFU, steps)
    peak: PeakResult | None = None
    peak_unavailable: str | None = None  # why there is no peak, if there is none
    active: CategoryResult | None = None  # parameters one token uses, with expert banks
    ranks: RanksResult | None = None  # what each data-parallel rank holds
    step: StepOptions = StepOptions()  # the training loop modelled (and verify runs)
    rank_peaks: tuple[int | None, ...] = ()  # each rank class's true peak, where modelled
    # --mode inference: the K/V cache at the end of generation, (elements, bytes)
    kv_cache: tuple[sp.Expr, sp.Expr] | None = None
    checks: tuple[ExpectResult, ...] = ()  # `memspec check`'s stated answers
    hf_config: HfConfigUse | None = None  # --hf-config: what the config.json set

    def training_seconds(self) -> float | None:
        """Steps x FLOPs per step / (MFU x peak FLOP/s), when all of them are known."""
        if self.training is None or self.flops is None:
            return None
        per_step = self.value(self.flops.step)
        if per_step is None:
            return None
        peak, mfu, steps = self.training
        return steps * per_step / (mfu * peak)

    def resolve(self, expr: sp.Expr) -> sp.Expr:
        """`expr` with unbound defaults substituted (F -> 4*D), expanded."""
        return sp.expand(bind.resolve_defaults(expr, self.symbols, self.bindings))

    def substitutions(self) -> dict[sp.Symbol, sp.Integer]:
        """Every dim's concrete value: bound ones, then defaults; UsageError if one is free."""
        subs = {k: sp.Integer(v) for k, v in self.bindings.items()}
        for symbol, default in self.symbols.defaults().items():
            subs.setdefault(symbol, default.xreplace(subs))
        free = [
            d.symbol.name
            for d in self.symbols.ordered()
            if d.symbol not in subs or subs[d.symbol].free_symbols
        ]
        if free:
            raise UsageError(
                f"give a value to every dim (--set or --preset); unbound: {', '.join(free)}"
            )
        return subs

    def value(self, expr: sp.Expr) -> int | None:
        """The exact integer of `expr` under the bindings, or None if not fully bound."""
        return bind.evaluate(expr, self.symbols, self.bindings)

    @property
    def total_elements(self) -> sp.Expr:
        return sp.Add(*(c.elements for c in self.categories.values()))

    @property
    def total_bytes(self) -> sp.Expr:
        return sp.Add(*(c.bytes for c in self.categories.values()))

    def to_json(self) -> str:
        from memspec.report.render import render_json

        return render_json(self)

    def to_markdown(self) -> str:
        from memspec.report.render import render_markdown

        return render_markdown(self)

    def to_latex(self) -> str:
        from memspec.report.render import render_latex

        return render_latex(self)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def _summary(self) -> list[tuple[str, sp.Expr, int | None]]:
        """(title, bytes as a formula, its value when bound) of each category and the
        true peak: what a notebook shows compactly."""
        rows = [
            (CATEGORY_TITLES[k], c.bytes, self.value(c.bytes)) for k, c in self.categories.items()
        ]
        if self.peak is not None:
            rows.append(("True peak", self.peak.bytes, self.peak.value))
        return rows

    def _repr_latex_(self) -> str:
        """The categories' bytes and the true peak as one aligned display."""
        from memspec.symbolic.printers import latex

        lines = []
        for title, expr, value in self._summary():
            shown = latex(self.resolve(expr))
            if value is not None:
                shown += f" = {value:,}".replace(",", "{,}")
            lines.append(f"\\text{{{title}}} &= {shown}")
        return "$\\begin{aligned}" + " \\\\ ".join(lines) + "\\end{aligned}$"

    def _repr_html_(self) -> str:
        """A compact table: each category's bytes and the true peak, formula and value."""
        from html import escape

        from memspec.symbolic.printers import text

        rows = "".join(
            f"<tr><td>{escape(title)}</td><td><code>{escape(text(self.resolve(expr)))}</code>"
            f"</td><td>{'' if value is None else f'{value:,}'}</td></tr>"
            for title, expr, value in self._summary()
        )
        return (
            f"<table><caption>{escape(self.model)} (bytes)</caption>"
            f"<tr><th></th><th>formula</th><th>value</th></tr>{rows}</table>"
        )
