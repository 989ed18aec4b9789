"""The one place expressions become text: LaTeX math for reports, sympy `str` for JSON.

Markdown reports use GitHub math, which is LaTeX inside `$...$`, so both report formats
share `latex()`. Printing is deterministic: sympy orders terms canonically.
"""

from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

import sympy as sp
from sympy.printing.latex import LatexPrinter

from memspec.ir.types import Shape

__all__ = ["MathPrinter", "latex", "latex_int", "latex_shape", "text"]


class MathPrinter(LatexPrinter):
    """LaTeX with implicit multiplication (`12 D^{2} N`) and dims printed as declared."""

    _default_settings: ClassVar[dict] = {**LatexPrinter._default_settings, "mul_symbol": None}

    def _print_Symbol(self, expr: sp.Symbol, style: str = "plain") -> str:
        name = expr.name
        if len(name) == 1:
            return name
        # Multi-letter symbols keep their name upright; '_' is escaped, not a subscript.
        return r"\mathrm{" + name.replace("_", r"\_") + "}"


_PRINTER = MathPrinter()


@lru_cache(maxsize=8192)
def latex(expr: sp.Expr) -> str:
    """LaTeX math (without `$`) for `expr` (memoized: reports print the same totals in
    several tables)."""
    return _PRINTER.doprint(expr)


def latex_int(value: int) -> str:
    """`1,635,537,600` as LaTeX math with thin-space-free commas: `1{,}635{,}537{,}600`."""
    return f"{value:,}".replace(",", "{,}")


def latex_shape(shape: Shape) -> str:
    """`B \\times L \\times D`; `1` for a scalar."""
    # A sum in a dim is bracketed, so `B x (I^2/p^2 + 1) x D` cannot be misread.
    parts = [rf"\left({latex(d)}\right)" if isinstance(d, sp.Add) else latex(d) for d in shape]
    return r" \times ".join(parts) if shape else "1"


@lru_cache(maxsize=8192)
def text(expr: sp.Expr) -> str:
    """sympy's `str` form, used by the JSON contract."""
    return str(expr)
