"""How the report builders print one expression or one number.

Every builder of `report/` reads a `CompileResult` through these: an expression becomes
a `Math` (its text for JSON, its LaTeX, and its value when asked for), a byte count
becomes words. Values exist only when some dim is bound, so a symbolic report shows no
numbers even for the parts that need no dims.
"""

from __future__ import annotations

import sympy as sp

from memspec.report.model import Math
from memspec.result import CompileResult
from memspec.symbolic.bind import format_bytes, resolve_defaults
from memspec.symbolic.printers import text

__all__ = ["bytes_text", "human", "math", "quantity", "resolved", "structure", "value"]


def value(result: CompileResult, expr: sp.Expr) -> int | None:
    """The exact integer of `expr`, when bound (never without bindings)."""
    return result.value(expr) if result.bindings else None


def math(expr: sp.Expr) -> Math:
    """`expr` as printed, without a value."""
    return Math(text(expr), expr)


def resolved(result: CompileResult, expr: sp.Expr) -> Math:
    """`expr` with the defaults substituted, expanded."""
    return math(result.resolve(expr))


def quantity(result: CompileResult, expr: sp.Expr) -> Math:
    """`expr` resolved as by `resolved`, with its value when bound."""
    out = result.resolve(expr)
    return Math(text(out), out, value(result, expr))


def structure(result: CompileResult, expr: sp.Expr) -> sp.Expr:
    """Defaults substituted without expanding, so `N (12 D^2 + 2 D)` keeps its shape."""
    return resolve_defaults(expr, result.symbols, result.bindings)


def bytes_text(count: int) -> str:
    """`1,234,567 bytes = 1.18 MiB (1.23 MB)`; no units below a KiB."""
    return f"{count:,} bytes" + (f" = {format_bytes(count)}" if count >= 1024 else "")


def human(result: CompileResult, expr: sp.Expr) -> str | None:
    """`expr`'s bytes in words, when bound."""
    count = value(result, expr)
    return None if count is None else bytes_text(count)
