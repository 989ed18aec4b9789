"""Every LaTeX report compiles with pdflatex, including one with awkward names."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from memspec import compile_spec
from tests.conftest import GOLDEN

AWKWARD = r"""
use std
assume "50% of $cost & #1 {braces} ~tilde^ <angle> | pipe `tick` *star* _under_"
dim batch_size as B
dim hidden_size as d_hid       # multi-letter symbol with an underscore
model Weird_Model {
    in_proj_ = Linear(d_hid, d_hid, bias = true)
    forward(x_1: [B, d_hid]) {
        x_1 = in_proj_(x_1)
        return softmax(x_1)
    }
}
"""


def _pdflatex(tex: str, tmp_path) -> None:
    assert shutil.which("pdflatex"), "pdflatex is required (Debian: texlive-latex-base)"
    (tmp_path / "report.tex").write_text(tex, encoding="utf-8")
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "report.pdf").stat().st_size > 0


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("*.tex")))
def test_golden_latex_compiles(name, tmp_path):
    _pdflatex((GOLDEN / name).read_text(encoding="utf-8"), tmp_path)


def test_names_with_tex_specials_compile(tmp_path):
    result = compile_spec(AWKWARD, set={"B": 2, "hidden_size": 8})
    tex = result.to_latex()
    assert r"in\_proj\_" in tex
    assert r"50\% of \$cost \& \#1 \{braces\}" in tex
    _pdflatex(tex, tmp_path)
    markdown = result.to_markdown()
    assert r"- 50% of \$cost & #1 {braces} ~tilde^ \<angle\> \| pipe" in markdown
