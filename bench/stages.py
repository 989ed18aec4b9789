"""Where a compile's time goes, per bundled spec, in one warm process.

Cold command-line times (`bench/cold_cli.py`) are mostly imports (sympy alone is about
0.4 s); this prints, after one warm-up compile, each spec's own stages: the compile
(parse, elaborate, the memory passes), of it the true-peak replay, and rendering
Markdown and JSON. Prints figures; asserts nothing. Run:
    python bench/stages.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from memspec import compile_spec, passes
from memspec.passes import Analysis

ROOT = Path(__file__).resolve().parent.parent


def stages(path: Path) -> tuple[float, float, float, float, int]:
    replay = []
    original = passes.PIPELINE

    def timed(run):
        def wrapper(context):
            start = time.perf_counter()
            result = run(context)
            replay.append(time.perf_counter() - start)
            return result

        return wrapper

    # the pipeline's peak stage, timed where run_pipeline finds it
    passes.PIPELINE = tuple(
        Analysis(a.name, timed(a.run)) if a.name == "peak" else a for a in original
    )
    try:
        start = time.perf_counter()
        result = compile_spec(path)
        compiled = time.perf_counter()
        result.to_markdown()
        markdown = time.perf_counter()
        result.to_json()
        done = time.perf_counter()
    finally:
        passes.PIPELINE = original
    moments = len(result.peak.candidates) if result.peak else 0
    return compiled - start, replay[0], markdown - compiled, done - markdown, moments


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    specs = sorted((ROOT / "specs").glob("*.mspec"))
    stages(specs[0])  # warm-up: grammar, standard library, sympy's caches
    print(f"{'spec':<18} {'compile':>8} {'(peak)':>8} {'md':>8} {'json':>8} {'moments':>8}")
    for path in specs:
        rows = [stages(path) for _ in range(runs)]
        medians = [statistics.median(r[i] for r in rows) for i in range(4)]
        cells = " ".join(f"{m:8.3f}" for m in medians)
        print(f"{path.stem:<18} {cells} {rows[0][4]:>8}")


if __name__ == "__main__":
    main()
