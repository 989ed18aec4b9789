"""Properties over random input (issue 16): the command line with random flags and values,
and random well-formed specs with random sizes, degenerate ones included.

The invariant either way: exit 0 with numbers that are whole and not negative, or exit 2
with a message (located, where the input has a place), within a time bound; never a
traceback, never a hang.
"""

from __future__ import annotations

import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memspec import MemspecError, compile_spec
from memspec.cli import main
from memspec.limits import time_limit

from .conftest import ROOT

SECONDS = 30  # a bound no example comes near; past it the example fails
LOCATED = re.compile(r"^(\S+:\d+:\d+: error: |memspec: error: |usage: memspec)", re.M)

# values a careless or hostile user types
VALUES = st.sampled_from(
    ["1", "2", "7", "0", "-1", "-0", "1e3", "1.5", "nan", "inf", "-inf", "", " ", "²", "--5",
     "9" * 30, "B", "x=1", "🙂", "a\nb", "80GB", "0GB", "-3GB", "1e99GB", "1KiB", "0.5"]
)  # fmt: skip
NAMES = st.sampled_from(["B", "L", "D", "N", "H", "V", "F", "batch_size", "d_model", "Q", "DP"])
FLAGS = st.one_of(
    st.tuples(st.just("--set"), st.builds("{}={}".format, NAMES, VALUES)),
    st.tuples(st.sampled_from(["--preset"]), st.sampled_from(["gpt2_xl", "quickstart", "nope"])),
    st.tuples(st.just("--precision"), st.sampled_from(["fp32", "bf16", "mixed_bf16", "fp23"])),
    st.tuples(st.just("--optimizer"), st.sampled_from(["adamw", "sgd", "adafactor", "adan"])),
    st.tuples(st.just("--use"), st.sampled_from(["flash", "sdpa", "eager", "flsh", "cache"])),
    st.tuples(st.just("--recompute"), st.sampled_from(["none", "full", "nope"])),
    st.tuples(st.sampled_from(["--dp", "--tp", "--zero", "--grad-accum"]), VALUES),
    st.tuples(st.sampled_from(["--peak-flops", "--mfu", "--steps", "--time-limit"]), VALUES),
    st.tuples(st.just("--freeze"), st.sampled_from(["*", "lm_head*", "nothing*"])),
    st.tuples(st.just("--mode"), st.sampled_from(["train", "inference", "serve"])),
    st.tuples(st.sampled_from(["--prompt-len", "--new-tokens"]), VALUES),
)
COMMANDS = st.sampled_from(
    [
        ["compile", "--no-cache", "--format", "json"],
        ["solve", "--for", "B", "--budget", "80GB", "--format", "json"],
        ["sweep", "--grid", "B=1,2", "--format", "json"],
        ["check", "--expect", "params == 2*V*D", "--format", "json"],
    ]
)
SPECS = st.sampled_from(["specs/cs336_lm.mspec", "specs/mlp.mspec", "specs/llama.mspec"])


def _numbers(doc):
    """Every int in a JSON document (bools aside)."""
    if isinstance(doc, bool):
        return
    if isinstance(doc, int):
        yield doc
    elif isinstance(doc, dict):
        for v in doc.values():
            yield from _numbers(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _numbers(v)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(command=COMMANDS, spec=SPECS, flags=st.lists(FLAGS, max_size=4))
def test_the_command_line_ends_cleanly(command, spec, flags, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = [command[0], spec, *command[1:], *(part for flag in flags for part in flag)]
    capsys.readouterr()
    with time_limit(SECONDS, f"memspec {' '.join(argv)}"):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's refusals
            code = exit_.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    assert code in (0, 2, 3), (argv, code)
    if code == 2:
        assert LOCATED.search(err), (argv, err)
        return
    doc = json.loads(out, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    values = doc.get("values", {}) if isinstance(doc, dict) else {}
    assert all(n >= 0 for n in _numbers(values)), argv
    if command[0] == "sweep":
        assert all(v is None or v >= 0 for v in doc["columns"]["peak"]), argv


# --- random well-formed specs ----------------------------------------------------------------

# layers a random model chains, each [b, D] -> [b, D]; {k} a small factor
STEPS = [
    "relu({x})",
    "gelu({x})",
    "lin{i}({x})",
    "norm{i}({x})",
    "mlp{i}({x})",
    "drop({x})",
]
MEMBERS = {
    "lin": "    lin{i} = Linear(D, D)",
    "norm": "    norm{i} = LayerNorm(D)",
    "mlp": "    mlp{i} = repeat {count} of Mlp(D, {width})",
}
COUNTS = ["N", "2", "N - 1", "N + 1", "N / 2", "1", "0"]
WIDTHS = ["D", "2 * D", "D - 4", "D / 2", "4 * D", "F", "F - D"]
SIZES = st.integers(min_value=0, max_value=3) | st.integers(min_value=1, max_value=4096)


def _spec(steps: list[int], counts: list[int], widths: list[int]) -> str:
    members, x = [], "x"
    for i, step in enumerate(steps):
        template = STEPS[step % len(STEPS)]
        kind = template.split("{")[0]
        if kind in MEMBERS:
            count = COUNTS[counts[i % len(counts)] % len(COUNTS)]
            width = WIDTHS[widths[i % len(widths)] % len(WIDTHS)]
            members.append(MEMBERS[kind].format(i=i, count=count, width=width))
        x = template.format(i=i, x=x).replace("drop(", "dropout(", 1)
    lines = [
        "use std",
        "dim batch_size as B",
        "dim d_model as D",
        "dim num_layers as N",
        "dim d_ff as F = 4 * D",
        "layer Mlp(d, width) {",
        "    up = Linear(d, width)",
        "    down = Linear(width, d)",
        "    forward(x: [b, d]) -> [b, d] {",
        "        return down(gelu(up(x)))",
        "    }",
        "}",
        "model M {",
        *members,
        "    forward(x: [B, D], y: [B, D]) {",
        f"        return mse_loss({x}, y)",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    steps=st.lists(st.integers(0, 5), min_size=1, max_size=6),
    counts=st.lists(st.integers(0, 6), min_size=1, max_size=3),
    widths=st.lists(st.integers(0, 6), min_size=1, max_size=3),
    sizes=st.fixed_dictionaries({"B": SIZES, "D": SIZES, "N": SIZES}),
    bind=st.booleans(),
)
def test_random_specs_give_sizes_that_can_be_or_a_located_refusal(
    steps, counts, widths, sizes, bind
):
    text = _spec(steps, counts, widths)
    try:
        with time_limit(SECONDS, "a random spec"):
            result = compile_spec(text, set=sizes if bind else None, time_limit=None)
    except MemspecError as err:
        assert err.span is not None or "--set" in err.message or "bind" in err.message, (
            text,
            err.render(),
        )
        assert re.match(r"(\S+:\d+:\d+|memspec): error: ", err.render()), err.render()
        return
    if not bind:
        return
    for category in result.categories.values():
        value = result.value(category.bytes)
        assert value is not None and value >= 0, (text, sizes, category.name, value)
    if result.peak is not None:
        assert result.peak.value >= 0, (text, sizes)
        # the peak holds at least the parameters (they live through the step)
        assert result.peak.value >= result.value(result.categories["parameters"].bytes)
