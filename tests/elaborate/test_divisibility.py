"""`assume I % 4 == 0`: a size declared divisible, so strided shapes line up (issue #11).

A stride-2 conv of I gives floor((I - 1)/2) + 1, which is I/2 only for even I; a UNet's
skip concatenation needs it to be I/2. Without the fact the spec does not compile; with
it, every count is exact, `verify` and `verify --peak` equal torch to the byte, and a
bound value that breaks it is an error at the fact.
"""

from __future__ import annotations

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.cli import main
from memspec.errors import ShapeError, SpecValueError
from memspec.passes.peak import StepOptions
from memspec.syntax import decls as d
from memspec.syntax import nodes as n
from memspec.syntax.parse import parse
from memspec.verify.compare import compare
from memspec.verify.measure import measure_step
from memspec.verify.peak import compare_peak, measure_peak
from tests.conftest import ROOT

SPEC = ROOT / "tests" / "specs" / "unet_divisible.mspec"
B, C, IMG = sp.symbols("B C I", positive=True, integer=True)


def test_the_fact_parses_beside_a_note():
    module = parse('assume I % 4 == 0\nassume "a note"', "t.mspec")
    fact, note = module.decls
    assert fact == d.DeclAssumeSize(
        n.ExprBinary("==", n.ExprBinary("%", n.ExprName("I"), n.ExprInt(4)), n.ExprInt(0))
    )
    assert note == d.DeclAssume("a note")


def test_without_the_fact_the_shapes_do_not_line_up():
    text = SPEC.read_text().replace("assume I % 4 == 0", "")
    with pytest.raises(ShapeError, match=r"I/2 != floor\(I/2 - 1/2\) \+ 1"):
        compile_spec(text)


def test_with_it_the_shapes_are_exact():
    result = compile_spec(SPEC)
    assert [a.text for a in result.graph.assumptions] == ["4 divides I"]
    shapes = {i.path: i.shape for i in result.categories["activations"].items}
    assert shapes["s1"] == (B, 2 * C, IMG / 2, IMG / 2)
    assert shapes["s2"] == (B, 4 * C, IMG / 4, IMG / 4)
    params = result.categories["parameters"].elements
    convs = [(3, C, 3), (C, 2 * C, 3), (2 * C, 4 * C, 3), (6 * C, 2 * C, 3), (3 * C, C, 3),
             (C, 3, 1)]
    assert sp.expand(params - sum(o * (i * k * k + 1) for i, o, k in convs)) == 0


# B=1 C=4 I=16 and B=2 C=4 I=12 peak where s0's first gradient is cat's narrowed part and
# down1.conv's is added to it out of place: the sum is s0-sized (it was counted as the
# whole cat gradient, 1,536 B and 128 B over)
@pytest.mark.parametrize("sizes", [{"B": 2, "C": 4, "I": 16}, {"B": 2, "C": 3, "I": 12},
                                   {"B": 1, "C": 4, "I": 16}, {"B": 2, "C": 4, "I": 12}])
def test_step_and_peak_equal_pytorchs(sizes):
    result = compile_spec(SPEC, set=sizes, convention="autograd")
    tables = compare(result, measure_step(result))
    assert [(t.category, r.name) for t in tables for r in t.rows if r.difference] == []
    peak = compare_peak(result, measure_peak(result, StepOptions()))
    assert peak.expected == peak.measured


def test_a_bound_value_that_breaks_the_fact_is_an_error(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = main(["compile", "tests/specs/unet_divisible.mspec", "--preset", "tiny",
                 "--set", "I=18"])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        "tests/specs/unet_divisible.mspec:30:1: error: the spec assumes 4 divides I, which "
        "fails with these values (I/4 = 9/2)",
        "assume I % 4 == 0",
        "^~~~~~~~~~~~~~~~~",
    ]


@pytest.mark.parametrize(
    ("fact", "message"),
    [
        ("assume I > 4", "a fact about sizes reads `assume SIZE % k == 0`"),
        ("assume I % C == 0", "divisible by C: a positive whole number"),
        ("assume 6 % 4 == 0", "6 is not divisible by 4"),
    ],
)
def test_a_malformed_fact_is_an_error(fact, message, tmp_path, capsys):
    spec = tmp_path / "bad.mspec"
    spec.write_text(SPEC.read_text().replace("assume I % 4 == 0", fact))
    assert main(["compile", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "bad.mspec:30:" in err.splitlines()[0]
    assert message in err.splitlines()[0]
    with pytest.raises(SpecValueError):
        compile_spec(spec)
