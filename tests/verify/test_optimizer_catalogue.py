"""Adafactor, Lion, Muon and 8-bit AdamW, each declared as data in std/train.mspec and
checked against the implementation people run: state bytes per storage and the peak of a
step (MemTracker) to the byte, for each implementation the optimizer has."""

from __future__ import annotations

import pytest
import sympy as sp
import torch

from memspec import compile_spec
from memspec.errors import MemspecError, UsageError
from memspec.lower.module import LoweredModel
from memspec.passes.peak import StepOptions
from memspec.verify.compare import compare
from memspec.verify.measure import _optimizer, measure_step
from memspec.verify.peak import compare_peak, measure_peak
from tests.conftest import SPECS
from tests.verify import lion_reference

SMALL = {"B": 2, "L": 16, "D": 32, "H": 4, "V": 64, "N": 2, "F": 64}
# the step outweighs backward: the step's temporaries decide the peak
PARAMETERS_HEAVY = {"B": 1, "L": 4, "V": 512, "D": 64, "N": 2, "H": 4, "F": 128}
SPEC = SPECS / "cs336_lm_swiglu.mspec"


@pytest.fixture(autouse=True)
def lion_pytorch(monkeypatch):
    lion_reference.install(monkeypatch)


def _compile(name, sizes, impl="for_loop"):
    return compile_spec(
        SPEC,
        set=sizes,
        optimizer=name,
        convention="autograd",
        step=StepOptions(optimizer_impl=impl),
    )


def _state_bytes(result) -> dict[str, int]:
    """nbytes of each state tensor of a real step (each storage once), by dtype."""
    torch.manual_seed(0)
    model = LoweredModel(result.graph, result.substitutions())
    optimizer = _optimizer(result.config.optimizer, model.parameters())
    out = model(*model.make_inputs())
    (out if out.dim() == 0 else out.float().sum()).backward()
    optimizer.step()
    seen, by_dtype = set(), {}
    for p in model.parameters():
        for key, state in optimizer.state[p].items():
            if not isinstance(state, torch.Tensor) or key in result.config.optimizer.scalars:
                continue
            if state.untyped_storage().data_ptr() in seen:
                continue
            seen.add(state.untyped_storage().data_ptr())
            dtype = str(state.dtype).removeprefix("torch.")
            by_dtype[dtype] = by_dtype.get(dtype, 0) + state.untyped_storage().nbytes()
    return by_dtype


def _predicted_bytes(result) -> dict[str, int]:
    out = {}
    for item in result.categories["optimizer_state"].items:
        out[item.dtype.value] = out.get(item.dtype.value, 0) + result.value(item.bytes)
    return out


def _bitsandbytes():
    return pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")


@pytest.mark.parametrize("name", ["adafactor", "lion", "muon", "adamw8bit", "paged_adamw8bit"])
@pytest.mark.parametrize(
    "sizes",
    [SMALL, PARAMETERS_HEAVY, {**PARAMETERS_HEAVY, "V": 301}],
    ids=["small", "heavy", "odd_blocks"],
)
def test_state_equals_the_real_optimizers_to_the_byte(name, sizes):
    """Each state tensor's elements (verify's table) and the bytes per dtype. V = 301 makes
    the embedding's 19_264 elements 75.25 blocks of 256: bitsandbytes keeps 76 absmaxes."""
    if name.endswith("adamw8bit"):
        _bitsandbytes()
    result = _compile(name, sizes)
    tables = compare(result, measure_step(result))
    assert [r for t in tables for r in t.rows if r.difference] == []
    assert _state_bytes(result) == _predicted_bytes(result)


def test_adafactor_factors_matrices_and_keeps_vectors_whole():
    """A matrix [V, D] keeps V + D elements ([V, 1] and [1, D]), a vector all of its own."""
    result = _compile("adafactor", SMALL)
    items = {i.path: tuple(map(str, i.shape)) for i in result.categories["optimizer_state"].items}
    assert items["lm_head.weight.row_var"] == ("V", "1")
    assert items["lm_head.weight.col_var"] == ("1", "D")
    assert items["layers.ln1.weight.variance"] == ("D",)
    assert "lm_head.weight.variance" not in items and "layers.ln1.weight.row_var" not in items
    text = result.categories["optimizer_state"].description
    assert text.startswith(
        "adafactor keeps per parameter: row_var (like param reduced over "
        "-1, if rank >= 2), col_var (like param reduced over -2, if rank "
        ">= 2), variance (like param, if rank < 2), in float32"
    )


