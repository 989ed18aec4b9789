"""The math printer, exact strings."""

from __future__ import annotations

import sympy as sp

from memspec.symbolic.printers import latex, latex_int, latex_shape, text

B, L, D, N, V, H = (sp.Symbol(s, integer=True, positive=True) for s in "BLDNVH")


def test_structured_total_keeps_its_block():
    assert latex(2 * V * D + D + N * (12 * D**2 + 2 * D)) == (
        r"2 D V + D + N \left(12 D^{2} + 2 D\right)")


def test_fractions_shapes_and_integers():
    assert latex(D * L * N / H) == r"\frac{D L N}{H}"
    assert latex_shape((B, H, L, D / H)) == r"B \times H \times L \times \frac{D}{H}"
    assert latex_shape(()) == "1"
    assert latex_shape((B, L + 1)) == r"B \times \left(L + 1\right)"
    assert latex_int(1_635_537_600) == "1{,}635{,}537{,}600"


def test_multi_letter_symbols_are_upright_and_escaped():
    assert latex(2 * sp.Symbol("d_kv", positive=True)) == r"2 \mathrm{d\_kv}"


def test_json_uses_sympy_str():
    assert text(12 * D**2 * N + 2 * D * N + 2 * D * V + D) == "12*D**2*N + 2*D*N + 2*D*V + D"
