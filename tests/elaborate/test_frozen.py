"""Frozen parameters (`param table: [P, D] frozen`): torch's requires_grad=False.

Counted in the parameters (model.parameters() holds them), with no gradient and no
optimizer state; an op whose only input needing a gradient is frozen records no
backward node, so saves nothing; verify and verify --peak agree to the byte."""

from __future__ import annotations

import pytest

from memspec import compile_spec
from memspec.lower.module import LoweredModel
from memspec.passes.parameters import FROZEN
from memspec.passes.peak import StepOptions
from memspec.syntax import decls as d
from memspec.syntax.parse import parse
from tests.conftest import ROOT
from tests.elaborate.exact import assert_exact, cli_error

SPEC = ROOT / "tests" / "specs" / "frozen.mspec"


def _elements(result, category: str) -> dict[str, int]:
    return {i.path: result.value(i.total_elements) for i in result.categories[category].items}


def test_frozen_parses_on_a_param():
    decls = parse(SPEC.read_text()).decls
    layer = next(x for x in decls if getattr(x, "name", "") == "FixedPositions")
    (param,) = [s for s in layer.body if isinstance(s, d.LayerParam)]
    assert (param.name, param.frozen) == ("table", True)


def test_counted_as_parameters_without_gradient_or_state():
    r = compile_spec(SPEC)
    assert _elements(r, "parameters") == {
        "wte.weight": 128, "wpe.table": 32, "features.weight": 64, "mix.weight": 64,
        "proj.weight": 64,
    }
    notes = {i.path: i.note for i in r.categories["parameters"].items}
    assert [p for p, note in notes.items() if note == FROZEN] == [
        "wpe.table", "features.weight", "mix.weight"]
    assert _elements(r, "gradients") == {"wte.weight.grad": 128, "proj.weight.grad": 64}
    assert _elements(r, "optimizer_state") == {
        "wte.weight.exp_avg": 128, "wte.weight.exp_avg_sq": 128,
        "proj.weight.exp_avg": 64, "proj.weight.exp_avg_sq": 64,
    }
    # AdamW's update FLOPs cover the 192 trained elements only
    assert r.value(r.flops.parameters) == 192


def test_nothing_is_saved_for_a_frozen_only_branch():
    r = compile_spec(SPEC, convention="autograd")
    saved = {i.path: r.value(i.bytes) for i in r.categories["activations"].items}
    # relu(features(feats)) and mix's product save nothing: no weight gradient is made
    assert saved == {"tokens": 64, "h": 256, "proj": 256, "cross_entropy.log_probs": 512,
                     "targets": 64, "cross_entropy.total_weight": 4}


def test_lowered_as_requires_grad_false():
    r = compile_spec(SPEC)
    model = LoweredModel(r.graph, r.substitutions())
    frozen = sorted(n for n, p in model.named_parameters() if not p.requires_grad)
    assert frozen == ["features.weight", "mix.weight", "wpe.table"]


@pytest.mark.parametrize("impl", ["for_loop", "foreach"])
@pytest.mark.parametrize("optimizer", ["adamw", "sgd_momentum"])
def test_frozen_verifies_exactly(impl, optimizer):
    step = StepOptions(optimizer_impl=impl)
    assert_exact(compile_spec(SPEC, convention="autograd", optimizer=optimizer, step=step))


def test_frozen_on_a_buffer_is_a_syntax_error(tmp_path, capsys):
    old = "param table: [max_len, d] frozen"
    text = SPEC.read_text().replace(old, "buffer table: [max_len, d] frozen")
    head, line, caret = cli_error(tmp_path, text, capsys).splitlines()[:3]
    assert head.startswith("spec.mspec:11:32: error: unexpected 'frozen'")
    assert line == "    buffer table: [max_len, d] frozen"
    assert caret == " " * 31 + "^~~~~~"
