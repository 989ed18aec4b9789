"""Prints the README's table of the zoo against the reference libraries:
    python -m tests.reference.table
Each row is one library model built from a config, one real CPU step, against memspec
at the same sizes: parameters, saved activations and the steady-state peak, and the
difference (0, or the named term)."""

from __future__ import annotations

import importlib

# Each module's `table_rows()` yields (spec, sizes, memspec --use, library config, the
# library's measurement, memspec's compile), one row per case its tests check.
MODULES = ("test_transformers", "test_plain_torch")


def rows():
    for name in MODULES:
        yield from importlib.import_module(f"tests.reference.{name}").table_rows()


def main() -> None:
    print("| spec | sizes | memspec `--use` | library config | params | saved (B) | peak (B) "
          "| difference |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for spec, sizes, use, path, m, r in rows():
        params = r.value(r.categories["parameters"].elements)
        saved = r.value(r.categories["activations"].bytes)
        peak = r.peak.value
        same = params == m.parameters and saved == m.saved and peak + m.optimizer_scalars == m.peak
        size = " ".join(f"{k}={v}" for k, v in sizes.items())
        difference = (
            f"0, but AdamW's step counters: {m.optimizer_scalars} B"
            if same
            else f"params {m.parameters - params}, saved {m.saved - saved}, "
            f"peak {m.peak - peak - m.optimizer_scalars:+,} B beyond the step counters (open)"
        )
        print(f"| {spec} | {size} | {use} | {path} | {params:,} = {m.parameters:,} "
              f"| {saved:,} = {m.saved:,} | {peak:,} + {m.optimizer_scalars} = {m.peak:,} "
              f"| {difference} |")


if __name__ == "__main__":
    main()