def test_8bit_states_follow_bitsandbytes_layout():
    """1 byte per element, a float32 absmax per 256, two 256-entry maps per optimizer; a
    parameter under 4096 elements keeps float32 moments (min_8bit_size)."""
    result = _compile("adamw8bit", PARAMETERS_HEAVY)
    items = {i.path: i for i in result.categories["optimizer_state"].items}
    emb = "token_embeddings.weight"
    assert items[f"{emb}.state1"].dtype.value == "uint8"
    assert result.value(items[f"{emb}.absmax1"].bytes) == 512 * 64 // 256 * 4
    assert result.value(items[f"{emb}.qmap1"].bytes) == 1024
    assert [p for p in items if p.endswith(".qmap2")] == [f"{emb}.qmap2"]  # shared
    assert items["layers.ln1.weight.state1"].dtype.value == "float32"  # 64 < 4096
    assert items["layers.attn.q_proj.weight.state1"].dtype.value == "uint8"  # 4096
    assert "layers.ln1.weight.absmax1" not in items
    text = result.categories["optimizer_state"].description
    assert "absmax1 (blocks of 256 of param, as float32, if numel >= 4096)" in text


@pytest.mark.parametrize(
    ("name", "impl", "peak", "real"),
    [
        ("lion", "for_loop", 2_036_036, False),
        ("lion", "foreach", 2_364_996, False),
        ("muon", "for_loop", 2_053_720, False),
        # Adafactor's step reads values (`.item()`): fake tensors cannot run it, so its
        # peak is MemTracker's on real tensors
        ("adafactor", "for_loop", 1_331_356, True),
        ("adafactor", "foreach", 1_788_568, True),
    ],
)
def test_step_peak_equals_memtrackers_to_the_byte(name, impl, peak, real):
    result = _compile(name, PARAMETERS_HEAVY, impl)
    comparison = compare_peak(result, measure_peak(result, result.peak.options, real=real))
    assert comparison.ok, comparison.rows
    assert comparison.measured == peak
    assert comparison.phases[0] == "optimizer step"


@pytest.mark.parametrize("name", ["adafactor", "lion", "muon"])
def test_peak_at_small_sizes(name):
    for impl in ("for_loop", "foreach") if name != "muon" else ("for_loop",):
        result = _compile(name, SMALL, impl)
        real = name == "adafactor"
        assert compare_peak(result, measure_peak(result, result.peak.options, real=real)).ok


def test_adafactor_on_fake_tensors_is_a_usage_error():
    result = _compile("adafactor", SMALL)
    with pytest.raises(UsageError, match="real=True"):
        measure_peak(result, result.peak.options)


def test_adafactors_peak_is_at_the_head_after_the_last_norm():
    """lm_head's update, var_estimate [V, D] and its row/column means, with ln_final's
    `update` and `grad_squared` (loop variables) still alive, and the [1, 1] mean."""
    result = _compile("adafactor", PARAMETERS_HEAVY)
    assert result.peak.winner().label() == "optimizer step: updating lm_head.weight"


def test_muon_gives_the_rest_to_adamw():
    result = _compile("muon", SMALL)
    model = LoweredModel(result.graph, result.substitutions())
    chain = _optimizer(result.config.optimizer, model.parameters())
    muon, adamw = chain.optimizers
    assert type(muon) is torch.optim.Muon and type(adamw) is torch.optim.AdamW
    assert all(p.ndim == 2 for g in muon.param_groups for p in g["params"])
    assert all(p.ndim == 1 for g in adamw.param_groups for p in g["params"])
    names = {i.path.rsplit(".", 1)[1] for i in result.categories["optimizer_state"].items}
    assert names == {"momentum_buffer", "exp_avg", "exp_avg_sq"}
    text = result.categories["optimizer_state"].description
    assert "adamw, for the parameters muon does not take (it takes rank == 2)" in text
    with pytest.raises(UsageError, match="Muon takes no 'foreach' argument"):
        _optimizer(result.config.optimizer, model.parameters(), "foreach")


