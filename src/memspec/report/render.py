"""Report model -> text: jinja2 templates for Markdown and LaTeX, `json` for JSON.

One jinja2 Environment per format (StrictUndefined, so a missing field is an error).
The LaTeX environment uses brace-free delimiters (`<< >>`, `<% %>`), as Sphinx does, so
TeX's braces need no escaping in the template, and an `e` filter escapes TeX specials in
names. jinja2 is imported here only, when a text report is asked for.
"""

from __future__ import annotations

import functools
import json

from memspec.report.build import build_report
from memspec.result import CompileResult
from memspec.symbolic.printers import text

__all__ = ["render_json", "render_latex", "render_markdown"]

_TEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}


def tex_escape(value: str) -> str:
    """Escape TeX's special characters in plain text (names, notes)."""
    return "".join(_TEX_SPECIALS.get(c, c) for c in str(value))


def tex_name(value: str) -> str:
    """A dotted name, escaped, that may break after each dot in a narrow column."""
    return r".\allowbreak{}".join(tex_escape(part) for part in str(value).split("."))


def tex_value(value: str) -> str:
    """A symbol-table value: plain text with embedded `$math$` kept as math."""
    parts = str(value).split("$")
    return "$".join(tex_escape(p) if i % 2 == 0 else p for i, p in enumerate(parts))


def md_escape(value: str) -> str:
    """Escape characters that would break a Markdown table cell or start markup."""
    out = str(value)
    for c in "\\|*_`[]<>$":
        out = out.replace(c, "\\" + c)
    return out


def md_code(value: str) -> str:
    """A name as inline code; backticks cannot occur in memspec names, but be safe."""
    return "`" + str(value).replace("`", "'").replace("|", "\\|") + "`"


@functools.cache
def _environment(fmt: str):
    import jinja2

    options = dict(
        loader=jinja2.PackageLoader("memspec", "report/templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    if fmt == "tex":
        options.update(
            block_start_string="<%",
            block_end_string="%>",
            variable_start_string="<<",
            variable_end_string=">>",
            comment_start_string="<#",
            comment_end_string="#>",
        )
    env = jinja2.Environment(**options)
    env.filters["e"] = tex_escape if fmt == "tex" else md_escape
    env.filters["code"] = md_code
    env.filters["name"] = tex_name
    env.filters["tex_value"] = tex_value
    return env


def render_markdown(result: CompileResult) -> str:
    return _environment("md").get_template("report.md.j2").render(r=build_report(result))


def render_latex(result: CompileResult) -> str:
    return _environment("tex").get_template("report.tex.j2").render(r=build_report(result))


def _items(result: CompileResult, category) -> list[dict]:
    return [
        {
            "name": item.path,
            "shape": [text(d) for d in item.shape],
            "dtype": item.dtype.value,
            "elements": text(result.resolve(item.elements)),
            "multiplicity": text(item.multiplicity),
        }
        for item in category.items
    ]


def _peak_json(result: CompileResult) -> dict | None:
    """The true peak: its bytes (a Max over the moments that can be largest), and the
    moment and breakdown where the sizes decide it (every symbol bound, or one moment)."""
    peak = result.peak
    if peak is None:
        return {"unavailable": result.peak_unavailable}
    options = peak.options
    winner = peak.winner()
    totals = [text(c.bytes) for c in peak.candidates]
    return {
        # a Max over the candidates below, in their order
        "bytes": totals[0] if len(totals) == 1 else f"Max({', '.join(totals)})",
        "phase": winner.label() if winner else None,
        "breakdown": {k: text(e) for k, e in winner.breakdown} if winner else None,
        "step": {
            "first_step": options.first_step,
            "set_to_none": options.set_to_none,
            "grad_accum": options.grad_accum,
            "optimizer_impl": options.optimizer_impl,
        },
        "candidates": [
            {"phase": c.label(), "bytes": t} for c, t in zip(peak.candidates, totals, strict=True)
        ],
        "assumptions": list(peak.assumptions),
    }


def render_json(result: CompileResult) -> str:
    """The JSON contract of DESIGN.md, keys in its order."""
    categories = {
        name: {
            "elements": text(result.resolve(c.elements)),
            "bytes": text(result.resolve(c.bytes)),
            "items": _items(result, c),
        }
        for name, c in result.categories.items()
    }
    doc = {
        "model": result.model,
        "spec": result.spec,
        "convention": result.config.convention.name,
        "optimizer": result.config.optimizer.name,
        "precision": result.config.precision.name,
        "symbols": {d.symbol.name: d.long_name for d in result.symbols.ordered()},
        "categories": categories,
        "total": {
            "elements": text(result.resolve(result.total_elements)),
            "bytes": text(result.resolve(result.total_bytes)),
        },
        # Beyond the contract's keys: the spec's stated choices and its shape assumptions.
        "assumptions": [*result.notes, *(a.text for a in result.graph.assumptions)],
        "flops": {
            "forward": text(result.resolve(result.flops.forward)),
            "backward": text(result.resolve(result.flops.backward)),
            "total": text(result.resolve(result.flops.total)),
            "optimizer": text(result.resolve(result.flops.optimizer)),
            "step": text(result.resolve(result.flops.step)),
            "items": [
                {
                    "name": i.path,
                    "op": i.op,
                    "forward": text(result.resolve(i.forward)),
                    "backward": text(result.resolve(i.backward)),
                    "multiplicity": text(i.multiplicity),
                }
                for i in result.flops.items
            ],
        },
        "peak": _peak_json(result),
    }
    if result.active is not None:
        doc["active_parameters"] = {"elements": text(result.resolve(result.active.elements))}
    if result.bindings:
        values = {}
        for name, c in [*result.categories.items(), ("total", None)]:
            elements = result.total_elements if c is None else c.elements
            nbytes = result.total_bytes if c is None else c.bytes
            e, b = result.value(elements), result.value(nbytes)
            if e is not None and b is not None:
                values[name] = {"elements": e, "bytes": b}
        flops = {
            k: result.value(getattr(result.flops, k))
            for k in ("forward", "backward", "total", "optimizer", "step")
        }
        if None not in flops.values():
            values["flops"] = flops
        if result.training_seconds() is not None:
            values["training_seconds"] = result.training_seconds()
        if result.active is not None and result.value(result.active.elements) is not None:
            values["active_parameters"] = {"elements": result.value(result.active.elements)}
        if result.peak is not None and result.peak.value is not None:
            values["peak"] = result.peak.value
        doc["values"] = values
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
