"""Prints the README's table of the zoo against the reference libraries:
    python -m tests.reference.table
Each row is one library model built from a config, one real CPU step, against memspec
at the same sizes: parameters, saved activations and the steady-state peak, and the
difference (0, or the named term)."""

from __future__ import annotations

from tests.reference import test_transformers as t


def rows():
    for use, attention, activation in t.GPT2_PATHS:
        for sizes in t.GPT2_SIZES:
            measured, result = t.gpt2_step(sizes, use, attention, activation)
            path = f"attn_implementation={attention}, activation_function={activation}"
            yield "gpt2", sizes, ", ".join(use) or "(default)", path, measured, result
    for family, paths, all_sizes in (
        ("llama", t.LLAMA_PATHS, t.LLAMA_SIZES),
        ("mistral", t.MISTRAL_PATHS, t.MISTRAL_SIZES),
    ):
        for use, attention in paths:
            for sizes in all_sizes:
                measured, result = t.decoder_step(family, sizes, use, attention)
                path = f"attn_implementation={attention}"
                if "W" in sizes:
                    path += f", sliding_window={sizes['W']}"
                yield family, sizes, ", ".join(use) or "(default)", path, measured, result


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
