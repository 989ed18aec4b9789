"""CompileResult -> Report: the only code that orders, groups and formats numbers.

Order is the graph's (declaration and execution order) and the pipeline's; nothing is
sorted by hash, so the same spec always gives the same report. Each part of the report
has a builder of its own: `sections` (the categories, the summary, the conventions),
`peak` and `flops`; this module adds the front matter and assembles them.
"""

from __future__ import annotations

import sympy as sp

from memspec.ir.types import DType, Role
from memspec.lora import ADAPTER_A
from memspec.ops.quantized import QUANTIZED_MATMULS
from memspec.passes.parameters import FROZEN, trained_items
from memspec.passes.results import CATEGORY_TITLES
from memspec.recompute import describe_checkpoints
from memspec.report.flops import flops
from memspec.report.model import AssumptionRow, DecisionRow, Math, Report, SymbolRow
from memspec.report.peak import peak
from memspec.report.quantities import quantity
from memspec.report.ranks import ranks
from memspec.report.sections import comparison, section, summary
from memspec.result import CompileResult
from memspec.symbolic.printers import latex
from memspec.tensor_parallel import STYLES

__all__ = ["build_report"]


def _symbols(result: CompileResult) -> tuple[SymbolRow, ...]:
    rows = []
    for dim in result.symbols.ordered():
        if dim.symbol in result.bindings:
            value = f"{result.bindings[dim.symbol]:,}"
        elif dim.default is not None:
            value = f"default ${latex(dim.default)}$"
        else:
            value = ""
        rows.append(SymbolRow(Math(dim.symbol.name, dim.symbol), dim.long_name, value))
    return tuple(rows)


def _assumption_math(expr: sp.Expr) -> str:
    """`$2 H$ divides $D$` for the shape assumption that `D/(2H)` is an integer."""
    num, den = sp.fraction(sp.together(expr))
    if den != 1:
        return f"${latex(den)}$ divides ${latex(num)}$"
    return f"${latex(expr)}$ is an integer"


def _conditions(result: CompileResult) -> tuple[AssumptionRow, ...]:
    """The size conditions the graph assumes because the sizes they need are unbound."""
    why = "assumed: the sizes it needs are not bound (bind them to decide it)"
    return tuple(
        AssumptionRow(
            f"${latex(c.relation)}$, {why}", str(c.span) if c.span else "", f"{c.relation}, {why}"
        )
        for c in result.graph.conditions
    )


def _decisions(result: CompileResult) -> tuple[DecisionRow, ...]:
    rows = []
    for d in result.graph.decisions:
        math = ", ".join(f"${latex(k)} = {latex(v)}$" for k, v in d.facts)
        text = ", ".join(f"{k} = {v}" for k, v in d.facts)
        where = str(d.span) if d.span else ""
        rows.append(DecisionRow(math, text, d.subject, d.outcome, d.general, where))
    return tuple(rows)


def _active(result: CompileResult) -> tuple[Math, str | None] | None:
    if result.active is None:
        return None
    elements = quantity(result, result.active.elements)
    return elements, None if elements.value is None else f"{elements.value:,}"


def _trainable(result: CompileResult) -> tuple[Math, str | None]:
    """The trained parameters' elements, and PEFT's `print_trainable_parameters` line
    when some are frozen and every size is bound."""
    items = result.categories["parameters"].items
    trained = sp.Add(*(i.total_elements for i in trained_items(items)))
    elements = quantity(result, trained)
    if all(i.note != FROZEN for i in items):
        return elements, None
    # PEFT counts a packed 4-bit weight (uint8, two codes a byte) twice: its out x in
    packed = sp.Add(*(i.total_elements for i in items if i.dtype is DType.uint8))
    every = quantity(result, result.categories["parameters"].elements + packed)
    if elements.value is None or every.value is None:
        return elements, None
    share = 100 * elements.value / every.value
    line = (
        f"trainable params: {elements.value:,} || all params: {every.value:,} || "
        f"trainable%: {share:.4f}"
    )
    return elements, line


