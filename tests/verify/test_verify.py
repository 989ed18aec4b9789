"""`memspec verify`: predictions equal a real torch 2.13 CPU training step, item by item."""

from __future__ import annotations

import dataclasses

import pytest

from memspec import compile_spec
from memspec.cli import VERIFY_FAILED, main
from memspec.ops import REGISTRY
from memspec.ops.registry import Saved
from memspec.verify.compare import compare
from memspec.verify.measure import measure_step
from memspec.verify.peak import measure_peak
from tests.conftest import ROOT

SMALL = {"B": 2, "L": 8, "V": 32, "D": 16, "N": 3, "H": 4}
SPECS = ["specs/cs336_lm.mspec", "specs/cs336_lm_swiglu.mspec", "tests/specs/std_layers.mspec"]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("variant", ["math", "flash"])
@pytest.mark.parametrize("optimizer", ["adamw", "sgd_momentum"])
def test_every_category_matches(spec, variant, optimizer):
    result = compile_spec(ROOT / spec, convention="autograd", use=[variant], set=SMALL,
                          optimizer=optimizer)
    tables = compare(result, measure_step(result))
    mismatches = [(t.category, r) for t in tables for r in t.rows if r.difference]
    assert mismatches == []
    assert all(t.measured > 0 for t in tables if t.category != "buffers")


def test_cli_prints_the_table_and_exits_zero(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = [f"--set={k}={v}" for k, v in SMALL.items()]
    assert main(["verify", "specs/cs336_lm.mspec", *args]) == 0
    out = capsys.readouterr().out
    assert "verify: every category matches exactly" in out
    assert "  total" in out and "MISMATCH" not in out


def test_a_wrong_rule_is_caught(capsys, monkeypatch):
    """Drop rms_norm's rsqrt from its saved-tensor rule: verify must fail with exit 3."""
    monkeypatch.chdir(ROOT)
    op = REGISTRY["rms_norm"]
    real = op.saved

    def forgetful(apply, graph) -> tuple[Saved, ...]:
        return tuple(s for s in real(apply, graph) if s.label != "rsqrt")

    monkeypatch.setitem(REGISTRY, "rms_norm", dataclasses.replace(op, saved=forgetful))
    args = [f"--set={k}={v}" for k, v in SMALL.items()]
    assert main(["verify", "specs/cs336_lm.mspec", *args]) == VERIFY_FAILED
    out = capsys.readouterr().out
    assert "layers.ln1 [internal]" in out and "MISMATCH" in out


def test_unbound_dims_are_an_input_error(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["verify", "specs/cs336_lm.mspec", "--set", "B=2"]) == 2
    assert "give a value to every dim" in capsys.readouterr().err


def test_peak_on_fake_tensors_at_gpt2_xl_size():
    """GPT-2 XL shape, B = 1: about 37 GiB, measured without allocating any of it."""
    result = compile_spec(ROOT / "specs/cs336_lm_swiglu.mspec", convention="autograd",
                          preset="gpt2_xl", set={"B": 1})
    peak = dict(measure_peak(result).by_category)
    assert peak["PARAM"] == result.value(result.categories["parameters"].bytes)
    assert peak["BUFFER"] == result.value(result.categories["buffers"].bytes)
    # Steady state with zero_grad(set_to_none=True): the peak is at the start of backward,
    # where no gradient exists and every saved activation is alive.
    assert peak["GRAD"] == 0
    # Activations at the peak are the saved tensors, up to the int64 token and target
    # inputs (made before the tracked step, 8 KiB each here) and the scalar loss, which
    # MemTracker files differently: the difference is 8,188 bytes of 13.5 GB.
    predicted = result.value(result.conventions["autograd"].bytes)
    assert abs(peak["ACT"] - predicted) <= 2 * 8 * 1024 + 8
    # AdamW's state is exp_avg and exp_avg_sq, plus one float32 `step` scalar per tensor
    # (3 + 48 * 9 = 435 tensors), which verify reports on a line of its own.
    steps = 4 * (3 + 48 * 9)
    assert peak["OPT"] == result.value(result.categories["optimizer_state"].bytes) + steps
