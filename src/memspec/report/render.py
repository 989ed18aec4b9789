"""Report model -> text: jinja2 templates for Markdown and LaTeX, `json` for JSON.

All three render the same `Report`; JSON reads the text form of each expression, the
reports its LaTeX.

One jinja2 Environment per format (StrictUndefined, so a missing field is an error).
The LaTeX environment uses brace-free delimiters (`<< >>`, `<% %>`), as Sphinx does, so
TeX's braces need no escaping in the template, and an `e` filter escapes TeX specials in
names. jinja2 is imported here only, when a text report is asked for.
"""

from __future__ import annotations

import functools
import json

from memspec.report.build import build_report
from memspec.report.model import Flops, Peak, Report, Row
from memspec.result import CompileResult

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


# Beyond Latin-1, pdflatex (utf8 input, T1 fonts) typesets these; any other character is
# written as its code point, so that a description in any script still compiles
_TEX_UNICODE = {
    "\u2013": "--",
    "\u2014": "---",
    "\u2018": "`",
    "\u2019": "'",
    "\u201c": "``",
    "\u201d": "''",
    "\u2026": r"\ldots{}",
    "\u2022": r"\textbullet{}",
    "\u2212": "-",
    "\u00d7": r"$\times$",
    "\u2192": r"$\rightarrow$",
}


def _tex_char(c: str) -> str:
    if c in _TEX_SPECIALS:
        return _TEX_SPECIALS[c]
    if c in _TEX_UNICODE:
        return _TEX_UNICODE[c]
    code = ord(c)
    if code < 32 and c not in "\n\t":
        return " "  # control characters: TeX reads some of them as commands
    if code < 0x7F or 0xA0 <= code <= 0xFF:
        return c
    return rf"\texttt{{U+{code:04X}}}"


def tex_escape(value: str) -> str:
    """Escape TeX's special characters in plain text (names, notes); characters pdflatex
    cannot typeset become their code points (`U+65E5`)."""
    return "".join(_tex_char(c) for c in str(value))


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


def _item(row: Row) -> dict:
    return {
        "name": row.name,
        "shape": list(row.dims),
        "dtype": row.dtype,
        "elements": row.elements.text,
        "multiplicity": row.copies.text,
    }


def _flops(flops: Flops) -> dict:
    return {
        "forward": flops.forward.text,
        "backward": flops.backward.text,
        "total": flops.total.text,
        "optimizer": flops.optimizer.text,
        "step": flops.step.text,
        "recompute": flops.recompute.text if flops.recompute else "0",
        "with_recompute": (flops.with_recompute or flops.total).text,
        "items": [
            {
                "name": row.name,
                "op": row.op,
                "forward": row.forward.text,
                "backward": row.backward.text,
                "multiplicity": row.copies.text,
            }
            for row in flops.rows
        ],
    }


def _peak(peak: Peak) -> dict:
    """The true peak: its bytes (a Max over the moments that can be largest), and the
    moment and breakdown where the sizes decide it (every symbol bound, or one moment)."""
    if peak.unavailable is not None:
        return {"unavailable": peak.unavailable}
    totals = [m.bytes.text for m in peak.candidates]
    known = peak.moment is not None
    return {
        # a Max over the candidates below, in their order
        "bytes": totals[0] if len(totals) == 1 else f"Max({', '.join(totals)})",
        "phase": peak.moment,
        "breakdown": {row.key: row.at_peak.text for row in peak.rows} if known else None,
        "step": dict(peak.step),
        "candidates": [{"phase": m.label, "bytes": m.bytes.text} for m in peak.candidates],
        "assumptions": list(peak.assumptions),
    }


def _values(r: Report) -> dict:
    """The exact numbers, for whatever the bindings determine."""
    values = {}
    for name, elements, nbytes in [
        *((s.key, s.expanded, s.bytes) for s in r.sections),
        ("total", r.total.elements, r.total.bytes),
    ]:
        if elements.value is not None and nbytes.value is not None:
            values[name] = {"elements": elements.value, "bytes": nbytes.value}
    f = r.flops
    flops = {k: getattr(f, k).value for k in ("forward", "backward", "total", "optimizer", "step")}
    flops["recompute"] = f.recompute.value if f.recompute else 0
    flops["with_recompute"] = (f.with_recompute or f.total).value
    if None not in flops.values():
        values["flops"] = flops
    if f.training_seconds is not None:
        values["training_seconds"] = f.training_seconds
    if r.trainable is not None and r.trainable.value is not None:
        values["trainable_parameters"] = {"elements": r.trainable.value}
    if r.active is not None and r.active[0].value is not None:
        values["active_parameters"] = {"elements": r.active[0].value}
    if r.peak.value is not None:
        values["peak"] = r.peak.value
    return values


