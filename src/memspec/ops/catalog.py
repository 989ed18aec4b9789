"""The op registry in words: what `memspec ops` prints and the README's table of ops.

Everything here is read from each `OpDef` (its arguments, kind, and the words it keeps
beside its rules), so the list cannot drift from the ops themselves. Ops are grouped by
kind, in `OpKind`'s order, and kept in registration order within a kind.

Example: `memspec ops` prints, for `softmax`,

    softmax(x)  [softmax]
      softmax over the last dim
      shape:    x's shape
      saves:    the output
      gradient: a new tensor for each input that needs one
      FLOPs:    none counted
      torch:    lowered
"""

from __future__ import annotations

import sympy as sp

from memspec.ops.registry import REGISTRY, OpDef, OpKind

__all__ = ["catalog_markdown", "catalog_text", "signature"]

_KIND_ORDER = {kind: i for i, kind in enumerate(OpKind)}


def _ops() -> list[OpDef]:
    return sorted(REGISTRY.values(), key=lambda op: _KIND_ORDER[op.kind])


def _default(value: object) -> str:
    """An attribute's default as a spec would write it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, sp.Expr):
        return str(value)
    return repr(value)


def signature(op: OpDef) -> str:
    """`name(tensor, ..., attr = default, ...)`; an attribute without a default is bare."""
    attrs = [name if value is None else f"{name} = {_default(value)}" for name, value in op.attrs]
    return f"{op.name}({', '.join((*op.tensors, *attrs))})"


def _facts(op: OpDef) -> tuple[tuple[str, str], ...]:
    return (
        ("shape", op.shape_doc),
        ("saves", op.saved_doc),
        ("gradient", op.gradient_doc),
        ("FLOPs", "counted" if op.flops is not None else "none counted"),
        ("torch", "lowered" if op.lower is not None else "no lowering (not verifiable)"),
    )


def catalog_text() -> str:
    """Every registered op: signature and kind, then its rules in words."""
    blocks = []
    for op in _ops():
        lines = [f"{signature(op)}  [{op.kind.value}]", f"  {op.doc}"]
        lines += [f"  {label + ':':<9} {text}" for label, text in _facts(op)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def catalog_markdown() -> str:
    """Every registered op as one row of a Markdown table."""
    rows = [
        "| op | kind | what it computes | shape | autograd saves | gradient | torch |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for op in _ops():
        facts = dict(_facts(op))
        cells = (
            f"`{signature(op)}`",
            op.kind.value,
            op.doc,
            facts["shape"],
            facts["saves"],
            facts["gradient"],
            "yes" if op.lower is not None else "no",
        )
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows) + "\n"
