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


def test_notebooks_show_a_compact_summary():
    """`_repr_latex_` and `_repr_html_`: each category's bytes and the true peak, the
    formula and, where the sizes are bound, its value."""
    import memspec

    bound = memspec.compile_spec("specs/cs336_lm.mspec", preset="gpt2_xl", set={"B": 1})
    latex = bound._repr_latex_()
    assert latex.startswith("$\\begin{aligned}") and latex.endswith("\\end{aligned}$")
    assert "\\text{Parameters} &= " in latex and "= 6{,}542{,}150{,}400" in latex
    assert "\\text{True peak}" in latex
    html = bound._repr_html_()
    assert "<td>Parameters</td>" in html and "<td>6,542,150,400</td>" in html
    free = memspec.compile_spec("specs/cs336_lm.mspec")
    assert "<td>Parameters</td><td><code>48*D**2*N + 8*D*N + 8*D*V + 4*D</code></td><td></td>" in (
        free._repr_html_()
    )


def test_version(capsys):
    import pytest

    from memspec import __version__
    from memspec.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"memspec {__version__}\n"
