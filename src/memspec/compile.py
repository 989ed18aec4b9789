"""The whole pipeline behind one call: spec -> program -> IR -> passes -> `CompileResult`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sympy as sp

from memspec.config import TrainConfig, resolve_config
from memspec.elaborate import elaborate
from memspec.errors import ExpectError, UsageError
from memspec.ir.graph import Graph
from memspec.passes import run_pipeline
from memspec.passes.activations import count_activations_under
from memspec.passes.active_parameters import count_active_parameters
from memspec.passes.flops import FlopsResult, count_flops
from memspec.passes.peak import PeakResult, PeakUnavailable, StepOptions, peak_memory
from memspec.passes.results import CategoryResult
from memspec.policies import Convention, read_convention
from memspec.source import SourceFile
from memspec.symbolic import bind
from memspec.symbolic.symbols import SymbolTable
from memspec.syntax.imports import Program, load_program, read_source

__all__ = ["CATEGORY_TITLES", "CompileResult", "ExpectResult", "compile_spec"]

CATEGORY_TITLES = {
    "parameters": "Parameters",
    "gradients": "Gradients",
    "optimizer_state": "Optimizer state",
    "activations": "Activations",
    "buffers": "Buffers",
}
_QUANTITIES = {
    "params": "parameters",
    **{k: k for k in CATEGORY_TITLES},
    "total": "total",
    "active_params": "active_parameters",  # not a category: passes/active_parameters.py
}


@dataclass(frozen=True)
class ExpectResult:
    text: str
    holds: bool


@dataclass(frozen=True)
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


def _source(spec: str | Path) -> tuple[SourceFile, Path | None]:
    if isinstance(spec, Path) or ("\n" not in spec and spec.endswith(".mspec")):
        path = Path(spec)
        return read_source(path, str(spec)), path
    return SourceFile("<spec>", spec), None


def _preset_bindings(
    program: Program, symbols: SymbolTable, name: str | None, evaluate
) -> dict[sp.Symbol, int]:
    if name is None:
        return {}
    if name not in program.presets:
        known = ", ".join(sorted(program.presets)) or "none"
        raise UsageError(f"unknown preset {name!r} (this spec has: {known})")
    bindings = {}
    for key, expr, span in program.presets[name].bindings:
        dim = symbols.lookup(key)
        if dim is None:
            raise UsageError(f"preset {name}: {key!r} is not a dim", span)
        value = evaluate(expr)
        bindings[dim.symbol] = bind.check_value(key, value, span, f"preset {name}")
    return bindings


def compile_spec(
    spec: str | Path,
    *,
    set: dict[str, int] | list[str] | None = None,
    preset: str | None = None,
    convention: str | None = None,
    optimizer: str | None = None,
    precision: str | None = None,
    use: tuple[str, ...] | list[str] = (),
    peak_flops: float | None = None,
    mfu: float = 0.5,
    steps: int | None = None,
    step: StepOptions | None = None,
) -> CompileResult:
    """Compile a spec (a path, or spec text) into a `CompileResult`.

    `set` binds symbols to integers (`{"B": 4}` or `["B=4"]`, symbols or long names) and
    wins over `preset`. With `peak_flops` (FLOP/s of the accelerator) and `steps`, the
    report also gives the training time at model FLOPs utilization `mfu`. `step` sets
    the training loop whose true peak is modelled (`StepOptions()`: steady state,
    `zero_grad(set_to_none=True)`, no accumulation, for-loop optimizer). Raises
    `MemspecError` for any problem with the input.
    """
    step = step or StepOptions()
    if step.grad_accum < 1:
        raise UsageError("--grad-accum must be at least 1")
    training = None
    if peak_flops is not None or steps is not None:
        if peak_flops is None or steps is None or peak_flops <= 0 or steps <= 0 or not 0 < mfu <= 1:
            raise UsageError("training time needs --peak-flops > 0, --steps > 0 and 0 < --mfu <= 1")
        training = (float(peak_flops), float(mfu), int(steps))
    source, path = _source(spec)
    program = load_program(source, path)
    config = resolve_config(program, precision, optimizer, convention, tuple(use))
    elab = elaborate(program, config)
    symbols = elab.symbols
    bindings = _preset_bindings(program, symbols, preset, elab.evaluate)
    items = [f"{k}={v}" for k, v in set.items()] if isinstance(set, dict) else list(set or [])
    bindings.update(bind.parse_set(symbols, items))
    bind.check_assumptions(elab.graph.assumptions, symbols, bindings)
    categories = run_pipeline(elab.graph, config)
    policies = {name: read_convention(decl) for name, decl in program.conventions.items()}
    conventions = {
        name: count_activations_under(elab.graph, policy) for name, policy in policies.items()
    }
    expects = _check_expects(program, symbols, elab, categories)
    peak, unavailable = None, None
    try:
        peak = peak_memory(
            elab.graph,
            config,
            categories,
            step,
            bindings,
            lambda e: sp.expand(bind.resolve_defaults(e, symbols, bindings)),
        )
    except PeakUnavailable as err:
        unavailable = str(err)
    return CompileResult(
        source.name,
        elab.graph.model,
        config,
        symbols,
        elab.graph,
        categories,
        conventions,
        policies,
        bindings,
        preset,
        elab.variants_used,
        expects,
        tuple(a.text for a in program.assumes),
        count_flops(elab.graph, config, categories["parameters"].elements),
        training,
        peak,
        unavailable,
        count_active_parameters(elab.graph)
        if any(r.active is not None for r in elab.graph.regions)
        else None,
    )


def _check_expects(program, symbols, elab, categories) -> tuple[ExpectResult, ...]:
    results = []
    for expect in program.expects:
        quantity = _QUANTITIES.get(expect.quantity)
        if quantity is None:
            raise UsageError(
                f"cannot expect {expect.quantity!r}; expected one of {', '.join(_QUANTITIES)}",
                expect.span,
            )
        if quantity == "total":
            got = sp.Add(*(c.elements for c in categories.values()))
        elif quantity == "active_parameters":
            got = count_active_parameters(elab.graph).elements
        else:
            got = categories[quantity].elements
        want = elab.evaluate(expect.value)
        bindings = _preset_bindings(program, symbols, expect.preset, elab.evaluate)
        got_v = bind.resolve_defaults(got, symbols, bindings).xreplace(
            {k: sp.Integer(v) for k, v in bindings.items()}
        )
        want_v = bind.resolve_defaults(want, symbols, bindings).xreplace(
            {k: sp.Integer(v) for k, v in bindings.items()}
        )
        at = f" at {expect.preset}" if expect.preset else ""
        if sp.expand(got_v - want_v) != 0:
            shown = f"{int(got_v):,}" if got_v.is_Integer else str(sp.expand(got_v))
            raise ExpectError(
                f"expect failed: {expect.quantity}{at} is {shown}, not "
                f"{want_v if not want_v.is_Integer else format(int(want_v), ',')}",
                expect.span,
            )
        value = f"{int(want_v):,}" if want_v.is_Integer else str(want)
        results.append(ExpectResult(f"{expect.quantity} == {value}{at}", True))
    return tuple(results)
