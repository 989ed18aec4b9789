"""Shape rules decide views at the bound sizes (`InferContext.bound`), as torch does on
concrete ones: a size-1 dim has any stride and never blocks a merge (issue #11)."""

from __future__ import annotations

import pytest
import sympy as sp

from memspec.ir.sizes import GENERAL, BoundSizes
from memspec.ir.types import DType
from memspec.ops import REGISTRY
from memspec.ops.registry import InferContext, OpShapeError, TensorType

B, L, H, K, D, KV = (
    sp.Symbol(s, integer=True, positive=True) for s in ("B", "L", "H", "K", "D", "KV")
)
F32 = DType.float32


def _infer(op: str, inputs: tuple[TensorType, ...], attrs: dict, bound: BoundSizes):
    ctx = InferContext(op, inputs, {**dict(REGISTRY[op].attrs), **attrs}, F32, bound=bound)
    return REGISTRY[op].infer(ctx)


def _at(**values: int) -> BoundSizes:
    symbols = {"B": B, "L": L, "KV": KV}
    return BoundSizes.of({symbols[k]: v for k, v in values.items()}, {})


def test_heads_of_a_transposed_tensor_fold_into_the_batch_at_b_1():
    # [B, H, L, K] transposed from [B, L, H, K]: (b h) chains only when B = 1
    x = TensorType((B, H, L, K), F32, True, (L * H * K, K, H * K, sp.Integer(1)))
    attrs = {"pattern": "b h l k -> (b h) l k", "axes": ()}
    assert _infer("rearrange", (x,), attrs, GENERAL)[0].view_of is None
    assert _infer("rearrange", (x,), attrs, _at(B=1))[0].view_of == 0
    assert _infer("rearrange", (x,), attrs, _at(B=2))[0].view_of is None


def test_repeat_kv_of_one_head_is_a_stride_0_view():
    x = TensorType((B, KV, L, K), F32, True)
    attrs = {"pattern": "b kv l d -> b (kv r) l d", "axes": (("r", H / KV),)}
    assert _infer("repeat", (x,), attrs, GENERAL)[0].view_of is None
    out = _infer("repeat", (x,), attrs, _at(KV=1))[0]
    assert out.view_of == 0 and out.strides[1] == 0


def test_addmm_views_a_transposed_input_as_rows_at_b_1():
    bias, weight = TensorType((D,), F32, True), TensorType((D, D), F32, True)
    x = TensorType((L, B, D), F32, True, (D, L * D, sp.Integer(1)))  # [B, L, D] transposed
    with pytest.raises(OpShapeError, match="cannot be viewed"):
        _infer("addmm", (bias, x, weight), {}, GENERAL)
    assert _infer("addmm", (bias, x, weight), {}, _at(B=1))[0].shape == (L, B, D)


def test_a_chunk_is_contiguous_when_the_dims_before_it_are_1():
    x = TensorType((B, L, 2 * D), F32, True)
    attrs = {"chunks": sp.Integer(2), "dim": sp.Integer(-1)}
    assert _infer("chunk", (x,), attrs, GENERAL)[0].strides is not None
    assert _infer("chunk", (x,), attrs, _at(B=1, L=1))[0].strides is None


def test_an_elementwise_output_follows_no_order_of_a_size_1_dim():
    """TensorIterator: x [B, L, D] transposed from [L, B, D] lays `x * y` out as [L, B, D];
    at B = 1 the B dim tells nothing and the output is contiguous."""
    x = TensorType((B, L, D), F32, True, (D, B * D, sp.Integer(1)))
    y = TensorType((B, L, D), F32, True)
    assert _infer("mul", (x, y), {}, GENERAL)[0].strides is not None
    assert _infer("mul", (x, y), {}, _at(B=1))[0].strides is None
