"""The Python API for notebooks and tools."""

from __future__ import annotations

import json

import pytest

import memspec

SPEC = """
use std
dim batch_size as B
dim d_model as D
model Tiny {
    lin = Linear(D, D, bias = true)
    forward(x: [B, D]) { return lin(x) }
}
"""


def test_compile_from_text_with_bindings():
    result = memspec.compile_spec(SPEC, set={"B": 2, "d_model": 3})
    doc = json.loads(result.to_json())
    assert doc["spec"] == "<spec>"
    assert doc["values"]["parameters"] == {"elements": 12, "bytes": 48}
    assert result._repr_markdown_() == result.to_markdown()
    assert result.to_latex().startswith("\\documentclass")


def test_errors_are_memspec_errors():
    with pytest.raises(memspec.MemspecError) as info:
        memspec.compile_spec(SPEC.replace("Linear(D, D", "Linear(D, Q"))
    assert "unknown name 'Q'" in info.value.render()
