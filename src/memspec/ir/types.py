"""Closed vocabularies of the IR: dtypes, roles, shapes."""

from __future__ import annotations

import enum
from functools import reduce

import sympy as sp

from memspec.names import name_hint

__all__ = ["DType", "Role", "Shape", "numel", "shape_str"]

Shape = tuple[sp.Expr, ...]


class DType(enum.Enum):
    """Tensor element types; `itemsize` is the size of one element in bytes."""

    float64 = "float64"
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"
    float8_e4m3fn = "float8_e4m3fn"  # FP8 weights (transformers' FP8Linear): storage only
    int64 = "int64"
    int32 = "int32"
    int8 = "int8"
    uint8 = "uint8"
    bool = "bool"

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE[self.value]

    @property
    def is_float(self) -> bool:
        return self.value.startswith(("float", "bfloat"))

    @classmethod
    def parse(cls, name: str) -> DType | None:
        return cls.__members__.get(name)

    @classmethod
    def unknown(cls, name: str) -> str:
        """The message for a dtype name that is not one, with the nearest that are."""
        return f"unknown dtype {name!r}{name_hint(name, cls.__members__, 'dtypes')}"


_ITEMSIZE = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "float8_e4m3fn": 1,
    "int64": 8,
    "int32": 4,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
}


class Role(enum.Enum):
    """What a value is: the roles passes sort memory by."""

    INPUT = "input"
    PARAMETER = "parameter"
    BUFFER = "buffer"
    ACTIVATION = "activation"


def numel(shape: Shape) -> sp.Expr:
    """The number of elements of a tensor of `shape` (1 for a scalar)."""
    return reduce(sp.Mul, shape, sp.Integer(1))


def shape_str(shape: Shape) -> str:
    """`[B, L, D]`, dims in sympy str form."""
    return "[" + ", ".join(str(d) for d in shape) + "]"