def test_lion_names_a_class_of_its_own_module_per_implementation():
    result = _compile("lion", SMALL)
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert type(_optimizer(result.config.optimizer, params)) is lion_reference.Lion
    assert (
        type(_optimizer(result.config.optimizer, params, "foreach")) is lion_reference.ForeachLion
    )


USER = """use std
dim batch as B
dim width as D
optimizer mine "a user's optimizer class" {
    state exp_avg: like param
    temp for_loop: 2 like param, freed
    torch tests.verify.lion_reference:Lion(lr = 0.001)
}
model Tiny {
    head = Linear(D, D)
    forward(x: [B, D], target: [B, D]) { return mse_loss(head(x), target) }
}
train { optimizer mine; convention autograd }
"""


def test_a_users_own_optimizer_class_verifies(tmp_path):
    spec = tmp_path / "tiny.mspec"
    spec.write_text(USER)
    result = compile_spec(spec, set={"B": 3, "D": 8})
    assert result.config.optimizer.torch_class == "tests.verify.lion_reference:Lion"
    tables = compare(result, measure_step(result))
    assert [r for t in tables for r in t.rows if r.difference] == []
    assert compare_peak(result, measure_peak(result)).ok
    spec.write_text(USER.replace("tests.verify.lion_reference:Lion", "no_such_module:Lion"))
    result = compile_spec(spec, set={"B": 3, "D": 8})
    with pytest.raises(UsageError, match="cannot import no_such_module"):
        measure_step(result)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("state r: like param reduced over -1", "needs parameters of rank >= 1"),
        ("state g: gram of param if rank >= 1", "needs parameters of rank >= 2"),
        ("state r: like param if size > 2", "rank or numel, not 'size'"),
        ("state r: like param as int3", "int3"),
        ("state r: like param, gone", "'shared' .* not 'gone'"),
        ("state r: like param\n else adamw", "come together"),
        ("params if rank == 2\n else nothing", "no other optimizer 'nothing'"),
        ("temp for_loop: 1 like param, until never", "not 'until never'"),
    ],
)
def test_a_bad_declaration_is_a_located_error(tmp_path, item, message):
    spec = tmp_path / "bad.mspec"
    spec.write_text(USER.replace("state exp_avg: like param", item))
    with pytest.raises(MemspecError, match=message) as error:
        compile_spec(spec, set={"B": 3, "D": 8})
    assert error.value.span is not None


@pytest.mark.parametrize("name", ["adagrad", "muon", "adamw", "rmsprop"])
@pytest.mark.parametrize("grad_accum", [1, 2])
def test_first_step_state_is_made_when_torch_makes_it(name, grad_accum):
    """A first step: Adagrad's constructor fills `sum` and `step` (`state at init`), so
    they exist through the forward and backward (a second micro-batch's backward is
    then the peak); Muon's step runs before AdamW's has made AdamW's state."""
    options = StepOptions(first_step=True, grad_accum=grad_accum)
    result = compile_spec(SPEC, set=PARAMETERS_HEAVY, optimizer=name, step=options)
    comparison = compare_peak(result, measure_peak(result, options))
    assert comparison.ok, (comparison.rows, comparison.phases)
    if name == "adagrad":
        before = [c for c in result.peak.candidates if c.phase.value == "backward"]
        state = result.categories["optimizer_state"].bytes
        assert all(sp.expand(c.part("optimizer_state") - state) == 0 for c in before)


def test_when_state_is_made_is_checked():
    text = (
        SPEC.read_text() + "optimizer eager_sgd { state momentum_buffer: like param\n"
        "    state at construction }\n"
    )
    with pytest.raises(MemspecError, match="made at `init`") as err:
        compile_spec(text, optimizer="eager_sgd")
    assert err.value.span is not None
