"""One binder for layer arguments and call arguments: position, keyword, default."""

from __future__ import annotations

import pytest

from memspec import compile_spec, errors
from memspec.elaborate.binding import Argument, bind_arguments
from memspec.syntax import decls as d
from memspec.syntax import nodes as n

PARAMS = (d.Param("d_in"), d.Param("d_out"), d.Param("bias", n.ExprBool(True)))


def _bind(*args: Argument, **options):
    return bind_arguments("Linear", PARAMS, args, None, lambda expr, bound: expr.value, **options)


def test_position_then_keyword_then_default():
    assert _bind(Argument.evaluated(1), Argument.evaluated(2, "d_out")) == {
        "d_in": 1,
        "d_out": 2,
        "bias": True,
    }


def test_defaults_see_what_is_bound():
    seen = []
    bind_arguments(
        "f",
        PARAMS,
        [Argument.evaluated(1), Argument.evaluated(2)],
        None,
        lambda expr, bound: seen.append(dict(bound)),
    )
    assert seen == [{"d_in": 1, "d_out": 2}]


@pytest.mark.parametrize(
    ("args", "options", "message"),
    [
        ((1, 2, 3, 4), {}, "Linear takes 3 arguments, got 4"),
        ((1, 2, 3, 4), {"given": 5}, "Linear takes 3 arguments, got 5"),
        ((1, ("width", 2)), {}, "Linear has no argument 'width'"),
        ((1, ("width", 2)), {"member": "parameter"}, "Linear has no parameter 'width'"),
        ((1, ("d_in", 2)), {}, "Linear: argument 'd_in' given twice"),
        ((1,), {}, "Linear: missing argument 'd_out'"),
    ],
)
def test_messages(args, options, message):
    given = [
        Argument.evaluated(a[1], a[0]) if isinstance(a, tuple) else Argument.evaluated(a)
        for a in args
    ]
    with pytest.raises(errors.MemspecError) as info:
        _bind(*given, **options)
    assert info.value.message == message


def test_arguments_are_evaluated_in_order_as_they_bind():
    evaluated = []

    def value(v):
        return Argument(None, lambda: evaluated.append(v) or v)

    with pytest.raises(errors.SpecValueError):
        _bind(value(1), value(2), value(3), value(4))
    assert evaluated == [1, 2, 3]  # the surplus argument is reported, not evaluated


SPEC = """
dim batch_size as B
dim d_model as D
fn f(x: [B, D], k = 2) { return x * k }
layer Lin(d, scale = 2 * d) {
    param w: [d]
    forward(x: [B, D]) { return x * scale }
}
model M {
    lin = Lin(D)
    forward(x: [B, D]) { return CALL }
}
"""


@pytest.mark.parametrize(
    ("call", "kind", "message"),
    [
        ("f(x, 3, 4)", errors.SpecValueError, "f takes 2 arguments, got 3"),
        ("f(x, 3, 4, k = 1)", errors.SpecValueError, "f takes 2 arguments, got 3"),
        ("f(x, j = 1)", errors.NameResolutionError, "f has no argument 'j'"),
        ("f(x, x = x)", errors.SpecValueError, "f: argument 'x' given twice"),
        ("f(k = 1)", errors.SpecValueError, "f: missing argument 'x'"),
        ("lin(x, 1)", errors.SpecValueError, "Lin takes 1 argument, got 2"),
    ],
)
def test_call_arguments(call, kind, message):
    with pytest.raises(kind) as info:
        compile_spec(SPEC.replace("CALL", call))
    assert info.value.message == message


@pytest.mark.parametrize(
    ("member", "kind", "message"),
    [
        ("Lin(D, D, 1)", errors.SpecValueError, "Lin takes 2 arguments, got 3"),
        ("Lin(D, D, 1, width = 1)", errors.SpecValueError, "Lin takes 2 arguments, got 4"),
        ("Lin(D, width = 1)", errors.NameResolutionError, "Lin has no parameter 'width'"),
        ("Lin(D, d = D)", errors.SpecValueError, "Lin: argument 'd' given twice"),
        ("Lin(scale = 1)", errors.SpecValueError, "Lin: missing argument 'd'"),
    ],
)
def test_layer_arguments(member, kind, message):
    with pytest.raises(kind) as info:
        compile_spec(SPEC.replace("Lin(D)", member).replace("CALL", "lin(x)"))
    assert info.value.message == message


def test_a_layer_default_sees_the_other_arguments():
    r = compile_spec(SPEC.replace("CALL", "lin(x)").replace("Lin(D)", "Lin(3)"))
    assert [str(v.shape) for v in r.graph.values if v.path == "lin.w"] == ["(3,)"]
