"""Large and deeply nested specs (issue 16's resource bounds), each in a fresh process:
thousands of distinct layers in one file, and repeats nested 8 deep.

For each spec it prints where the time goes (loading it: the file parsed, the standard
library from the parse cache as any earlier run leaves it; elaborating the IR, the
memory passes, rendering JSON), the true peak's candidates or why there is none, and the
whole `memspec compile --format json` command's wall time (a new compile: no output of
it cached).
Prints figures; asserts nothing (shared, noisy machines). Run:
    python bench/large_specs.py [--layers 1000,3000,15000] [--depth 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# runs in a fresh interpreter: stage times of one compile, as JSON on stdout
STAGES = r"""
import gc, json, sys, time
gc.set_threshold(50_000, 20, 100)  # as memspec's command line sets it
from pathlib import Path
import memspec.compile as c
from memspec.syntax.imports import load_program
path = Path(sys.argv[1])
times = {}
start = time.perf_counter()
source, where = c._source(path)
load_program(source, where, ())  # parsed once here; compile_spec finds it memoized
times["load"] = time.perf_counter() - start
real = {"elaborate": c.elaborate, "passes": c.run_pipeline}
def timed(name):
    def run(*args, **kwargs):
        begin = time.perf_counter()
        try:
            return real[name](*args, **kwargs)
        finally:
            times[name] = time.perf_counter() - begin
    return run
c.elaborate, c.run_pipeline = timed("elaborate"), timed("passes")
result = c.compile_spec(path, time_limit=None)
begin = time.perf_counter()
result.to_json()
times["json"] = time.perf_counter() - begin
peak = result.peak
times["peak"] = f"{len(peak.candidates)} candidates" if peak else result.peak_unavailable
print(json.dumps(times))
"""


def distinct_layers(n: int) -> str:
    """n Linear(D, D) layers, each declared and called by name (no repeat)."""
    members = "\n".join(f"    l{i} = Linear(D, D)" for i in range(n))
    calls = "\n".join(f"        h = l{i}(h)" for i in range(n))
    return (
        "use std\ndim batch_size as B\ndim d_model as D\nmodel M {\n"
        f"{members}\n    forward(x: [B, D], y: [B, D]) {{\n        h = x\n{calls}\n"
        "        return mse_loss(h, y)\n    }\n}\n"
    )


def nested_repeats(depth: int) -> str:
    """`depth` repeats, each of the one below; the innermost a Linear and a ReLU."""
    lines = ["use std", "dim batch_size as B", "dim d_model as D", "dim num_layers as N"]
    lines.append(
        "layer L0() {\n    fc = Linear(D, D)\n    forward(x: [b, D]) -> [b, D] {\n"
        "        return relu(fc(x))\n    }\n}"
    )
    for k in range(1, depth + 1):
        forward = "    forward(x: [b, D]) -> [b, D] {\n        return inner(x)\n    }\n}"
        lines.append(f"layer L{k}() {{\n    inner = repeat N of L{k - 1}()\n{forward}")
    lines.append(
        f"model M {{\n    body = L{depth}()\n    forward(x: [B, D], y: [B, D]) {{\n"
        "        return mse_loss(body(x), y)\n    }\n}"
    )
    return "\n".join(lines) + "\n"


def measure(name: str, text: str, folder: Path, env: dict[str, str]) -> None:
    path = folder / f"{name}.mspec"
    path.write_text(text, encoding="utf-8")
    staged = subprocess.run(
        [sys.executable, "-c", STAGES, str(path)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    times = json.loads(staged.stdout)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "memspec", "compile", str(path), "--format", "json"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - start
    print(
        f"{name:>16}: {text.count(chr(10)):>6} lines; load {times['load']:.2f} s, "
        f"elaborate {times['elaborate']:.2f} s, passes {times['passes']:.2f} s, "
        f"JSON {times['json']:.2f} s; `memspec compile` {wall:.2f} s; peak: {times['peak']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", default="1000,3000,15000")
    parser.add_argument("--depth", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "MEMSPEC_CACHE_DIR": str(Path(folder) / "cache")}
        warm = Path(folder) / "warm.mspec"  # leaves the standard library's parse cached
        warm.write_text(distinct_layers(1), encoding="utf-8")
        command = [sys.executable, "-m", "memspec", "compile", str(warm), "--format", "json"]
        subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
        measure(f"nested x{args.depth}", nested_repeats(args.depth), Path(folder), env)
        for n in (int(k) for k in args.layers.split(",")):
            measure(f"{n:,} layers", distinct_layers(n), Path(folder), env)


if __name__ == "__main__":
    main()
