"""`repeat N as i of Layer(..., i)`: repetitions that differ by index (issue #11).

DeepSeek's dense first layer (`i == 0`) and Gemma-2's alternating sliding and global
attention (`i % 2 == 0`) split a repeat into uniform regions: layer 0 apart and a region
`[1:]` of N - 1, or a region of N/2 repetitions of a two-layer pattern. Every count is
exact, and `verify` and `verify --peak` equal torch to the byte.
"""

from __future__ import annotations

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.cli import main
from memspec.errors import SpecValueError
from memspec.ir.verify import verify
from memspec.lower.module import LoweredModel
from memspec.passes.peak import StepOptions
from memspec.syntax.decls import LayerSub
from memspec.syntax.parse import parse
from memspec.verify.compare import compare
from memspec.verify.measure import measure_step
from memspec.verify.peak import compare_peak, measure_peak
from tests.conftest import ROOT

SPEC = ROOT / "tests" / "specs" / "repeat_index.mspec"
TINY = {"B": 2, "L": 8, "V": 32, "D": 16, "N": 4, "H": 2, "W": 3}
D, N, V = sp.symbols("D N V", positive=True, integer=True)


def _param_paths(result) -> list[str]:
    return [i.path for i in result.categories["parameters"].items]


def test_the_index_is_parsed():
    module = parse("model M { layers = repeat N as i of Block(D, first = i == 0) }", "t.mspec")
    sub = module.decls[0].body[0]
    assert isinstance(sub, LayerSub)
    assert (sub.name, sub.index, sub.layer) == ("layers", "i", "Block")


def test_a_split_repeat_is_uniform_regions_with_readable_names():
    result = compile_spec(SPEC)
    verify(result.graph)
    regions = {r.path: r.count for r in result.graph.regions}
    assert regions == {"first_dense[1:]": N - 1, "alternating": N / 2}
    paths = _param_paths(result)
    assert "first_dense.0.mlp.w1.weight" in paths
    assert "first_dense[1:].mlp.w1.weight" in paths
    assert "alternating[0::2].block.qkv.weight" in paths
    assert "alternating[1::2].block.qkv.weight" in paths
    assert next(a.text for a in result.graph.assumptions) == "2 divides N"


def test_parameter_counts_are_exact():
    result = compile_spec(SPEC)
    block = 4 * D**2 + D  # norm, qkv, out
    dense, small = block + 12 * D**2, block + 6 * D**2
    expected = 2 * V * D + dense + (N - 1) * small + (N / 2) * (dense + dense)
    total = sum(i.elements * i.multiplicity for i in result.categories["parameters"].items)
    assert sp.expand(total - expected) == 0
    at_tiny = compile_spec(SPEC, preset="tiny")
    # 8 layers of norm, qkv and out; 5 dense MLPs (12 D^2), 3 small ones (6 D^2)
    d = 16
    assert at_tiny.value(total) == 2 * 32 * d + 8 * (4 * d**2 + d) + 5 * 12 * d**2 + 3 * 6 * d**2


def test_the_lowering_numbers_the_layers_as_pytorch_does():
    result = compile_spec(SPEC, preset="tiny")
    keys = set(LoweredModel(result.graph, result.substitutions()).state_dict())
    layer = ("norm.weight", "qkv.weight", "out.weight", "mlp.w1.weight", "mlp.w2.weight",
             "mlp.w3.weight")
    expected = {f"first_dense.{i}.{k}" for i in range(4) for k in layer}
    expected |= {f"alternating.{i}.block.{k}" for i in range(4) for k in layer}
    assert keys == expected | {"embed.weight", "head.weight"}


@pytest.mark.parametrize(
    ("sizes", "use"),
    [(TINY, ["math"]), ({**TINY, "N": 8, "B": 1}, ["flash"]), ({**TINY, "N": 6}, ["eager"])],
)
def test_step_and_peak_equal_pytorchs(sizes, use):
    result = compile_spec(SPEC, set=sizes, use=use, convention="autograd")
    tables = compare(result, measure_step(result))
    assert [(t.category, r.name) for t in tables for r in t.rows if r.difference] == []
    peak = compare_peak(result, measure_peak(result, StepOptions()))
    items = result.categories["parameters"].items
    counters = 4 * sum(result.value(i.multiplicity) for i in items)
    assert {t.name: t.bytes for t in peak.terms} == {"AdamW step counters": counters}
    assert peak.expected == peak.measured


