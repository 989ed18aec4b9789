"""`memspec sweep`: the grid, the exact evaluation, and every point against a compile.

The sweep compiles once with the grid's dims unbound and evaluates the formulas; where
torch would decide otherwise (B = 1, fewer than three repetitions, under a window) it
compiles again with those sizes bound. The test that matters compiles every point of
small grids with every size bound and asks for the same bytes in every column.
"""

import csv
import io
import itertools
import json
from pathlib import Path

import pytest
import sympy as sp

from memspec.cli import main
from memspec.compile import compile_spec
from memspec.errors import UsageError
from memspec.inference import Inference
from memspec.ir.sizes import watching
from memspec.passes.results import CATEGORY_TITLES
from memspec.sweep.evaluate import GridEvaluator
from memspec.sweep.grid import MAX_POINTS, parse_axis, points
from memspec.sweep.sweep import sweep

ROOT = Path(__file__).resolve().parent.parent
B, L, H = sp.symbols("B L H", integer=True, positive=True)


def _sweep(spec, grids, preset=None, sets=(), budget=None, **options):
    axes = tuple(parse_axis(g)[0] for g in grids)

    def compile_at(fixed, free):
        items = [*sets, *(f"{k}={v}" for k, v in fixed.items())]
        return compile_spec(ROOT / spec, preset=preset, set=items, unbound=free, **options)

    return axes, sweep(compile_at, axes, budget)


# --- the grid ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, values",
    [
        ("B=1,2,4,8", (1, 2, 4, 8)),
        ("L=1024:8192:x2", (1024, 2048, 4096, 8192)),
        ("L=1000:5000:x2", (1000, 2000, 4000)),
        ("B=1:5", (1, 2, 3, 4, 5)),
        ("B=2:11:3", (2, 5, 8, 11)),
        ("B=2:10:+4", (2, 6, 10)),
        ("batch_size=4,1:3,4", (4, 1, 2, 3)),  # distinct, in the order given
        ("D=1_024", (1024,)),
    ],
)
def test_axis_values(text, values):
    axis, count = parse_axis(text)
    assert axis.values == values and count == len(values)
    assert axis.name == text.partition("=")[0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("B", "expected NAME=VALUES"),
        ("B=", "expected NAME=VALUES"),
        ("B=0,1", "sizes are positive, got 0"),
        ("B=8:2", "ends below its start"),
        ("B=1:8:x1", "a factor of 2 or more"),
        ("B=1.5", "is not a value or a range"),
        ("B=-1", "is not a value or a range"),
        ("B=1:9:y2", "is not a value or a range"),
        ("B=1:2000000000000000", "larger than any model size"),
    ],
)
def test_axis_errors(text, message):
    with pytest.raises(UsageError, match=message):
        parse_axis(text)


def test_a_grid_too_large_is_refused_before_it_is_made():
    # one axis of 10^8: counted from the range, never materialised
    with pytest.raises(UsageError, match="100,000,000 values, more than the 10,000,000"):
        parse_axis("B=1:100000000")
    axes = (parse_axis("B=1:10000")[0], parse_axis("L=1:10000")[0])
    with pytest.raises(UsageError, match="is 100,000,000 points, more than the 10,000,000"):
        points(axes)
    assert MAX_POINTS == 10_000_000


# --- exact evaluation -----------------------------------------------------------------


