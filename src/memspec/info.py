"""`memspec info SPEC`: what a spec declares and offers, before any report.

Its model; its dims (symbol, long name, default); its presets with the values they
give; the implementation variants of the bodies the model runs, which one is used and
the `use` that picks each; the precisions, optimizers and conventions it can be
compiled under (and which the train block picks); its `expect`s; the config.json
model_types its `hf_config` blocks read (`--hf-config`). The spec is loaded
and elaborated, not analysed, so this is quick even for a large model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from memspec.config import resolve_config
from memspec.elaborate import elaborate
from memspec.policies import read_convention, read_optimizer, read_precision
from memspec.source import Span
from memspec.symbolic import bind
from memspec.syntax import decls as d
from memspec.syntax.imports import Program, load_program, read_source

__all__ = ["SpecInfo", "render_info_json", "render_info_text", "spec_info"]


@dataclass(frozen=True)
class Choice:
    """A named policy: what it is, and whether the spec's configuration picks it."""

    name: str
    description: str
    chosen: bool


@dataclass(frozen=True)
class Variants:
    """The implementations of one fn or layer forward (`variant math { ... }`)."""

    body: str
    available: tuple[str, ...]
    used: str
    picked_by: str  # "--use", "the train block" or "the default (the first)"


@dataclass(frozen=True)
class SpecInfo:
    spec: str
    model: str
    dims: tuple[tuple[str, str, str | None], ...]  # (symbol, long name, default)
    presets: tuple[tuple[str, tuple[tuple[str, int], ...]], ...]  # name, (symbol, value)
    variants: tuple[Variants, ...]
    precisions: tuple[Choice, ...]
    optimizers: tuple[Choice, ...]
    conventions: tuple[Choice, ...]
    expects: tuple[str, ...]
    recomputes: tuple[Choice, ...] = ()
    hf_configs: tuple[str, ...] = ()  # the config.json model_types --hf-config reads


def span_text(span: Span | None) -> str:
    """The spec text a span covers, on one line."""
    if span is None:
        return ""
    lines = span.source.text.split("\n")[span.line - 1 : span.end_line]
    if len(lines) == 1:
        return lines[0][span.col - 1 : span.end_col - 1]
    parts = [lines[0][span.col - 1 :], *lines[1:-1], lines[-1][: span.end_col - 1]]
    return " ".join(p.strip() for p in parts)


def _bodies(program: Program) -> dict[str, d.Body]:
    """Every fn's body and layer's forward body, by the name variants are recorded under."""
    bodies = {name: fn.body for name, fn in program.fns.items()}
    for name, layer in program.layers.items():
        for stmt in layer.body:
            if isinstance(stmt, d.LayerForward):
                bodies.setdefault(name, stmt.body)
    return bodies


def spec_info(spec: str | Path, use: tuple[str, ...] = ()) -> SpecInfo:
    """Load and elaborate `spec` (a path) and describe it; `use` as `--use` gives it."""
    path = Path(spec)
    source = read_source(path, str(spec))
    program = load_program(source, path)
    config = resolve_config(program, variants=tuple(use))
    elab = elaborate(program, config)
    dims = tuple(
        (dim.symbol.name, dim.long_name, None if dim.default is None else str(dim.default))
        for dim in elab.symbols.ordered()
    )
    presets = []
    for name in program.presets:
        values = bind.preset_bindings(program.presets, elab.symbols, name, elab.evaluate)
        presets.append((name, tuple((s.name, v) for s, v in values.items())))
    bodies = _bodies(program)
    variants = []
    for name, used in elab.variants_used:
        picked_by = "--use" if used in use else "the default (the first)"
        if used not in use and used in config.variants:
            picked_by = "the train block"
        available = tuple(v for v, _ in bodies[name].variants) if name in bodies else (used,)
        variants.append(Variants(name, available, used, picked_by))

    def choices(table: dict, describe, chosen: str) -> tuple[Choice, ...]:
        return tuple(Choice(k, describe(decl), k == chosen) for k, decl in sorted(table.items()))

    return SpecInfo(
        spec=source.name,
        model=elab.graph.model,
        dims=dims,
        presets=tuple(presets),
        variants=tuple(variants),
        precisions=choices(
            program.precisions, lambda p: read_precision(p).describe(), config.precision.name
        ),
        optimizers=choices(
            program.optimizers,
            lambda o: read_optimizer(o, program.optimizers).description,
            config.optimizer.name,
        ),
        conventions=choices(
            program.conventions, lambda c: read_convention(c).description, config.convention.name
        ),
        expects=tuple(span_text(e.span) for e in program.expects),
        recomputes=choices(program.recomputes, lambda r: r.description, config.recompute.name),
        hf_configs=tuple(t for decl in program.hf_configs for t in decl.model_types),
    )


def _table(rows: list[tuple[str, ...]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [
        indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
        for r in rows
    ]


def render_info_text(info: SpecInfo) -> str:
    out = [f"model {info.model} ({info.spec})", "", "dims (bind with --set SYMBOL=VALUE):"]
    rows = [(s, long, f"default {dflt}" if dflt else "no default") for s, long, dflt in info.dims]
    out += _table(rows) if rows else ["  none"]
    out += ["", "presets (pick with --preset NAME):"]
    for name, values in info.presets:
        out.append(f"  {name}: " + ", ".join(f"{s} = {v:_}" for s, v in values))
    if not info.presets:
        out.append("  none")
    out += ["", "variants (pick with --use NAME, or `use NAME` in the train block):"]
    for v in info.variants:
        others = ", ".join(f"use {a}" for a in v.available if a != v.used)
        out.append(f"  {v.body}: {v.used} (by {v.picked_by}); also {others or 'none'}")
    if not info.variants:
        out.append("  none: every body the model runs has one implementation")
    for title, flag, options in (
        ("precisions", "--precision", info.precisions),
        ("optimizers", "--optimizer", info.optimizers),
        ("conventions", "--convention", info.conventions),
        ("recomputation", "--recompute", info.recomputes),
    ):
        out += ["", f"{title} (pick with {flag} NAME; * the spec's):"]
        out += _table([(("* " if c.chosen else "  ") + c.name, c.description) for c in options])
    out += ["", "expects:"]
    out += [f"  {e}" for e in info.expects] or ["  none"]
    out += ["", "config.json model_types (--hf-config):"]
    out.append(f"  {', '.join(info.hf_configs)}" if info.hf_configs else "  none")
    return "\n".join(out) + "\n"


def render_info_json(info: SpecInfo) -> str:
    doc = asdict(info)
    doc["dims"] = [{"symbol": s, "name": n, "default": dflt} for s, n, dflt in info.dims]
    doc["presets"] = {name: dict(values) for name, values in info.presets}
    return json.dumps(doc, indent=2) + "\n"
