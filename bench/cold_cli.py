"""Cold command-line time for every bundled spec, and its independence of num_layers.

Prints figures; asserts nothing (these machines are shared and noisy). Run:
    python bench/cold_cli.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cold_run(args: list[str]) -> float:
    # --no-cache: the compile itself, not the kept output of the run before (the parsed
    # standard library still comes from its cache, as it does for every new compile)
    if args[0] == "compile":
        args = [*args, "--no-cache"]
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "memspec", *args], cwd=ROOT, check=True, capture_output=True
    )
    return time.perf_counter() - start


def report(label: str, args: list[str], runs: int) -> None:
    times = [cold_run(args) for _ in range(runs)]
    print(f"{label:<48} min {min(times):6.3f} s   median {statistics.median(times):6.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    print(f"{'python interpreter start-up':<48} {time.perf_counter() - start:6.3f} s")
    for path in sorted((ROOT / "specs").glob("*.mspec")):
        for fmt in ("json", "md"):
            args = ["compile", f"specs/{path.name}", "--format", fmt]
            report(f"{path.stem} --format {fmt}", args, runs)
    # what each rank holds: every rank of 1024 grouped (FSDP2), and ZeRO-1's greedy
    # partition with one peak replay per rank class
    llama = ["compile", "specs/llama.mspec", "--preset", "llama2_70b", "--set", "B=1"]
    for flags in (["--zero", "3", "--dp", "1024"], ["--zero", "1", "--dp", "1024"]):
        report(
            f"llama2_70b {' '.join(flags)} --format json",
            [*llama, *flags, "--format", "json"],
            runs,
        )
    text = (ROOT / "specs" / "cs336_lm.mspec").read_text()
    with tempfile.TemporaryDirectory() as tmp:
        for count in ("4", "48", "4800"):
            spec = Path(tmp) / f"layers_{count}.mspec"
            body = text.replace("repeat N of Block", f"repeat {count} of Block")
            spec.write_text(body.replace("expect params", "# expect params"))
            report(
                f"cs336_lm with repeat {count} --format json",
                ["compile", str(spec), "--format", "json"],
                runs,
            )


if __name__ == "__main__":
    main()
