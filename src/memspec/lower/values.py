"""Concrete sizes, dtypes and state_dict names for the lowering: what turns the IR's
symbolic tensors into torch's."""

from __future__ import annotations

import re

import sympy as sp
import torch

from memspec.ir.graph import Region
from memspec.ir.types import DType

__all__ = ["concrete", "indexed_path", "torch_dtype"]


def torch_dtype(dtype: DType) -> torch.dtype:
    """The torch dtype of an IR dtype: `DType`'s names are torch's own."""
    return getattr(torch, dtype.value)


def concrete(value: object, subs: dict) -> object:
    """A sympy size or constant as a Python int or float under `subs`; others unchanged."""
    if isinstance(value, tuple):
        return tuple(concrete(v, subs) for v in value)
    if not isinstance(value, sp.Basic):
        return value
    bound = value.xreplace(subs)
    if bound.free_symbols:
        unbound = ", ".join(sorted(str(s) for s in bound.free_symbols))
        raise ValueError(f"cannot lower {value}: no value for {unbound}")
    return int(bound) if bound.is_Integer else float(bound)


# The layers a split `repeat N as i` gives a region (`elaborate/repeat_index.py`):
# `layers[1:]` (from 1 on), `layers[0::2]` (every second from 0).
_SLICE = re.compile(r"(?P<name>.+)\[(?P<start>\d+):(?::(?P<step>\d+))?\]")


def indexed_path(path: str, chain: tuple[Region, ...], index: tuple[int, ...]) -> str:
    """`layers.attn.w` in region `layers` at index (3,) -> `layers.3.attn.w`, as PyTorch
    numbers the modules of a ModuleList; `layers[1::2].attn.w` -> `layers.7.attn.w`."""
    parts = path.split(".")
    # Innermost first, so inserting an index does not shift an outer region's position.
    for region, i in reversed(list(zip(chain, index, strict=True))):
        depth = len(region.path.split("."))
        part = _SLICE.fullmatch(parts[depth - 1])
        if part is not None:
            parts[depth - 1] = part["name"]
            i = int(part["start"]) + int(part["step"] or 1) * i
        parts.insert(depth, str(i))
    return ".".join(parts)
