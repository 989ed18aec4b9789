"""A new primitive op is one `OpDef`: defined here, in the test, and nowhere else.

`cube(x) = x ** 3` is registered by the fixture below with its shape rule, its saved
tensor (its input, as torch's PowBackward0 keeps) and its torch lowering; a spec then
calls it like any built-in op, and compiling, the reports, the true peak and `memspec
verify`'s measurement of a real PyTorch step all work with no other file touched.
"""

from __future__ import annotations

import json

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.ir.graph import Graph, OpApply
from memspec.ops.catalog import catalog_text
from memspec.ops.registry import (
    REGISTRY,
    InferContext,
    OpDef,
    OpKind,
    OutputSpec,
    Saved,
    register,
)

SPEC = """
use std
dim batch_size as B
dim d_model as D
dim classes as C
model Toy {
    proj = Linear(D, D)
    head = Linear(D, C)
    forward(x: [B, D], targets: int64[B]) {
        return cross_entropy(head(cube(proj(x))), targets)
    }
}
"""
SIZES = {"B": 2, "D": 4, "C": 3}
B, D, C = (sp.Symbol(s, integer=True, positive=True) for s in "BDC")


def _cube_infer(ctx: InferContext) -> tuple[OutputSpec, ...]:
    """Shape rule of cube: the input's."""
    (x,) = ctx.inputs
    return (OutputSpec(x.shape, ctx.float_dtype()),)


def _cube_saved(op: OpApply, graph: Graph) -> tuple[Saved, ...]:
    """Saved tensors of x.pow(3): the input."""
    return (Saved("input", op.inputs[0]),)


@pytest.fixture
def cube():
    op = register(
        OpDef(
            "cube",
            "x ** 3",
            ("x",),
            _cube_infer,
            _cube_saved,
            lower=lambda tensors, attrs: tensors[0].pow(3),
            kind=OpKind.ELEMENTWISE,
            shape_doc="x's shape",
            saved_doc="the input",
        )
    )
    yield op
    del REGISTRY[op.name]


def test_a_spec_using_the_new_op_compiles_and_reports(cube):
    result = compile_spec(SPEC, convention="autograd", set=SIZES)
    activations = result.categories["activations"]
    items = {item.path: item.note for item in activations.items}
    assert items["proj"] == "saved by cube (input)"
    assert items["cube"] == "saved by linear (input)"
    # x, cube's input and output, the log-probabilities, the targets, total_weight
    assert sp.expand(activations.elements - (3 * B * D + B * C + B + 1)) == 0
    assert result.value(activations.bytes) == 4 * (3 * 8 + 6 + 1) + 8 * 2
    assert result.value(result.peak.bytes) == 660
    assert [item.op for item in result.flops.items] == ["linear", "linear"]  # no FLOP rule
    assert "saved by cube (input)" in result.to_markdown()
    assert "saved by cube (input)" in result.to_latex()
    doc = json.loads(result.to_json())
    assert doc["values"]["activations"] == {"elements": 33, "bytes": 140}
    assert "cube(x)  [elementwise]" in catalog_text()


def test_verify_measures_exactly_what_the_new_op_predicts(cube):
    from memspec.verify.compare import compare
    from memspec.verify.measure import measure_step
    from memspec.verify.peak import compare_peak, measure_peak

    result = compile_spec(SPEC, convention="autograd", set=SIZES)
    tables = compare(result, measure_step(result))
    assert [(t.category, r) for t in tables for r in t.rows if r.difference] == []
    activations = next(t for t in tables if t.category == "activations")
    assert activations.measured == 140
    # the true peak against PyTorch's tracker on fake tensors: equal in every category
    # once AdamW's `step` counters (4 bytes for each of the 2 weights) are added
    peak = compare_peak(result, measure_peak(result, result.peak.options))
    assert peak.predicted == 660 and peak.measured == 660 + 2 * 4
    assert [(t.name, t.category, t.bytes) for t in peak.terms] == [
        ("AdamW step counters", "OPT", 8)]
    assert peak.ok


def test_the_op_is_gone_after_the_test():
    assert "cube" not in REGISTRY
