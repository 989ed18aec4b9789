"""Every bundled spec compiles under every convention and renders; its LaTeX compiles.

The family-specific tests (published parameter counts, formulas, verify at small
sizes) live beside this file; this one guards what all specs share.
"""

from __future__ import annotations

import json

import pytest

from memspec import compile_spec
from memspec.ir.verify import verify
from tests.conftest import SPECS
from tests.report.test_latex import _pdflatex

ALL_SPECS = sorted(p.name for p in SPECS.glob("*.mspec"))


@pytest.mark.parametrize("name", ALL_SPECS)
@pytest.mark.parametrize("convention", ["course", "autograd"])
def test_spec_compiles_and_renders(name, convention):
    result = compile_spec(SPECS / name, convention=convention)
    verify(result.graph)
    doc = json.loads(result.to_json())
    assert doc["convention"] == convention
    assert result.to_markdown().startswith("# Training memory of")
    assert result.categories["parameters"].items, "a model without parameters"
    assert all(e.holds for e in result.expects)


@pytest.mark.parametrize("name", ALL_SPECS)
def test_spec_latex_compiles(name, tmp_path):
    _pdflatex(compile_spec(SPECS / name, convention="autograd").to_latex(), tmp_path)


def test_the_zoo_is_all_there():
    assert len(ALL_SPECS) >= 2
