"""Optimizers as data: each declares its torch.optim class and arguments, and verify
builds it from the declaration, also for a user's own optimizer, with no Python."""

from __future__ import annotations

import pytest
import torch

from memspec import compile_spec
from memspec.errors import MemspecError, UsageError
from memspec.passes.peak import StepOptions
from memspec.verify.compare import compare
from memspec.verify.measure import _optimizer, measure_step, standard_optimizer
from memspec.verify.peak import compare_peak, measure_peak
from tests.conftest import SPECS

# the step outweighs backward: the step's temporaries decide the peak
PARAMETERS_HEAVY = {"B": 1, "L": 4, "V": 512, "D": 64, "N": 2, "H": 4, "F": 128}

USER_OPTIMIZER = """use std
dim batch as B
dim width as D
optimizer slow_sgd "SGD with a slow momentum, declared by the user" {
    state momentum_buffer: like param
    flops 5 per element
    torch SGD(lr = 0.01, momentum = 0.5, dampening = 0.1, weight_decay = 0)
}
model Tiny {
    head = Linear(D, D)
    forward(x: [B, D], target: [B, D]) { return mse_loss(head(x), target) }
}
train { optimizer slow_sgd; convention autograd }
"""


def _param():
    return [torch.nn.Parameter(torch.zeros(3))]


@pytest.mark.parametrize(
    ("name", "cls", "defaults"),
    [
        ("adamw", torch.optim.AdamW, {"lr": 1e-3}),
        ("adam", torch.optim.Adam, {"lr": 1e-3}),
        ("sgd", torch.optim.SGD, {"lr": 1e-3, "momentum": 0}),
        ("sgd_momentum", torch.optim.SGD, {"lr": 1e-3, "momentum": 0.9}),
    ],
)
def test_the_standard_optimizers_are_built_from_their_declarations(name, cls, defaults):
    optimizer = _optimizer(name, _param(), "foreach")
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    assert {k: group[k] for k in defaults} == defaults and group["foreach"] is True


def test_a_users_optimizer_verifies_without_python(tmp_path):
    spec = tmp_path / "tiny.mspec"
    spec.write_text(USER_OPTIMIZER)
    result = compile_spec(spec, set={"B": 3, "D": 8})
    policy = result.config.optimizer
    assert policy.torch_class == "SGD"
    assert policy.torch_args == (
        ("lr", 0.01), ("momentum", 0.5), ("dampening", 0.1), ("weight_decay", 0)
    )
    group = _optimizer(policy, _param()).param_groups[0]
    assert (group["momentum"], group["dampening"], group["lr"]) == (0.5, 0.1, 0.01)
    tables = compare(result, measure_step(result))
    assert [r for t in tables for r in t.rows if r.difference] == []
    state = next(t for t in tables if t.category == "optimizer_state")
    assert {r.name for r in state.rows} == {"head.weight.momentum_buffer"}
    for impl in ("for_loop", "foreach"):
        options = StepOptions(optimizer_impl=impl)
        result = compile_spec(spec, set={"B": 3, "D": 8}, step=options)
        assert compare_peak(result, measure_peak(result, options)).ok


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("torch SGD(lr = fast)", "a number, true, false or a tuple, not 'fast'"),
        ("torch SGD(lr = 0.1, lr = 0.2)", "'lr' is given twice"),
        ("torch SGD(lr = 0.1)\n torch Adam(lr = 0.1)", "names its torch class twice"),
        ("temp for_loop: 1 like param, gone", "last temporary is 'freed', .*, not 'gone'"),
        ("state step: like grad", "shaped from 'param', not 'grad'"),
    ],
)
def test_a_bad_torch_declaration_is_a_located_error(tmp_path, item, message):
    spec = tmp_path / "bad.mspec"
    spec.write_text(USER_OPTIMIZER.replace(
        "torch SGD(lr = 0.01, momentum = 0.5, dampening = 0.1, weight_decay = 0)", item))
    with pytest.raises(MemspecError, match=message) as error:
        compile_spec(spec, set={"B": 3, "D": 8})
    assert error.value.span is not None


def test_an_unknown_torch_class_or_argument_is_a_usage_error(tmp_path):
    spec = tmp_path / "bad.mspec"
    for item, message in [
        ("torch Sgd(lr = 0.1)", "torch.optim has no optimizer class 'Sgd'"),
        ("torch SGD(lr = 0.1, nesterov = true)", "Nesterov momentum requires"),
        ("", "names no torch class"),
    ]:
        spec.write_text(USER_OPTIMIZER.replace(
            "torch SGD(lr = 0.01, momentum = 0.5, dampening = 0.1, weight_decay = 0)", item))
        result = compile_spec(spec, set={"B": 3, "D": 8})
        with pytest.raises(UsageError, match=message):
            _optimizer(result.config.optimizer, _param())


