"""What a call resolves to, and the errors of callees that are not what the call needs."""

from __future__ import annotations

import pytest
import sympy as sp

from memspec import compile_spec, errors
from memspec.ops import REGISTRY

SPEC = """
dim batch_size as B
dim d_model as D
dim heads as H
fn f(x: [B, D]) { return x }
model M {
    param w: [D]
    forward(x: [B, D]) {
        BODY
    }
}
"""


def _compile(body: str):
    return compile_spec(SPEC.replace("BODY", body))


@pytest.mark.parametrize(
    ("body", "kind", "message"),
    [
        # A fn's single tensor, unpacked: the unpacking is wrong, not the call.
        (
            "a, b = f(x)\nreturn a",
            errors.SpecValueError,
            "2 names to unpack, but the value is a tensor",
        ),
        # The tuple of a multi-output op is a value, never a function.
        ("a = (topk(x, 2))(x)\nreturn a", errors.SpecValueError, "2 tensors is not callable"),
        ("return sqrt(x)", errors.SpecValueError, "sqrt needs numbers, got a tensor"),
        ("return max(D)", errors.SpecValueError, "max takes 2 arguments"),
        (
            "return route(x)",
            errors.SpecValueError,
            "route takes four arguments: route(experts, hidden, routing_weights, selected_experts)",
        ),
        (
            "return rearrange(x)",
            errors.SpecValueError,
            "rearrange needs a tensor and a pattern string, e.g. "
            'rearrange(x, "B L (H K) -> B H L K")',
        ),
        (
            'return rearrange(x, "b (h k) -> b h k", h = x)',
            errors.SpecValueError,
            "axis size h= must be a size",
        ),
    ],
)
def test_call_errors(body, kind, message):
    with pytest.raises(kind) as info:
        _compile(body)
    assert info.value.message == message
    assert info.value.span is not None


def test_tensor_arithmetic_outside_forward_is_an_error():
    text = SPEC.replace("param w: [D]", "param w: [D]\n    let v = -w").replace("BODY", "return x")
    with pytest.raises(errors.SpecValueError) as info:
        compile_spec(text)
    assert info.value.message == "tensor arithmetic is only allowed inside forward"
    assert (info.value.span.line, info.value.span.col) == (8, 13)


def test_rearrange_binds_axes_named_like_sizes_in_scope():
    r = _compile('y = rearrange(x, "B (H K) -> B H K", K = D / H)\nreturn y')
    (op,) = [o for o in r.graph.ops if o.op == "rearrange"]
    B, D, H = sp.symbols("B D H", integer=True, positive=True)
    assert dict(op.attrs)["axes"] == (("B", B), ("H", H), ("K", D / H))


def test_the_scope_binding_rule_belongs_to_the_op():
    bind = REGISTRY["repeat"].bind_scope
    sizes = {"N": sp.Integer(4)}
    assert bind((None, "b n -> b n N"), {}, sizes.get) == {"axes": (("N", sp.Integer(4)),)}
    assert all(
        op.bind_scope is None
        for name, op in REGISTRY.items()
        if name not in ("rearrange", "repeat")
    )
