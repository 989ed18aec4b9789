"""`memspec check`: a stated answer against memspec's count, term by term.

`--expect "params == V*D + N*(12*D**2 + 2*D) + D*V"` is an `expect` statement given on
the command line (the spec language's own syntax, parsed, never evaluated as Python). It
holds when memspec's count equals it as a formula (or at a preset's values, with `at`);
otherwise the report gives counted - answer, and matches the answer's terms as written
(a sum's, with `N*(a + b)` distributed) with memspec's line items of that quantity, by
value: an answer term equal to one item, or to the sum of two or three (Q, K and V
written as one `3*B*L*D`), is accounted for (an answer `at` a preset is a number: its
difference alone). What is left is named: memspec's items the
answer lacks (with every item of that size, since equal sizes cannot tell which one the
answer meant) and the answer's terms memspec does not count in that quantity (with the
category that holds an item of that size, e.g. RoPE tables counted as parameters are
buffers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import sympy as sp

from memspec.errors import UsageError
from memspec.passes.expects import QUANTITIES, ExpectResult
from memspec.passes.results import CATEGORY_TITLES, LineItem
from memspec.source import SourceFile
from memspec.syntax import decls as d
from memspec.syntax.parse import parse

__all__ = ["Missing", "Unmatched", "Verdict", "parse_answers", "verdicts"]

SOURCE = "--expect"
_MOST_COMBINED = 3  # an answer term may be the sum of this many items at most


def parse_answers(texts: Sequence[str]) -> tuple[d.DeclExpect, ...]:
    """Each `QUANTITY == EXPRESSION [at PRESET]`, parsed as the spec language's `expect`."""
    answers = []
    for text in texts:
        source_text = f"expect {text}\n"
        module = parse(source_text, SourceFile(SOURCE, source_text))
        found = [decl for decl in module.decls if isinstance(decl, d.DeclExpect)]
        if len(found) != 1 or len(module.decls) != 1:
            raise UsageError(
                f"--expect takes one `QUANTITY == EXPRESSION [at PRESET]`, not {text!r}"
            )
        answers.append(found[0])
    return tuple(answers)


