"""Integer tensors through cat and the float-computing pointwise ops, as torch 2.13 types
them; and a model whose output is not a scalar (verify sums it: `out.float().sum()`)."""

from __future__ import annotations

import pytest
import torch

from memspec import compile_spec
from memspec.ir.types import DType
from memspec.lower.values import torch_dtype
from tests.elaborate.exact import assert_exact

SPEC = """use std
dim batch_size as B = 2
dim seq_len as L = 3
dim d_model as D = 4
train {{ precision {precision} }}
model M {{
    emb = Embedding(4 * L, D)
    forward(x: [B, 2 * L, D]) {{
        positions = {expr}
        return mse_loss(x * {use}, x)
    }}
}}
"""
USE_INDEX = 'rearrange(emb(positions), "l d -> 1 l d")'
USE_FLOAT = 'rearrange(cat(positions, positions), "l -> 1 l 1")'


def _dtype(expr: str, use: str, precision: str = "fp32") -> DType:
    r = compile_spec(SPEC.format(expr=expr, use=use, precision=precision))
    return next(v for v in r.graph.values if v.path.endswith("positions")).dtype


@pytest.mark.parametrize(
    ("expr", "tensors"),
    [
        ("cat(arange(L), arange(L))", [torch.arange(3), torch.arange(3)]),
        ("cat(arange(L), arange(L) * 2, dim = 0)", [torch.arange(3), torch.arange(3) * 2]),
    ],
)
def test_cat_of_integers_stays_integer_and_indexes(expr, tensors):
    assert torch_dtype(_dtype(expr, USE_INDEX)) == torch.cat(tensors).dtype == torch.int64


def test_cat_promotes_like_torch():
    expr = "cat(arange(L), arange(L) * 0.5)"
    expected = torch.cat([torch.arange(3), torch.arange(3) * 0.5]).dtype
    assert torch_dtype(_dtype(expr, 'rearrange(positions, "l -> 1 l 1")')) == expected


@pytest.mark.parametrize("op", ["exp", "sin", "cos", "sigmoid", "tanh"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_float_ops_of_integers_are_float32(op, precision):
    # under bf16 activations too: torch promotes an integer input to its default dtype
    expected = getattr(torch, op)(torch.arange(3)).dtype
    assert expected == torch.float32
    expr = f"{op}(cat(arange(L), arange(L)))"
    assert _dtype(expr, 'rearrange(positions, "l -> 1 l 1")', precision) is DType.float32


def test_integer_cat_and_exp_verify_exactly():
    spec = SPEC.format(
        expr="cat(arange(L), arange(L) + L)",
        use=f'{USE_INDEX} * rearrange(exp(cat(arange(L), arange(L))), "l -> 1 l 1")',
        precision="fp32",
    )
    assert_exact(compile_spec(spec, convention="autograd"))


NON_SCALAR = """use std
dim batch_size as B = 64
dim d_model as D = 4
{train}
model M {{
    {members}
    forward(x: [B, D]) {{
        return {body}
    }}
}}
"""
MLP = ("lin = Linear(D, 4 * D)\n    out = Linear(4 * D, D)", "out(relu(lin(x))) * 2")
WIDE = ("lin = Linear(D, 64 * D)", "lin(x)")


@pytest.mark.parametrize(
    ("train", "model", "phase", "where"),
    [
        ("", MLP, "backward", "relu"),  # the seed's expanded view is out's gradient
        ("train { precision bf16 }", MLP, "backward", "relu"),  # a bf16 cast of it
        ("train { precision bf16 }", WIDE, "forward", "out.float().sum()"),  # the f32 copy
    ],
)
def test_a_non_scalar_output_is_summed_as_verify_does(train, model, phase, where):
    members, body = model
    r = compile_spec(NON_SCALAR.format(train=train, members=members, body=body),
                     convention="autograd")
    winner = r.peak.winner()
    assert (winner.phase.value, winner.where) == (phase, where)
    assert_exact(r)
