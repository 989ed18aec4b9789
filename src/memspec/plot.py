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
from memspec.symbolic.bind import substitute

__all__ = ["plot_memory", "plot_sweep"]

GIB = 2**30


def _curve(result: CompileResult, expr: sp.Expr, x: sp.Symbol, xs: list[int]) -> list[float]:
    bindings = {k: v for k, v in result.bindings.items() if k != x}
    bound = substitute(expr, result.symbols, bindings)
    if bound.free_symbols - {x}:
        missing = ", ".join(sorted(str(s) for s in bound.free_symbols - {x}))
        raise UsageError(f"--plot needs every dim but {x} bound (unbound: {missing})")
    return [int(bound.xreplace({x: v})) / GIB for v in xs]


def plot_memory(result: CompileResult, solution: Solution, path: Path) -> None:
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UsageError(f"--plot {path}: the file must end in .png, .svg or .pdf")
    plt = _pyplot()
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
    _save(figure, path)
    plt.close(figure)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("a plot needs matplotlib: pip install 'memspec[plot]'") from None
    return plt


def _save(figure, path: Path) -> None:
    # a fixed date and no software stamp: the same sweep gives the same file
    metadata = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}
    try:
        figure.savefig(path, metadata=metadata[path.suffix.lower()[1:]])
    except OSError as err:
        raise UsageError(f"{path}: cannot write the plot ({err.strerror})") from None


def plot_sweep(sweep, path: Path) -> None:
    """One swept dim: each category, their sum and the true peak against it, with the
    budget. Two: the objective (the true peak, or the sum) as a heatmap, the points over
    the budget hatched."""
    import numpy as np

    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UsageError(f"--plot {path}: the file must end in .png, .svg or .pdf")
    if len(sweep.axes) > 2:
        raise UsageError("a plot shows a sweep over one or two dims; this grid has more")
    plt = _pyplot()
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    result = sweep.result
    figure, axes = plt.subplots(figsize=(8, 4.8))
    shape = tuple(len(v) for _, v in sweep.axes)
    missing = (sweep.error >= 0).reshape(shape)

    def gib(name: str):
        values = np.asarray(sweep.columns[name], dtype=float).reshape(shape) / GIB
        return np.where(missing, np.nan, values)

    name = "peak" if sweep.objective == "peak" else "sum"
    if len(sweep.axes) == 1:
        symbol, xs = sweep.axes[0]
        for key, title in CATEGORY_TITLES.items():
            axes.plot(xs, gib(key), ".-", label=title, linewidth=1)
        axes.plot(xs, gib("sum"), "k--", label="sum of the categories")
        if "peak" in sweep.columns:
            axes.plot(xs, gib("peak"), "k.-", label="true peak", linewidth=2)
        if len(xs) > 2 and max(xs) / min(xs) >= 8:
            axes.set_xscale("log", base=2)
        axes.set_xlabel(f"{symbol} ({result.symbols.lookup(str(symbol)).long_name})")
        axes.set_ylabel("GiB")
        if sweep.budget is not None:
            budget = sweep.budget / GIB
            axes.axhline(budget, color="red", linestyle=":", label=f"budget {budget:,.1f} GiB")
        axes.legend(fontsize="small")
    else:
        (row, ys), (column, xs) = sweep.axes
        values = gib(name)
        low, high = np.nanmin(values), np.nanmax(values)
        # memory spans orders of magnitude over a grid: a log colour scale shows them all
        norm = LogNorm(low, high) if low > 0 and high / low > 100 else None
        image = axes.imshow(values, origin="lower", aspect="auto", cmap="viridis", norm=norm)
        figure.colorbar(image, ax=axes, label=f"{'true peak' if name == 'peak' else 'sum'}, GiB")
        axes.set_xticks(range(len(xs)), [f"{x:,}" for x in xs], rotation=45, fontsize="small")
        axes.set_yticks(range(len(ys)), [f"{y:,}" for y in ys], fontsize="small")
        axes.set_xlabel(f"{column} ({result.symbols.lookup(str(column)).long_name})")
        axes.set_ylabel(f"{row} ({result.symbols.lookup(str(row)).long_name})")
        if sweep.budget is not None:
            over = (~sweep.fits).reshape(shape) & ~missing
            if over.size <= 2500:  # each cell over the budget hatched
                for i, j in zip(*np.nonzero(over), strict=True):
                    axes.add_patch(
                        Rectangle(
                            (j - 0.5, i - 0.5),
                            1,
                            1,
                            fill=False,
                            hatch="//",
                            linewidth=0,
                            edgecolor="white",
                        )
                    )
            else:  # too many cells to hatch: the budget's contour
                axes.contour(values, levels=[sweep.budget / GIB], colors="red")
        if len(xs) * len(ys) <= 144:
            for (i, j), v in np.ndenumerate(values):
                if not np.isnan(v):
                    axes.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize="x-small")
    over_text = ""
    if sweep.budget is not None and len(shape) == 2:
        over_text = "; hatched: over the budget" if over.size <= 2500 else "; red: the budget"
    axes.set_title(f"{result.model}: memory over the grid{over_text}", fontsize="medium")
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)