def test_evaluation_is_exact_integers():
    grid = GridEvaluator([(B, (1, 2, 3)), (L, (5, 7))])
    values, inexact = grid.integers(3 * B * L / 2 + sp.ceiling(L / 4) + sp.Max(B, 2))
    expected = [[(3 * b * n) // 2 + -(-n // 4) + max(b, 2) for n in (5, 7)] for b in (1, 2, 3)]
    assert values.tolist() == expected
    # 3BL/2 is not whole where B and L are odd: those points are reported
    assert inexact.tolist() == [[True, True], [False, False], [True, True]]
    assert grid.holds(sp.Ne(B, 1)).tolist() == [[False, False], [True, True], [True, True]]
    assert grid.whole(L / 5).tolist() == [[True, False]] * 3


def test_past_int64_python_integers_keep_every_digit():
    big = 10**15
    grid = GridEvaluator([(B, (1, 3)), (L, (big,))])
    values, _ = grid.integers(B**2 * L**3 * 7 + 1)
    assert values.tolist() == [[7 * big**3 + 1], [63 * big**3 + 1]]


# --- the sizes a general compile takes for granted -----------------------------------------


def test_the_general_compile_names_what_it_takes_for_granted():
    with watching() as found:
        compile_spec(ROOT / "specs/cs336_lm.mspec", preset="gpt2_xl", unbound=("B", "L"))
    relations = {r for kind, r in found if kind == "holds"}
    assert sp.Ne(B, 1, evaluate=False) in relations
    assert sp.Ne(L, 1, evaluate=False) in relations
    with watching() as bound:  # every size bound: nothing left to take for granted
        compile_spec(ROOT / "specs/cs336_lm.mspec", preset="gpt2_xl", set=["B=2", "L=8"])
    assert bound == []


# --- every point against a compile with every size bound -----------------------------------

CASES = [
    ("specs/cs336_lm.mspec", ["B=1,2,3", "L=1,2,5"], "gpt2_xl", (), {}),
    ("specs/cs336_lm.mspec", ["N=1,2,3,4", "H=1,2,5"], "gpt2_xl", ("B=2", "L=8", "D=40"), {}),
    ("specs/llama.mspec", ["KV=1,2,32", "N=1,3,4"], "llama2_7b", ("B=2", "L=8"), {}),
    ("specs/mistral.mspec", ["B=1,2", "L=1,3,4096,5000"], "mistral_7b", (), {}),
    ("specs/cs336_lm.mspec", ["B=1,2", "L=1,3"], "gpt2_xl", (), {"zero": 3, "dp": 8}),
    ("specs/llama.mspec", ["B=1,2,3"], "llama2_7b", ("L=4",), {"tp": 2}),
    (
        "specs/llama.mspec",
        ["B=1,2,3"],
        "llama2_7b",
        (),
        {"inference": Inference(prompt_len=5, new_tokens=3)},
    ),
]


@pytest.mark.parametrize("spec, grids, preset, sets, options", CASES)
def test_every_point_equals_a_compile_at_its_sizes(spec, grids, preset, sets, options):
    axes, found = _sweep(spec, grids, preset, sets, **options)
    assert len(found.formulas) > 1  # some sizes (1s, few repetitions) compiled again
    for i, values in enumerate(itertools.product(*(a.values for a in axes))):
        items = [*sets, *(f"{a.name}={v}" for a, v in zip(axes, values, strict=True))]
        result = compile_spec(ROOT / spec, preset=preset, set=items, **options)
        expected = {k: result.value(result.categories[k].bytes) for k in CATEGORY_TITLES}
        expected["sum"] = sum(expected.values())
        expected["peak"] = result.peak.value
        got = {k: int(found.columns[k][i]) for k in expected}
        assert got == expected, values
        assert found.label(i) == result.peak.winner().label()


def test_python_integers_past_int64_equal_a_compile():
    _, found = _sweep(
        "specs/llama.mspec", ["L=1000000000:1000000000000:x1000"], "llama2_7b", ("B=8",)
    )
    assert found.columns["peak"].dtype == object
    result = compile_spec(
        ROOT / "specs/llama.mspec", preset="llama2_7b", set=["B=8", f"L={10**12}"]
    )
    assert int(found.columns["peak"][-1]) == result.peak.value > 2**63


def test_points_that_break_the_spec_get_the_reason_not_numbers():
    # H must divide D = 40: H = 3 breaks it, H = 5 does not
    _, found = _sweep("specs/cs336_lm.mspec", ["H=3,5"], "gpt2_xl", ("B=2", "L=8", "D=40"))
    assert found.error.tolist() == [0, -1]
    assert "the spec assumes" in found.errors[0] and "H" in found.errors[0]
    result = compile_spec(
        ROOT / "specs/cs336_lm.mspec", preset="gpt2_xl", set=["B=2", "L=8", "D=40", "H=5"]
    )
    assert int(found.columns["peak"][1]) == result.peak.value


# --- the command line -----------------------------------------------------------------------

GRID = ["sweep", "specs/cs336_lm.mspec", "--preset", "gpt2_xl", "--grid", "B=1,2,4,8",
        "--grid", "L=1024:8192:x2", "--budget", "80GB"]  # fmt: skip


def test_markdown_states_formulas_checks_and_values(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(GRID) == 0
    out = capsys.readouterr().out
    assert "Grid: B = 1, 2, 4, 8 (4 values) × L = 1,024, 2,048, 4,096, 8,192 (4 values)" in out
    assert "4 of 16 points fit" in out
    assert "Checked: compiled with every size bound at B = 1, L = 1,024 and B = 8, L = 8,192" in out
    assert "### At general sizes (12 points)" in out and "### At B = 1 (4 points)" in out
    assert "because there `B != 1` does not hold" in out
    # B = 1, L = 1024 is the golden report's peak (tests/golden/cs336_lm.gpt2_xl_b1.md)
    assert "| 1 | 1,024 | 6,542,150,400 |" in out and "| 31,022,473,480 |" in out
    assert main(GRID) == 0 and capsys.readouterr().out == out  # byte-identical


def test_csv_and_json_carry_the_same_columns(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main([*GRID, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 16 and rows[0]["B"] == "1" and rows[0]["L"] == "1024"
    assert rows[0]["peak"] == "31022473480" and rows[0]["fits"] == "True"
    assert main([*GRID, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["points"] == 16 and doc["grid"] == {"B": [1, 2, 4, 8], "L": [1024, 2048, 4096, 8192]}
    assert [str(v) for v in doc["columns"]["peak"]] == [r["peak"] for r in rows]
    assert sum(doc["columns"]["fits"]) == 4
    general = doc["formulas"][0]
    assert general["fixed"] == {} and general["holds_where"] == ["B != 1", "L != 1"]
    assert general["categories"]["activations"] == "9600*B*L**2 + 5323656*B*L"


def test_plots_are_written_and_deterministic(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    one = ["sweep", "specs/cs336_lm.mspec", "--preset", "gpt2_xl", "--grid", "B=1:8"]
    files = [tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.svg"]
    assert main([*GRID, "--format", "png", "-o", str(files[0])]) == 0
    assert main([*GRID, "--plot", str(files[1]), "-o", str(tmp_path / "t.md")]) == 0
    assert main([*one, "--set", "L=1024", "--plot", str(files[2])]) == 0
    assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert files[0].read_bytes() == files[1].read_bytes()
    assert b"<svg" in files[2].read_bytes()
    assert (tmp_path / "t.md").read_text().startswith("# Sweep of `TransformerLM`")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--grid", "B=1:100000000"], "100,000,000 values, more than the 10,000,000"),
        (["--grid", "B=1:10000", "--grid", "L=1:10000"], "is 100,000,000 points"),
        (["--grid", "Q=1,2"], "unknown symbol 'Q'"),
        (["--grid", "B=1,2", "--set", "B=4"], "--grid B: B is also given a value"),
        (["--grid", "B=1,2", "--grid", "batch_size=3"], "B is already swept"),
        (["--grid", "B=1,2", "--format", "png"], "give the file with -o"),
        (["--grid", "B=1,2", "--budget", "lots"], "expected a size such as 80GB"),
        (["--grid", "B=1:4", "--grid", "L=1:4", "--grid", "N=1,2", "--plot", "x.png"],
         "one or two dims"),
        (["--grid", "B=1:200", "--grid", "L=1:100"], "more than the 10,000 it prints"),
    ],
)  # fmt: skip
def test_bad_input_is_a_clear_error(args, message, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    base = ["sweep", "specs/cs336_lm.mspec", "--preset", "gpt2_xl"]
    if "--plot" in args:
        args = [*args[:-1], str(tmp_path / args[-1])]
    assert main([*base, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_every_other_dim_must_be_bound(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["sweep", "specs/cs336_lm.mspec", "--grid", "B=1,2"]) == 2
    assert "bind every dim the grid does not sweep (--set, --preset): unbound D, H, L, N, V" in (
        capsys.readouterr().err
    )
