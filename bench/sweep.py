"""`memspec sweep`'s speed: points evaluated per second over a million-point grid.

A sweep compiles a few times (the general sizes, then the rows where torch decides
otherwise, such as B = 1, and two checks) and evaluates the formulas at every point.
This prints both parts for bundled specs, the best of a few runs. Asserts nothing (these
machines are shared and noisy). Run:
    python bench/sweep.py [--runs 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from memspec.compile import compile_spec
from memspec.report.sweep import render_csv
from memspec.sweep.grid import parse_axis
from memspec.sweep.sweep import sweep

ROOT = Path(__file__).resolve().parent.parent
CASES = [
    ("cs336_lm", "gpt2_xl", ("B=1:1000", "L=1:1000")),
    ("llama", "llama2_7b", ("B=1:1000", "L=1:1000")),
    ("mixtral", "mixtral_8x7b", ("B=1:100", "L=128:12800:128", "KV=1,2,4,8")),
]


def run(spec: str, preset: str, grids: tuple[str, ...]):
    """(seconds compiling, seconds in total, points, compiles, the sweep) of one sweep."""
    axes = tuple(parse_axis(g)[0] for g in grids)
    spent = [0.0, 0]

    def compile_at(fixed, free):
        start = time.perf_counter()
        items = [f"{k}={v}" for k, v in fixed.items()]
        result = compile_spec(
            ROOT / "specs" / f"{spec}.mspec", preset=preset, set=items, unbound=free
        )
        spent[0] += time.perf_counter() - start
        spent[1] += 1
        return result

    start = time.perf_counter()
    found = sweep(compile_at, axes, budget=80 * 10**9)
    return spent[0], time.perf_counter() - start, found.points, spent[1], found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    for spec, preset, grids in CASES:
        best = min((run(spec, preset, grids) for _ in range(runs)), key=lambda r: r[1] - r[0])
        compiling, total, count, compiles, found = best
        evaluating = total - compiling
        print(
            f"{spec} --preset {preset} --grid {' --grid '.join(grids)}: {count:,} points; "
            f"{compiles} compiles {compiling:.2f} s; evaluation {evaluating:.2f} s = "
            f"{count / evaluating:,.0f} points/s"
        )
        start = time.perf_counter()
        text = render_csv(found)
        print(f"    --format csv: {len(text) / 1e6:,.1f} MB in {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