def test_a_leading_layer_and_a_pattern_at_once():
    text = SPEC.read_text().replace("dense = i == 0)", "dense = i == 0 or i % 2 == 1)")
    text = text.replace("repeat N as i of AlternatingBlock(D, H, W, i)",
                        "repeat N of AlternatingBlock(D, H, W, 0)")
    result = compile_spec(text, set={**TINY, "N": 7}, convention="autograd")
    regions = {r.path: r.count for r in result.graph.regions}
    assert regions["first_dense[1:]"] == (N - 1) / 2
    paths = _param_paths(result)
    assert "first_dense[1::2].mlp.w1.weight" in paths  # odd: dense, 4D
    assert "first_dense[2::2].mlp.w1.weight" in paths
    shapes = {i.path: i.shape for i in result.categories["parameters"].items}
    assert shapes["first_dense[1::2].mlp.w1.weight"] == (4 * D, D)
    assert shapes["first_dense[2::2].mlp.w1.weight"] == (2 * D, D)
    tables = compare(result, measure_step(result))
    assert all(t.predicted == t.measured for t in tables)


def test_an_unused_index_is_the_plain_repeat():
    plain = compile_spec(SPEC.read_text().replace("repeat N as i of Block(D, H, dense = i == 0)",
                                                  "repeat N of Block(D, H)"))
    named = compile_spec(SPEC.read_text().replace("repeat N as i of Block(D, H, dense = i == 0)",
                                                  "repeat N as i of Block(D, H)"))
    assert plain.graph.regions == named.graph.regions
    assert _param_paths(plain) == _param_paths(named)


def _error(tmp_path, capsys, old: str, new: str, *args: str) -> str:
    spec = tmp_path / "bad.mspec"
    spec.write_text(SPEC.read_text().replace(old, new))
    assert old in SPEC.read_text()
    code = main(["compile", str(spec), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    return err.replace(str(spec), "bad.mspec")


def test_a_pattern_that_does_not_fill_the_count_is_an_error(tmp_path, capsys):
    err = _error(tmp_path, capsys, "N = 4,", "N = 5,", "--preset", "tiny")
    assert err.splitlines() == [
        "bad.mspec:39:26: error: the conditions on 'i' repeat a pattern of 2 layers, so its "
        "5 repetitions must be a multiple of 2",
        "    alternating = repeat N as i of AlternatingBlock(D, H, W, i)",
        "                         ^",
    ]


def test_a_condition_on_the_index_in_a_forward_is_an_error(tmp_path, capsys):
    err = _error(
        tmp_path, capsys,
        "forward(x: [b, s, d]) -> [b, s, d] { return block(x) }",
        "forward(x: [b, s, d]) -> [b, s, d] {\n        if layer_idx < 2 { return block(x) }\n"
        "        return x\n    }",
    )
    first = err.splitlines()[0]
    assert first.startswith("bad.mspec:34:12: error: cannot decide this condition on the repeat "
                            "index 'i' for all the repetitions it stands for")
    assert err.splitlines()[2] == "           ^~~~~~~~~~~~~"


def test_an_unsupported_condition_is_an_error(tmp_path, capsys):
    err = _error(tmp_path, capsys, "dense = i == 0)", "dense = i == N - 1)")
    assert err.splitlines()[0] == (
        "bad.mspec:38:56: error: a condition on the repeat index 'i' compares it with a "
        "constant (`i == 0`, `i < 3`) or tests its remainder (`i % 2 == 0`); this one is "
        "neither"
    )


def test_a_size_that_depends_on_the_index_is_an_error(tmp_path, capsys):
    err = _error(tmp_path, capsys, "Block(D, H, dense = i == 0)", "Block(D * (i + 1), H)")
    assert "depends on the repeat index 'i'" in err.splitlines()[0]


def test_too_many_layers_apart_is_an_error():
    text = SPEC.read_text().replace("dense = i == 0)", "dense = i == 100)")
    with pytest.raises(SpecValueError, match="more than 64 layers apart"):
        compile_spec(text)


def test_a_literal_count_caps_the_layers_set_apart():
    text = SPEC.read_text().replace("repeat N as i of Block(D, H, dense = i == 0)",
                                    "repeat 2 as i of Block(D, H, dense = i == 5)")
    result = compile_spec(text, preset="tiny")
    assert "first_dense.1.mlp.w1.weight" in _param_paths(result)
    assert [r.path for r in result.graph.regions] == ["alternating"]