def build_report(result: CompileResult) -> Report:
    """The report model of a compile result."""
    config = result.config
    categories = result.categories
    trainable, trainable_line = _trainable(result)
    return Report(
        model=result.model,
        spec=result.spec,
        precision=config.precision.name,
        precision_rules=config.precision.describe(),
        optimizer=config.optimizer.name,
        optimizer_description=config.optimizer.description,
        convention=config.convention.name,
        convention_description=config.convention.description,
        convention_rules=config.convention.describe(),
        recompute=config.recompute.name,
        recompute_rules=describe_checkpoints(result.graph, config.recompute),
        variants=result.variants_used,
        preset=result.preset,
        bound=bool(result.bindings),
        symbols=_symbols(result),
        notes=result.notes,
        assumptions=tuple(
            AssumptionRow(_assumption_math(a.expr), str(a.span) if a.span else "", a.text)
            for a in result.graph.assumptions
        )
        + _conditions(result),
        expects=tuple(e.text for e in result.expects),
        summary=tuple(
            summary(result, CATEGORY_TITLES[k], c.elements, c.bytes) for k, c in categories.items()
        ),
        total=summary(result, "Total", result.total_elements, result.total_bytes),
        sections=tuple(section(result, k, c) for k, c in categories.items()),
        comparison=comparison(result),
        flops=flops(result),
        peak=peak(result),
        active=_active(result),
        decisions=_decisions(result),
        ranks=ranks(result),
        tensor_parallel=(
            config.parallel.describe_tp() if config.parallel.tensor_parallel else None
        ),
        tp_plan=tuple((path, style, STYLES[style].torch) for path, style in result.graph.tp_plan),
        trainable=trainable,
        trainable_line=trainable_line,
        lora=_lora(result),
        hf_config=_hf_config(result),
        weights=_weights(result),
        inference=_inference(result),
        peak_of="generation" if result.config.inference is not None else "a training step",
    )


def _hf_config(result: CompileResult) -> str | None:
    """--hf-config in words: each dim and the fields it came from, and every field no
    binding read (listed, never dropped silently)."""
    use = result.hf_config
    if use is None:
        return None
    dims = "; ".join(
        f"{name} = {value:,} ({', '.join(fields)})" for name, value, fields in use.dims
    )
    unused = ", ".join(use.unused) or "none"
    checked = f". Checked: {', '.join(use.checked)}" if use.checked else ""
    return f"{use.path} (model_type {use.model_type}): {dims}{checked}. Fields not used: {unused}"


def _inference(result: CompileResult) -> tuple[str, Math, tuple] | None:
    """--mode inference's loop in words, the K/V cache's bytes at its end, and under
    transformers' generate its own tensors at the peak (what, bytes), counted with the
    activations of the peak's moment."""
    run = result.config.inference
    if run is None or result.kv_cache is None:
        return None
    terms: tuple = ()
    winner = result.peak.winner() if result.peak is not None else None
    if run.loop == "generate" and winner is not None:
        from memspec.passes.peak.inference import generate_moments, moment_step

        step = moment_step(run, winner.phase, winner.where)
        during, outside = generate_moments(run, result.graph, step, result.bindings, winner.phase)
        chosen = next((t for where, t in outside if where == winner.where), during)
        terms = tuple((t.what, quantity(result, t.bytes)) for t in chosen)
    return run.describe(), quantity(result, result.kv_cache[1]), terms


def _weights(result: CompileResult) -> tuple[str, Math] | None:
    """--weights' format in words, and how many Linear modules it packs."""
    weights = result.config.weights
    if weights is None:
        return None
    graph = result.graph
    packed = sum(
        (graph.multiplicity(op.region) for op in graph.ops if op.op in QUANTIZED_MATMULS),
        sp.Integer(0),
    )
    return weights.describe(), quantity(result, packed)


def _lora(result: CompileResult) -> tuple[str, Math] | None:
    """--lora's settings in words, and how many Linear modules got adapters."""
    lora = result.config.lora
    if lora is None:
        return None
    graph = result.graph
    wrapped = sum(
        (
            graph.multiplicity(v.region)
            for v in graph.values
            if v.role is Role.PARAMETER and v.path.endswith(ADAPTER_A)
        ),
        sp.Integer(0),
    )
    return lora.describe(), quantity(result, wrapped)
