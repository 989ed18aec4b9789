"""Untrusted input: mutated specs give a located error or a report, never a crash.

A grammar-aware mutator works on the token stream of real specs: it deletes, duplicates,
swaps and replaces tokens with ones the grammar knows (keywords, punctuation, names,
numbers, extreme values). Every outcome must be a `MemspecError` that renders as
`FILE:LINE:COL: error: ...` (or a command-line style error without a location), or a
compile result whose reports render.
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memspec import MemspecError, compile_spec
from tests.conftest import ROOT, SPECS

BASES = [
    (SPECS / "cs336_lm.mspec").read_text(),
    (ROOT / "tests" / "specs" / "std_layers.mspec").read_text(),
    """
use std
dim batch_size as B
dim d_model as D
model M {
    lin = Linear(D, D, bias = true)
    forward(x: [B, D]) { return softmax(lin(x)) : [B, D] }
}
preset p { B = 2, D = 3 }
expect params == 12 at p
""",
]
TOKEN = re.compile(r'"[^"\n]*"|#[^\n]*|[A-Za-z_][A-Za-z0-9_]*|\d[\d_]*(?:\.\d+)?(?:e-?\d+)?|'
                   r"\*\*|//|->|==|!=|<=|>=|\.\.\.|\S")
VOCAB = [
    "layer", "model", "fn", "dim", "let", "param", "buffer", "forward", "return", "repeat",
    "of", "use", "std", "preset", "expect", "at", "train", "variant", "if", "else", "as", "and",
    "(", ")", "[", "]", "{", "}", ",", ":", ";", "=", "+", "-", "*", "/", "**", "//", "->", "...",
    "B", "D", "L", "N", "x", "Linear", "Block", "softmax", "rearrange", "einsum", "int64",
    "0", "1", "-1", "2", "1e-5", "10 ** 10 ** 10", "99999999999999999999", "0.5",
    '"b (h d) -> b h d"', '"no_such.mspec"', '""', "true", "false", "\n",
]


NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")
NUMBERS = ["0", "1", "2", "3", "7", "1000", "100000000000000000000", "0.25"]


def mutate(text: str, ops: list[tuple[int, int, int]]) -> str:
    """Apply (kind, i, j) edits; kinds 5 and 6 keep the syntax and test later stages."""
    tokens = TOKEN.findall(text)
    for kind, i, j in ops:
        if not tokens:
            break
        i %= len(tokens)
        j %= len(tokens)
        if kind >= 5:
            pattern = NAME if kind == 5 else re.compile(r"\d")
            spots = [k for k, t in enumerate(tokens) if pattern.match(t)]
            if spots:
                k = spots[i % len(spots)]
                if kind == 5:
                    tokens[k] = tokens[spots[j % len(spots)]]  # another name of the spec
                else:
                    tokens[k] = NUMBERS[j % len(NUMBERS)]
        elif kind == 0:
            del tokens[i]
        elif kind == 1:
            tokens.insert(i, tokens[j])
        elif kind == 2:
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif kind == 3:
            tokens[i] = VOCAB[j % len(VOCAB)]
        else:
            tokens.insert(i, VOCAB[j % len(VOCAB)])
    # Newlines end comments; everything else needs only a space between tokens.
    return " ".join(t + "\n" if t.startswith("#") else t for t in tokens)


def check(text: str) -> None:
    try:
        result = compile_spec(text)
    except MemspecError as err:
        rendered = err.render()
        assert ": error: " in rendered
        if err.span is not None:
            assert rendered.startswith(f"{err.span.source.name}:{err.span.line}:{err.span.col}:")
        return
    result.to_json()
    result.to_markdown()


def operations(kinds):
    index = st.integers(0, 10**6)
    return st.lists(st.tuples(st.sampled_from(kinds), index, index), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(range(len(BASES))), ops=operations(range(7)))
def test_mutated_specs_fail_cleanly(base, ops):
    check(mutate(BASES[base], ops))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from(range(len(BASES))), ops=operations([2, 5, 6]))
def test_specs_that_still_parse_fail_cleanly(base, ops):
    # Swapped names and numbers mostly parse, so they reach elaboration, shapes and passes.
    check(mutate(BASES[base], ops))


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=200))
def test_arbitrary_text_fails_cleanly(text):
    check(text)


def test_the_mutator_keeps_a_valid_spec_valid():
    # With no mutation the token round trip must still compile, or the fuzzer tests little.
    for text in BASES:
        assert compile_spec(mutate(text, [])).categories["parameters"].items
