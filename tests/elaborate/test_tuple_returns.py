"""A fn or forward returns several values (`return lo, hi`); the caller unpacks them."""

from __future__ import annotations

import pytest

from memspec import compile_spec
from memspec.syntax import nodes as n
from memspec.syntax.parse import parse
from tests.conftest import SPECS
from tests.elaborate.exact import assert_exact, cli_error

SPEC = """use std
dim batch_size as B = 2
dim d_model as D = 8

fn halves(x: [b, d]) {
    return narrow(x, -1, 0, d / 2), narrow(x, -1, d / 2, d / 2)
}

layer Split(d) {
    lin = Linear(d, d)
    forward(x: [b, d]) {
        y = lin(x)
        return relu(y), y
    }
}

model M {
    split = Split(D)
    forward(x: [B, D], target: [B, D / 2]) {
        a, y = split(x)
        lo, hi = halves(a + y)
        return mse_loss(lo * hi, target)
    }
}
"""


def test_return_of_several_values_parses_as_a_tuple():
    fn = next(x for x in parse(SPEC).decls if getattr(x, "name", None) == "halves")
    (ret,) = fn.body.variants[0][1]
    assert isinstance(ret, n.StmtReturn)
    assert isinstance(ret.value, n.ExprTuple)
    assert [type(i).__name__ for i in ret.value.items] == ["ExprCall", "ExprCall"]
    assert (ret.value.span.line, ret.value.span.col) == (6, 12)


def test_unpacked_values_are_the_returned_tensors():
    r = compile_spec(SPEC, convention="autograd")
    saved = [(i.note, r.value(i.bytes)) for i in r.categories["activations"].items]
    assert r.value(r.categories["parameters"].bytes) == 4 * 8 * 8  # std Linear: no bias by default
    # lo and hi are two views of one storage, a + y [2, 8]: mul saves it once
    assert saved == [
        ("saved by linear (input)", 64),
        ("saved by relu (output)", 64),
        ("saved by mul (right operand), mul (left operand)", 64),
        ("saved by mse_loss (input)", 32),
        ("saved by mse_loss (target)", 32),
    ]


def test_tuple_returns_verify_exactly():
    assert_exact(compile_spec(SPEC, convention="autograd"))


def test_llama_rotary_tables_come_from_one_std_fn():
    text = (SPECS / "llama.mspec").read_text()
    assert "hf_rotary_tables(rotary_emb.inv_freq, position_ids," in text
    r = compile_spec(SPECS / "llama.mspec")
    assert any(op.path == "model.hf_rotary_tables.matmul" for op in r.graph.ops)


MISUSES = [
    (SPEC.replace("a, y = split(x)", "a = split(x)"), "20:13",
     "split returns 2 tensors; name each: `a, b = split(...)`"),
    (SPEC.replace("lo, hi = halves(a + y)", "lo, hi, z = halves(a + y)"), "21:21",
     "3 names to unpack, but the value is 2 tensors"),
    (SPEC.replace("fn halves(x: [b, d]) {", "fn halves(x: [b, d]) -> [b, d] {"), "5:25",
     "halves returns 2 values, but its signature declares one type"),
    (SPEC.replace("return mse_loss(lo * hi, target)", "return lo, hi"), "19:44",
     "model M's forward returns 2 values; it returns one"),
]


@pytest.mark.parametrize(("text", "where", "message"), MISUSES)
def test_misuse_is_a_located_error(text, where, message, tmp_path, capsys):
    err = cli_error(tmp_path, text, capsys)
    head, line, caret = err.splitlines()[:3]
    assert head.startswith(f"spec.mspec:{where}: error: {message}")
    assert line == text.splitlines()[int(where.split(":")[0]) - 1]
    assert caret.strip().startswith("^")
