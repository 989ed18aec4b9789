"""List literals (`[2, 2, 6, 2]`) for per-stage values, indexed by an integer literal or
a name bound to an integer (a layer argument, a `let`, a repeat's index)."""

from __future__ import annotations

import pytest

from memspec import compile_spec
from memspec.syntax import nodes as n
from memspec.syntax.parse import parse
from tests.conftest import ROOT
from tests.elaborate.exact import assert_exact, cli_error

SPEC = ROOT / "tests" / "specs" / "lists.mspec"
TEXT = SPEC.read_text()


def test_lists_and_indexing_parse():
    let = next(d for d in parse(TEXT).decls if getattr(d, "name", None) == "widths")
    assert let.value == n.ExprList(
        (n.ExprName("D"), n.ExprBinary("*", n.ExprInt(2), n.ExprName("D")))
    )
    module = parse("let a = []\nlet b = [1, 2,]\nlet c = a[0][1]\n")
    values = [d.value for d in module.decls]
    assert values[0] == n.ExprList(())
    assert values[1] == n.ExprList((n.ExprInt(1), n.ExprInt(2)))
    assert values[2] == n.ExprIndex(n.ExprIndex(n.ExprName("a"), n.ExprInt(0)), n.ExprInt(1))


def test_per_stage_depths_and_widths():
    r = compile_spec(SPEC)
    params = {i.path: r.value(i.total_elements) for i in r.categories["parameters"].items}
    # depths [2, 1], widths [4, 8]: two 4x4 blocks, a 4->8 projection, one 8x8 block
    assert params == {
        "first.lin.weight": 2 * 16,
        "second.proj.weight": 32,
        "second.blocks.lin.weight": 64,
    }
    regions = sorted((reg.path, r.value(reg.count)) for reg in r.graph.regions)
    assert regions == [("first", 2), ("second.blocks", 1)]


def test_lists_verify_exactly():
    assert_exact(compile_spec(SPEC, convention="autograd"))


MISUSES = [
    ("depths[0] of", "depths[2] of", "19:20", "index 2 is out of range for a list of 2"),
    ("depths[0] of", "depths[D] of", "19:27", "a list index must be an integer, got a number (D)"),
    ("depths[0] of", "depths[0.5] of", "19:27",
     "a list index must be an integer, got a number (1/2)"),
    ("depths[0] of", "D[0] of", "19:20", "only lists can be indexed; this is a number"),
    ("Block(widths[0])", "Block(widths)", "7:5", None),
]


@pytest.mark.parametrize(("old", "new", "where", "message"), MISUSES)
def test_misuse_is_a_located_error(old, new, where, message, tmp_path, capsys):
    text = TEXT.replace(old, new, 1)
    err = cli_error(tmp_path, text, capsys)
    head, line, caret = err.splitlines()[:3]
    if message is None:  # a list where a size belongs: the error names the list
        assert "a list of 2" in head
        return
    assert head == f"spec.mspec:{where}: error: {message}"
    assert line == text.splitlines()[int(where.split(":")[0]) - 1]
    assert caret.strip().startswith("^")