def test_tuples_and_booleans_are_values(tmp_path):
    spec = tmp_path / "tuple.mspec"
    spec.write_text(USER_OPTIMIZER.replace(
        "torch SGD(lr = 0.01, momentum = 0.5, dampening = 0.1, weight_decay = 0)",
        "torch Adam(lr = 0.01, betas = (0.8, 0.9), amsgrad = false, weight_decay = 1_0,)"))
    policy = compile_spec(spec, set={"B": 3, "D": 8}).config.optimizer
    assert policy.torch_args == (
        ("lr", 0.01), ("betas", (0.8, 0.9)), ("amsgrad", False), ("weight_decay", 10)
    )
    group = _optimizer(policy, _param()).param_groups[0]
    assert group["betas"] == (0.8, 0.9) and group["amsgrad"] is False


# (optimizer, its state per parameter, peak bytes for_loop, foreach: MemTracker's, 84 B of
# them the step counters of the 21 parameter tensors where torch keeps them)
CATALOGUE = [
    ("sgd_nesterov", ["momentum_buffer"], 1_904_964, 1_774_920),
    ("adagrad", ["sum"], 1_905_304, 2_956_184),
    ("rmsprop", ["square_avg"], 1_905_304, 2_365_080),
    ("rmsprop_momentum", ["square_avg", "momentum_buffer"], 2_496_408, 2_956_184),
]


@pytest.mark.parametrize(("name", "states", "for_loop", "foreach"), CATALOGUE)
def test_each_optimizer_equals_torchs_state_and_step_peak(name, states, for_loop, foreach):
    """State names and bytes against a real step, and the peak of `memspec verify --peak`
    (MemTracker on fake tensors) to the byte for each implementation. Adagrad's `std` and
    RMSprop's `avg` are loop variables (the previous parameter's is alive while the next
    is made); Nesterov's `grad.add(buf)` is rebound to the next gradient first, and
    foreach adds it into the gradients in place."""
    result = compile_spec(SPECS / "cs336_lm_swiglu.mspec", set=PARAMETERS_HEAVY,
                          optimizer=name, convention="autograd")
    assert result.config.optimizer.states == tuple(states)
    measured = measure_step(result)
    tables = compare(result, measured)
    assert [r for t in tables for r in t.rows if r.difference] == []
    state = next(t for t in tables if t.category == "optimizer_state")
    assert {r.name.rsplit(".", 1)[1] for r in state.rows} == set(states)
    counters = 84 if name != "sgd_nesterov" else 0
    assert sum(measured.optimizer_scalars.values()) * 4 == counters
    for impl, peak in (("for_loop", for_loop), ("foreach", foreach)):
        options = StepOptions(optimizer_impl=impl)
        result = compile_spec(SPECS / "cs336_lm_swiglu.mspec", set=PARAMETERS_HEAVY,
                              optimizer=name, convention="autograd", step=options)
        comparison = compare_peak(result, measure_peak(result, options))
        assert comparison.ok, (impl, comparison.rows)
        assert comparison.measured == peak
        assert sum(t.bytes for t in comparison.terms) == counters
        if name != "sgd_nesterov":
            assert comparison.phases[0] == "optimizer step"


def test_a_loop_that_frees_its_last_temporary_holds_one_parameters_worth_less():
    """Nesterov's for_loop at its largest parameter: the embedding's temporary alone
    (`, freed`), where Adagrad's also holds the previous parameter's `std`."""
    peaks = {}
    for name in ("sgd_nesterov", "adagrad"):
        options = StepOptions(optimizer_impl="for_loop")
        result = compile_spec(SPECS / "cs336_lm_swiglu.mspec", set=PARAMETERS_HEAVY,
                              optimizer=name, convention="autograd", step=options)
        peaks[name] = result.peak.winner().label()
        assert standard_optimizer(name).keeps_last("for_loop") == (name == "adagrad")
    assert peaks["sgd_nesterov"] == "optimizer step: updating token_embeddings.weight"
    # the first parameter after the embedding carries its `std` (and names lm_head's too)
    assert peaks["adagrad"] == "optimizer step: updating layers.ln1.weight"


def test_scalar_state_is_not_counted_but_named():
    adamw = standard_optimizer("adamw")
    assert adamw.states == ("exp_avg", "exp_avg_sq") and adamw.scalars == ("step",)
    assert standard_optimizer("sgd_nesterov").scalars == ()