@dataclass(frozen=True, slots=True)
class Missing:
    """A size memspec counts that the answer lacks: how many items of it, and every item
    of that size (any of which the answer may have left out)."""

    elements: sp.Expr
    count: int
    candidates: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unmatched:
    """An answer term memspec does not count in the quantity; `elsewhere`: (category,
    item) where memspec counts something of that size."""

    elements: sp.Expr
    elsewhere: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One stated answer: the check, and where it differs."""

    check: ExpectResult
    missing: tuple[Missing, ...] = ()
    unmatched: tuple[Unmatched, ...] = ()


def _items(result, quantity: str) -> list[LineItem]:
    name = QUANTITIES[quantity]
    if name == "total":
        return [i for c in CATEGORY_TITLES for i in result.categories[c].items]
    if name == "active_parameters":
        return list(result.active.items) if result.active is not None else []
    return list(result.categories[name].items)


def _value(result, item: LineItem) -> sp.Expr:
    """An item's elements as an answer's terms are: defaults and bound sizes in."""
    subs = {k: sp.Integer(v) for k, v in result.bindings.items()}
    return sp.expand(result.resolve(item.total_elements).xreplace(subs))


def verdicts(result) -> tuple[Verdict, ...]:
    """Each of `result.checks` (compile_spec's `checks`), with its terms matched."""
    return tuple(_verdict(result, check) for check in result.checks)


def _verdict(result, check: ExpectResult) -> Verdict:
    if check.holds or check.preset is not None:  # a number at a preset has no terms
        return Verdict(check)
    items = _items(result, check.quantity)
    values = [_value(result, item) for item in items]
    left = list(range(len(items)))
    unmatched: list[sp.Expr] = []
    pending: list[sp.Expr] = []
    for term in check.terms:  # a term equal to one item first
        hit = next((i for i in left if sp.expand(values[i] - term) == 0), None)
        if hit is None:
            pending.append(term)
        else:
            left.remove(hit)
    for term in pending:  # then one equal to a sum of a few (Q, K and V as 3*B*L*D)
        hit = None
        for size in range(2, _MOST_COMBINED + 1):
            hit = next(
                (
                    group
                    for group in combinations(left, size)
                    if sp.expand(sum((values[i] for i in group), sp.Integer(0)) - term) == 0
                ),
                None,
            )
            if hit is not None:
                break
        if hit is None:
            unmatched.append(term)
        else:
            for i in hit:
                left.remove(i)
    missing: dict[sp.Expr, list[int]] = {}
    for i in left:
        missing.setdefault(values[i], []).append(i)
    return Verdict(
        check,
        tuple(
            Missing(
                value,
                len(indices),
                tuple(items[j].path for j, v in enumerate(values) if v == value),
            )
            for value, indices in missing.items()
        ),
        tuple(Unmatched(term, _elsewhere(result, check, term)) for term in unmatched),
    )


def _elsewhere(result, check: ExpectResult, term: sp.Expr) -> tuple[tuple[str, str], ...]:
    """(category, item) of memspec's items of this size in the other categories: all
    of an item's copies, or one of them (a buffer each layer holds)."""
    own = QUANTITIES[check.quantity]
    subs = {k: sp.Integer(v) for k, v in result.bindings.items()}
    found = []
    for category in CATEGORY_TITLES:
        if category == own:
            continue
        for item in result.categories[category].items:
            if sp.expand(_value(result, item) - term) == 0:
                found.append((category, item.path))
                continue
            one = sp.expand(result.resolve(item.elements).xreplace(subs))
            if item.multiplicity != 1 and sp.expand(one - term) == 0:
                found.append((category, f"{item.path}, one of its copies"))
    return tuple(found)


def render_markdown(result, found: tuple[Verdict, ...], texts: Sequence[str]) -> str:
    """The verdicts in the report's notation: each answer (as written), holds or the
    difference."""
    from memspec.symbolic.printers import latex

    lines = [f"# Checking answers against `{result.model}`", ""]
    lines.append(
        f"Counted by memspec from `{result.spec}`"
        + (f" with preset `{result.preset}`" if result.preset else "")
        + "; every quantity is a number of elements (a category's, under its convention)."
    )
    lines.append("")
    for verdict, written in zip(found, texts, strict=True):
        check = verdict.check
        lines.append(f"## `{written}`")
        lines.append("")
        if check.holds:
            lines += ["**Holds**: memspec's count is this formula.", ""]
            continue
        lines.append(
            f"**Differs**: memspec counts ${latex(check.counted)}$; the answer is "
            f"${latex(check.answer)}$; counted − answer = ${latex(check.difference)}$."
        )
        lines.append("")
        for miss in verdict.missing:
            times = f" ({miss.count} of them)" if miss.count > 1 else ""
            lines.append(
                f"- Missing from the answer: ${latex(miss.elements)}${times}; memspec's items "
                f"of this size: {', '.join(f'`{c}`' for c in miss.candidates)}."
            )
        for extra in verdict.unmatched:
            where = (
                "; memspec counts one of this size as "
                + ", ".join(f"{CATEGORY_TITLES[c].lower()} (`{p}`)" for c, p in extra.elsewhere)
                if extra.elsewhere
                else "; no item of memspec's has this size"
            )
            lines.append(
                f"- In the answer, not memspec's {check.quantity}: ${latex(extra.elements)}$"
                f"{where}."
            )
        lines.append("")
    return "\n".join(lines)


def render_json(found: tuple[Verdict, ...], texts: Sequence[str]) -> str:
    """Per answer `{"text", "holds", "difference"}` (the text as written) and the terms
    that differ."""
    import json

    from memspec.symbolic.printers import text

    doc = [
        {
            "text": written,
            "holds": v.check.holds,
            "difference": text(v.check.difference),
            "counted": text(v.check.counted),
            "missing": [
                {"elements": text(m.elements), "count": m.count, "items": list(m.candidates)}
                for m in v.missing
            ],
            "not_counted": [
                {
                    "elements": text(u.elements),
                    "elsewhere": [{"category": c, "item": p} for c, p in u.elsewhere],
                }
                for u in v.unmatched
            ],
        }
        for v, written in zip(found, texts, strict=True)
    ]
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
