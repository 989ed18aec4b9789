"""Integer tensors keep integer dtypes under integer arithmetic, as in torch.

`arange(L) + 2` is int64 and can index an embedding; a float operand or true division
makes the result float32. Each case is checked against `torch.result_type` too.
"""

from __future__ import annotations

import itertools

import pytest
import sympy as sp
import torch

from memspec import compile_spec
from memspec.errors import MemspecError
from memspec.ir.types import DType
from memspec.lower.values import torch_dtype
from memspec.ops.promotion import promote_types, result_type

SPEC = """
use std
dim batch_size as B = 2
dim seq_len as L = 5
dim vocab as V = 16
dim d_model as D = 4

model M {{
    emb = Embedding(V, D)
    forward(tokens: int64[B, L]) {{
        positions = {expr}
        y = emb(positions)
        return cross_entropy(linear(y + emb(tokens), emb.weight), tokens)
    }}
}}
"""


def _positions_dtype(expr: str) -> DType:
    r = compile_spec(SPEC.format(expr=expr))
    return next(v for v in r.graph.values if v.path.endswith("positions")).dtype


@pytest.mark.parametrize(
    "expr",
    ["arange(L) + 2", "2 + arange(L)", "arange(L) * 3", "arange(L) - 1", "1 - arange(L)",
     "-arange(L)", "arange(L) + arange(L)", "arange(L) * arange(L) - arange(L)",
     "arange(L) * D"],
)
def test_integer_arithmetic_indexes_an_embedding(expr):
    assert _positions_dtype(expr) is DType.int64


@pytest.mark.parametrize(
    "expr", ["arange(L) * 0.5", "arange(L) * 2.0", "arange(L) / 2", "arange(L) / arange(L)",
             "arange(L) + 0.5", "arange(L) * (1 / D)"],
)
def test_float_operands_and_true_division_make_floats(expr):
    with pytest.raises(MemspecError, match="indices must be an integer tensor, got float32"):
        _positions_dtype(expr)


def test_integer_division_by_one_is_refused():
    with pytest.raises(MemspecError, match="divided by 1 is a float32 copy"):
        _positions_dtype("arange(L) / 1")


_DTYPES = [DType.bool, DType.uint8, DType.int32, DType.int64, DType.float16, DType.bfloat16,
           DType.float32, DType.float64]


def _example(dtype: DType, rank: int) -> torch.Tensor:
    return torch.zeros((2,) * rank, dtype=torch_dtype(dtype))


def test_promotion_is_torchs():
    for a, b in itertools.product(_DTYPES, repeat=2):
        assert torch_dtype(promote_types(a, b)) == torch.promote_types(
            torch_dtype(a), torch_dtype(b))
        for ra, rb in itertools.product((0, 1), repeat=2):
            expected = torch.result_type(_example(a, ra), _example(b, rb))
            assert torch_dtype(result_type([(a, ra), (b, rb)])) == expected, (a, ra, b, rb)
        for number, python in ((sp.Integer(3), 3), (sp.Rational(1, 2), 0.5),
                               (sp.Float(2.0), 2.0)):
            if a is DType.bool and b is DType.bool:
                continue
            expected = torch.result_type(_example(a, 1), python)
            assert torch_dtype(result_type([(a, 1)], [number])) == expected, (a, number)
