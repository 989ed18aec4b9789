"""The slow scan's backward moment by moment (`ssm_recurrence`'s backward_moments),
against PyTorch's memory tracker on memspec's lowering of HF's loop, to the byte: every
combination of which of dA, dBu and C need a gradient, at lengths 1, 2, 3 and 6 (at
L = 1 and 2 the first step processed is also the last, i = 0)."""

from __future__ import annotations

import pytest

from memspec import compile_spec
from memspec.verify.peak import compare_peak, measure_peak


def scan_spec(da: bool, dbu: bool, c: bool) -> str:
    """A spec whose scan inputs need a gradient where the flags say (parameters enter
    them), and none otherwise (made from the inputs alone)."""
    params = [name for name, used in (("a", da), ("u", dbu), ("c", c)) if used]
    members = "\n".join(
        f"    param {p}: [B, L, S]" if p == "c" else f"    param {p}: [B, E, L, S]"
        for p in params
    )
    terms = (
        "exp(a * x)" if da else "exp(x)",
        "u * x" if dbu else "x * x",
        "c * z" if c else "z * z",
    )
    return f"""
dim batch as B
dim inner as E
dim length as L
dim state as S
model Scan {{
{members}
    forward(x: [B, E, L, S], z: [B, L, S], target: [B, E, L]) {{
        return mse_loss(ssm_recurrence({", ".join(terms)}), target)
    }}
}}
"""


FLAGS = ["ABC", "AB", "AC", "BC", "A", "B"]  # which of dA, dBu, C need a gradient
LONG = [{"B": 2, "E": 5, "L": 3, "S": 2}, {"B": 1, "E": 3, "L": 6, "S": 4}]
# At L = 1 and 2 the step processed second is i = 0 (no previous state, the last holders
# of C and the output's gradient); with fewer gradients to make, the forward peaks there.
SHORT = [("ABC", {"B": 2, "E": 4, "L": 1, "S": 3})] + [
    (flags, {"B": 1, "E": 4, "L": 2, "S": 3}) for flags in ("ABC", "AB", "AC", "BC")
]
CASES = [(flags, sizes) for flags in FLAGS for sizes in LONG] + SHORT


@pytest.mark.parametrize(("flags", "sizes"), CASES,
                         ids=lambda c: c if isinstance(c, str) else "B{B}-L{L}".format(**c))
def test_scan_backward_peak_is_exact(flags, sizes):
    spec = scan_spec(*(name in flags for name in "ABC"))
    result = compile_spec(spec, set=sizes, convention="autograd")
    comparison = compare_peak(result, measure_peak(result))
    assert [(c, m, e) for c, m, e in comparison.rows if m != e] == []
    assert comparison.phases == ("backward", "backward")
    assert comparison.moment == "backward: ssm_recurrence"
    assert comparison.ok
