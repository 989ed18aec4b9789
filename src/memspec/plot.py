"""Memory against one symbol, as a picture (the optional `memspec[plot]` extra).

Bars stack the textbook sum's categories at each value of the symbol; a line shows the
true peak of a training step, another the budget, and a marker the largest value that
fits. matplotlib is imported here only, and only when a plot is asked for.
"""

from __future__ import annotations

from pathlib import Path

import sympy as sp

from memspec.errors import UsageError
from memspec.result import CATEGORY_TITLES, CompileResult
from memspec.solve import Solution
from memspec.symbolic.bind import resolve_defaults

__all__ = ["plot_memory"]

GIB = 2**30


def _curve(result: CompileResult, expr: sp.Expr, x: sp.Symbol, xs: list[int]) -> list[float]:
    bindings = {k: v for k, v in result.bindings.items() if k != x}
    bound = resolve_defaults(expr, result.symbols, bindings).xreplace(
        {k: sp.Integer(v) for k, v in bindings.items()}
    )
    if bound.free_symbols - {x}:
        missing = ", ".join(sorted(str(s) for s in bound.free_symbols - {x}))
        raise UsageError(f"--plot needs every dim but {x} bound (unbound: {missing})")
    return [int(bound.xreplace({x: v})) / GIB for v in xs]


def plot_memory(result: CompileResult, solution: Solution, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'memspec[plot]'") from None
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UsageError(f"--plot {path}: the file must end in .png, .svg or .pdf")
    x = solution.symbol
    top = max(8, 2 * (solution.maximum or 4))
    xs = list(range(1, top + 1))
    figure, axes = plt.subplots(figsize=(8, 4.8))
    bottom = [0.0] * len(xs)
    for key, category in result.categories.items():
        heights = _curve(result, category.bytes, x, xs)
        axes.bar(xs, heights, bottom=bottom, label=CATEGORY_TITLES[key], width=0.8)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    if result.peak is not None:
        axes.plot(xs, _curve(result, result.peak.bytes, x, xs), "k.-", label="true peak")
    budget = solution.budget / GIB
    axes.axhline(budget, color="red", linestyle="--", label=f"budget {budget:,.1f} GiB")
    if solution.maximum is not None and solution.maximum <= top:
        axes.axvline(solution.maximum, color="gray", linestyle=":", label=f"largest {x} that fits")
    axes.set_xlabel(f"{x} ({result.symbols.lookup(str(x)).long_name})")
    axes.set_ylabel("GiB")
    convention = result.config.convention.name
    axes.set_title(
        f"{result.model}: bars, the sum of the categories ({convention}); line, the peak"
    )
    axes.legend(fontsize="small")
    figure.tight_layout()
    # a fixed date and no software stamp: the same spec gives the same file
    metadata = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}
    figure.savefig(path, metadata=metadata[path.suffix.lower()[1:]])
    plt.close(figure)
