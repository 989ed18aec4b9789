"""Prints the README's table of the zoo against the reference libraries:
    python -m tests.reference.table
Each row is one library model built from a config, one real CPU step, against memspec
at the same sizes: parameters, saved activations and the steady-state peak, and the
difference (0, or the named term)."""

from __future__ import annotations

import importlib

# Each module's `table_rows()` yields (spec, sizes, memspec --use, library config, the
# library's measurement, memspec's compile[, terms]), one row per case its tests check;
# `terms`: the named, computed differences beyond AdamW's step counters, (name, bytes).
MODULES = (
    "test_plain_torch",
    "test_transformers",
    "test_use_cache",
    "test_encoders",
    "test_t5",
    "test_mixtral",
    "test_mamba",
    "test_torchvision",
)


def rows():
    for name in MODULES:
        for row in importlib.import_module(f"tests.reference.{name}").table_rows():
            yield row if len(row) == 7 else (*row, ())


def main() -> None:
    print("| spec | sizes | memspec `--use` | library config | params | saved (B) | peak (B) "
          "| difference |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for spec, sizes, use, path, m, r, terms in rows():
        params = r.value(r.categories["parameters"].elements)
        saved = r.value(r.categories["activations"].bytes)
        peak = r.peak.value
        named = (("AdamW's step counters", m.optimizer_scalars), *terms)
        same = (
            params == m.parameters
            and saved == m.saved
            and peak + sum(b for _, b in named) == m.peak
        )
        size = " ".join(f"{k}={v}" for k, v in sizes.items())
        difference = (
            "0, but " + "; ".join(f"{name}: {b:,} B" for name, b in named if b)
            if same
            else f"params {m.parameters - params}, saved {m.saved - saved}, "
            f"peak {m.peak - peak - m.optimizer_scalars:+,} B beyond the step counters (open)"
        )
        print(f"| {spec} | {size} | {use} | {path} | {params:,} = {m.parameters:,} "
              f"| {saved:,} = {m.saved:,} | {peak:,} + {m.peak - peak:,} = {m.peak:,} "
              f"| {difference} |")


if __name__ == "__main__":
    main()
