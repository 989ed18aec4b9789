"""Cold start: `memspec compile specs/cs336_lm.mspec --format json` in a new process,
against merely importing what it needs (`python -c "import sympy, lark, jinja2"`).

Three kinds of cold run, each in a fresh interpreter, the best of a few:
- no cache at all (an empty cache dir each run): the grammar's tables and the standard
  library parsed again, as before the caches existed;
- a new compile (other options each run: `--set B=k`): the parsed standard library and
  the grammar's tables come from the cache, the model is compiled;
- the same command again: its output comes from the cache (no sympy imported).
Beside them, where a new compile's time goes: sympy's first sum (sympy imports
`sympy.tensor.tensor` and `sympy.combinatorics` then, not at `import sympy`), then
memspec's own modules as well; what a new compile takes past that is the compile.
memspec's bytecode is compiled first, as installing the wheel does (with
PYTHONDONTWRITEBYTECODE set, an editable install would compile every module's source in
every run). Prints seconds and the ratio to the import; asserts nothing (shared, noisy
machines). Run:
    python bench/cold_start.py [--runs 7]
"""

from __future__ import annotations

import argparse
import compileall
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMAND = ["compile", "specs/cs336_lm.mspec", "--format", "json"]
FIRST_SUM = "import sympy; x, y, z = sympy.symbols('x y z'); x + y + z"
MODULES = f"{FIRST_SUM}; import memspec.cli, memspec.compile, memspec.report.render"


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    memspec = [sys.executable, "-m", "memspec"]
    compileall.compile_dir(ROOT / "src" / "memspec", quiet=1)
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "MEMSPEC_CACHE_DIR": folder}

        def best(code: str) -> float:
            return min(timed([sys.executable, "-c", code], env) for _ in range(runs))

        imports = best("import sympy, lark, jinja2")
        first_sum = best(FIRST_SUM)
        modules = best(MODULES)
        empty = []
        for k in range(runs):
            fresh = {**env, "MEMSPEC_CACHE_DIR": str(Path(folder) / f"empty{k}")}
            empty.append(timed([*memspec, *COMMAND], fresh))
        batches = itertools.count(2)
        timed([*memspec, *COMMAND], env)  # fills the cache
        new = [timed([*memspec, *COMMAND, "--set", f"B={next(batches)}"], env) for _ in range(runs)]
        again = [timed([*memspec, *COMMAND], env) for _ in range(runs)]
    baseline = 'python -c "import sympy, lark, jinja2"'
    print(f"{baseline:<52} {imports:6.3f} s")
    for label, times in (
        ("import sympy and make its first sum", [first_sum]),
        ("... and import memspec's modules", [modules]),
        ("compile --format json, no cache", empty),
        ("compile --format json, a new compile", new),
        ("compile --format json, the same command again", again),
    ):
        best = min(times)
        print(f"{label:<52} {best:6.3f} s = {best / imports:4.2f} x the import")


if __name__ == "__main__":
    main()
