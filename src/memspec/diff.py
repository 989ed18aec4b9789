"""`memspec diff`: two compiles side by side, category by category and item by item.

Two specs, or one spec under two configurations (`--a "--use eager" --b "--use sdpa"`,
two precisions, two KV head counts): each category's bytes in both, B - A as a formula
(the sizes both sides bind alike stay symbols, the others are each side's values) and a
number where both are bound, and the line items that make the difference, matched by
path: those only one side has, and those whose bytes differ. The true peaks are compared
by their winning moments (where the sizes decide them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import sympy as sp

from memspec.passes.results import CATEGORY_TITLES, LineItem
from memspec.result import CompileResult
from memspec.symbolic.printers import latex, text

__all__ = ["CategoryDiff", "ItemChange", "diff_results", "render_json", "render_markdown"]


@dataclass(frozen=True, slots=True)
class ItemChange:
    """A line item that differs: its bytes in A and in B (None: that side has none)."""

    path: str
    a: sp.Expr | None
    b: sp.Expr | None

    @property
    def change(self) -> sp.Expr:
        return sp.expand((self.b or sp.Integer(0)) - (self.a or sp.Integer(0)))


@dataclass(frozen=True, slots=True)
class CategoryDiff:
    """One category (or the true peak): bytes in A and B, B - A, and its values."""

    name: str
    a: sp.Expr
    b: sp.Expr
    values: tuple[int | None, int | None]
    changes: tuple[ItemChange, ...] = ()

    @property
    def difference(self) -> sp.Expr:
        return sp.expand(self.b - self.a)


class _Side:
    """One compile's formulas with the sizes it binds differently from the other side's
    substituted (those both bind alike stay symbols, so the difference reads as one)."""

    def __init__(self, result: CompileResult, other: CompileResult):
        self.result = result
        self.subs = {
            k: sp.Integer(v) for k, v in result.bindings.items() if other.bindings.get(k) != v
        }

    def __call__(self, expr: sp.Expr) -> sp.Expr:
        return sp.expand(self.result.resolve(expr).xreplace(self.subs))

    def by_path(self, items: tuple[LineItem, ...]) -> dict[str, sp.Expr]:
        out: dict[str, sp.Expr] = {}
        for item in items:
            out[item.path] = sp.expand(out.get(item.path, sp.Integer(0)) + self(item.bytes))
        return out


def diff_results(a: CompileResult, b: CompileResult) -> tuple[CategoryDiff, ...]:
    """Each category of A and B, then the true peak (when both have one)."""
    side_a, side_b = _Side(a, b), _Side(b, a)
    found = []
    for key, title in CATEGORY_TITLES.items():
        ca, cb = a.categories[key], b.categories[key]
        ia, ib = side_a.by_path(ca.items), side_b.by_path(cb.items)
        changes = tuple(
            ItemChange(path, ia.get(path), ib.get(path))
            for path in (*ia, *(p for p in ib if p not in ia))
            if sp.expand(ia.get(path, sp.Integer(0)) - ib.get(path, sp.Integer(0))) != 0
        )
        found.append(
            CategoryDiff(
                title,
                side_a(ca.bytes),
                side_b(cb.bytes),
                (a.value(ca.bytes), b.value(cb.bytes)),
                changes,
            )
        )
    if a.peak is not None and b.peak is not None:
        # the winning moment's formula where the sizes decide it (else the whole Max)
        wa, wb = a.peak.winner(), b.peak.winner()
        found.append(
            CategoryDiff(
                "True peak",
                side_a(wa.bytes if wa is not None else a.peak.bytes),
                side_b(wb.bytes if wb is not None else b.peak.bytes),
                (a.peak.value, b.peak.value),
            )
        )
    return tuple(found)


def _number(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def render_markdown(a: str, b: str, found: tuple[CategoryDiff, ...]) -> str:
    """Every category: A, B, B - A; the items that differ under it."""
    lines = [f"# Memory of A = {a} against B = {b} (bytes)", ""]
    lines += ["| | A | B | B − A |", "| --- | --- | --- | --- |"]
    for d in found:
        va, vb = d.values
        delta = f"{vb - va:,}" if va is not None and vb is not None else ""
        lines.append(
            f"| {d.name} | ${latex(d.a)}$ {_number(va)} | ${latex(d.b)}$ {_number(vb)} | "
            f"${latex(d.difference)}$ {delta} |"
        )
    for d in found:
        if not d.changes:
            continue
        lines += ["", f"## {d.name}: the items that differ", ""]
        for change in d.changes:
            if change.a is None:
                what = f"only in B: ${latex(change.b)}$"
            elif change.b is None:
                what = f"only in A: ${latex(change.a)}$"
            else:
                what = (
                    f"${latex(change.a)}$ → ${latex(change.b)}$, B − A = ${latex(change.change)}$"
                )
            lines.append(f"- `{change.path}`: {what}")
    return "\n".join(lines) + "\n"


def render_json(a: str, b: str, found: tuple[CategoryDiff, ...]) -> str:
    doc = {
        "a": a,
        "b": b,
        "categories": [
            {
                "name": d.name,
                "a": text(d.a),
                "b": text(d.b),
                "difference": text(d.difference),
                "values": {"a": d.values[0], "b": d.values[1]},
                "items": [
                    {
                        "path": c.path,
                        "a": None if c.a is None else text(c.a),
                        "b": None if c.b is None else text(c.b),
                        "difference": text(c.change),
                    }
                    for c in d.changes
                ],
            }
            for d in found
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