def _tp_ranks(r: Report, degree: int | None) -> list[dict]:
    """Tensor parallelism alone: the ranks of a group hold alike, one class (`ranks`
    null where the degree is unbound), its categories the report's own."""
    values = _values(r) if r.bound else {}
    return [
        {
            "ranks": None if degree is None else list(range(degree)),
            "peak": values.get("peak"),
            "categories": {
                s.key: {"bytes": values.get(s.key, {}).get("bytes", s.bytes.text)}
                for s in r.sections
            },
        }
    ]


def _ranks(ranks, peaks: tuple[int | None, ...]) -> list[dict]:
    """Each class of ranks that hold the same, with its bytes per category and its true
    peak (null where not modelled); where the degree is unbound, one class (`ranks`
    null) with the formulas of the rank that holds the most."""
    rows = (*ranks.rows, ranks.total)
    if not ranks.classes:
        return [
            {
                "ranks": None,
                "peak": None,
                "categories": {row.key: {"bytes": row.formula.text} for row in rows},
            }
        ]
    return [
        {
            "ranks": list(members),
            "peak": peaks[k] if k < len(peaks) else None,
            "categories": {
                row.key: {"bytes": row.values[k], "formula": row.formula.text} for row in rows
            },
        }
        for k, members in enumerate(ranks.members)
    ]


def render_json(result: CompileResult) -> str:
    """The JSON contract of DESIGN.md, keys in its order."""
    r = build_report(result)
    doc = {
        "model": r.model,
        "spec": r.spec,
        "convention": r.convention,
        "optimizer": r.optimizer,
        "precision": r.precision,
        "config": {"recompute": r.recompute},
        "symbols": {s.symbol.text: s.name for s in r.symbols},
        "categories": {
            s.key: {
                "elements": s.expanded.text,
                "bytes": s.bytes.text,
                "items": [_item(row) for row in s.rows],
            }
            for s in r.sections
        },
        "total": {"elements": r.total.elements.text, "bytes": r.total.bytes.text},
        # Beyond the contract's keys: the spec's stated choices and its shape assumptions.
        "assumptions": [
            *r.notes,
            *(a.text for a in r.assumptions),
            *(d.plain for d in r.decisions),
        ],
        "flops": _flops(r.flops),
        "peak": _peak(r.peak),
    }
    if r.active is not None:
        doc["active_parameters"] = {"elements": r.active[0].text}
    if r.tensor_parallel is not None:
        doc["config"]["tensor_parallel"] = {
            "degree": result.config.parallel.tp,
            "description": r.tensor_parallel,
            "plan": {path: style for path, style, _ in r.tp_plan},
        }
    if result.hf_config is not None:
        use = result.hf_config
        doc["config"]["hf_config"] = {
            "path": use.path,
            "model_type": use.model_type,
            "dims": {name: value for name, value, _ in use.dims},
            "checked": list(use.checked),
            "unused": list(use.unused),
        }
    if r.lora is not None:
        lora = result.config.lora
        doc["config"]["lora"] = {
            "r": lora.r,
            "lora_alpha": lora.alpha,
            "lora_dropout": lora.dropout,
            "target_modules": list(lora.targets),
            "wrapped": r.lora[1].value if r.lora[1].value is not None else r.lora[1].text,
        }
    if r.weights is not None:
        weights = result.config.weights
        doc["config"]["weights"] = {
            "format": weights.format,
            "compute_dtype": weights.compute,
            "double_quant": weights.double_quant,
            "fused_rows": weights.fused_rows,  # 4-bit: the most rows its fused kernel runs
            "skip": list(weights.skip),
            "description": r.weights[0],
            "packed": r.weights[1].value if r.weights[1].value is not None else r.weights[1].text,
        }
    if r.ranks is not None:
        doc["config"]["parallel"] = r.ranks.description
        doc["ranks"] = _ranks(r.ranks, result.rank_peaks)
    elif r.tensor_parallel is not None:
        doc["ranks"] = _tp_ranks(r, result.config.parallel.tp)
    if r.bound:
        doc["values"] = _values(r)
    if result.config.inference is not None:
        _inference(doc, result)
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _inference(doc: dict, result) -> None:
    """--mode inference: the serving loop, the cache at the end of generation, and the
    phase of the peak (`prefill` or `decode`; `moment` says where in it)."""
    run = result.config.inference
    doc["config"]["inference"] = {
        "prompt_len": run.prompt_len,
        "new_tokens": run.new_tokens,
        "kv_cache": run.cache,
        "loop": run.loop,
        "description": run.describe(),
    }
    if run.cache == "paged":
        doc["config"]["inference"]["kv_block"] = run.block
        doc["config"]["inference"]["kv_dtype"] = run.kv_dtype or None
    winner = result.peak.winner() if result.peak is not None else None
    if winner is not None and "phase" in doc["peak"]:
        doc["peak"]["moment"] = doc["peak"]["phase"]
        doc["peak"]["phase"] = winner.phase.value
    elements, nbytes = result.kv_cache
    values = doc.setdefault("values", {})
    e, b = result.value(elements), result.value(nbytes)
    if e is not None and b is not None:
        values["kv_cache"] = {"elements": e, "bytes": b}
