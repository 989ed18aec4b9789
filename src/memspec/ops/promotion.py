"""PyTorch's type promotion for arithmetic (`torch.result_type`).

Integer tensors stay integer under integer arithmetic (`arange(L) + 2` is int64 and can
index an embedding); a float operand, or true division, makes the result float. As in
torch, a tensor with dims outranks a zero-dim tensor, which outranks a Python number,
and a lower-ranked operand changes the result only when it is of a higher category
(bool < integer < float): `int64 tensor * 2` is int64, `int64 tensor * 0.5` is float32
(torch's default dtype), `bfloat16 tensor * float32 zero-dim tensor` is bfloat16.
"""

from __future__ import annotations

from collections.abc import Iterable

import sympy as sp

from memspec.ir.types import DType

__all__ = ["DEFAULT_FLOAT", "number_dtype", "promote_types", "result_type"]

DEFAULT_FLOAT = DType.float32  # torch.get_default_dtype(): memspec never changes it

_INTEGERS = (DType.uint8, DType.int8, DType.int32, DType.int64)
_FLOAT_RANK = {DType.float16: 1, DType.bfloat16: 1, DType.float32: 2, DType.float64: 3}


def _category(dtype: DType) -> int:
    if dtype is DType.bool:
        return 0
    return 2 if dtype.is_float else 1


def promote_types(a: DType, b: DType) -> DType:
    """`torch.promote_types(a, b)`; ValueError for int16, which memspec has no name for."""
    if a is b:
        return a
    if _category(a) != _category(b):
        return a if _category(a) > _category(b) else b
    if a.is_float:
        if DType.float8_e4m3fn in (a, b):
            raise ValueError("torch does not promote float8 types: cast one first")
        if {a, b} == {DType.float16, DType.bfloat16}:
            return DType.float32
        return a if _FLOAT_RANK[a] > _FLOAT_RANK[b] else b
    if {a, b} == {DType.uint8, DType.int8}:
        raise ValueError("uint8 and int8 promote to int16, which memspec does not model")
    return a if _INTEGERS.index(a) > _INTEGERS.index(b) else b


def number_dtype(value: sp.Expr) -> DType:
    """The dtype torch gives a Python number: int64 for an integer (for every value of
    its symbols), else the default float dtype."""
    return DType.int64 if value.is_integer is True else DEFAULT_FLOAT


def _combine(higher: DType | None, lower: DType | None) -> DType | None:
    """torch's `combine_categories`: a lower-priority operand counts only when its
    category is higher (and then within the higher operand's width for bool)."""
    if higher is None:
        return lower
    if lower is None or higher.is_float:
        return higher
    if higher is DType.bool or lower.is_float:
        return promote_types(higher, lower)
    return higher


def result_type(tensors: Iterable[tuple[DType, int]], numbers: Iterable[sp.Expr] = ()) -> DType:
    """The dtype of arithmetic on tensors (dtype, rank) and Python numbers."""
    dimensioned: DType | None = None
    zero_dim: DType | None = None
    for dtype, rank in tensors:
        if rank:
            dimensioned = dtype if dimensioned is None else promote_types(dimensioned, dtype)
        else:
            zero_dim = dtype if zero_dim is None else promote_types(zero_dim, dtype)
    wrapped: DType | None = None
    for value in numbers:
        dtype = number_dtype(value)
        wrapped = dtype if wrapped is None else promote_types(wrapped, dtype)
    result = _combine(dimensioned, _combine(zero_dim, wrapped))
    if result is None:
        raise ValueError("result_type of nothing")
    return result
