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


@pytest.mark.parametrize("spec", SPECS[:2])
def test_pure_bf16_casts_the_float_buffers_too(spec, capsys, monkeypatch):
    # model.to(torch.bfloat16) casts RoPE's cos/sin: with float32 tables rope made q and k
    # float32, and probs @ v mixed float32 with bfloat16, which torch's matmul refuses
    monkeypatch.chdir(ROOT)
    result = compile_spec(ROOT / spec, set=SMALL, precision="bf16")
    assert {i.dtype.value for i in result.categories["buffers"].items} == {"bfloat16"}
    args = [f"--set={k}={v}" for k, v in SMALL.items()]
    assert main(["verify", spec, "--precision", "bf16", "--peak", *args]) == 0
    assert "equal to the byte in every category and in total" in capsys.readouterr().out


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


def test_peak_on_fake_tensors_at_gpt2_xl_size(capsys, monkeypatch):
    """GPT-2 XL shape, B = 1: 36.73 GiB, measured without allocating any of it, and
    memspec's peak moment equal to it in every category but AdamW's step counters."""
    monkeypatch.chdir(ROOT)
    args = ["verify", "specs/cs336_lm_swiglu.mspec", "--preset", "gpt2_xl", "--set", "B=1",
            "--peak", "--no-step"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "memspec's peak: backward: cross_entropy.log_probs, 39,437,295,880 bytes." in out
    assert ("AdamW step counters: +1,740 bytes in OPT (4 B x 435 parameter tensors; CPU "
            "tensors when training on a GPU") in out
    rows = {line.split()[0]: line.split()[1:4] for line in out.splitlines()
            if line.startswith("  ") and len(line.split()) >= 4}
    # (measured, memspec with its named terms, difference); the tracker's OPT holds 435
    # float32 `step` counters (3 + 48 * 9 parameter tensors) beside exp_avg and exp_avg_sq
    assert rows["PARAM"] == ["8,508,230,400", "8,508,230,400", "0"]
    assert rows["GRAD"] == ["0", "0", "0"]
    assert rows["ACT"] == ["13,488,316,424", "13,488,316,424", "0"]
    assert rows["TEMP"] == ["411,705,344", "411,705,344", "0"]
    assert rows["OPT"] == ["17,016,462,540", "17,016,462,540", "0"]
    assert rows["total"] == ["39,437,297,620", "39,437,297,620", "0"]
    assert "phase: the tracker peaks in backward, memspec in backward" in out
    assert "equal to the byte in every category and in total, at the same phase" in out


MIXTRAL_SIZES = ["--set", "B=2", "--set", "L=8", "--set", "V=32", "--set", "D=16", "--set",
                 "N=2", "--set", "H=4", "--set", "KV=2", "--set", "F=24", "--set", "E=4",
                 "--set", "k=2"]


def test_verify_peak_refuses_data_dependent_shapes_cleanly(capsys, monkeypatch):
    """The per-expert loop's routing (nonzero) cannot run on fake tensors: a usage error,
    not a crash."""
    monkeypatch.chdir(ROOT)
    args = ["verify", "tests/specs/mixtral_per_expert.mspec", "--no-step", "--peak",
            *MIXTRAL_SIZES]
    assert main(args) == 2
    assert "cannot run an op whose output shape depends on the data" in capsys.readouterr().err


def test_verify_peak_refuses_float32_grouped_mm_cleanly(capsys, monkeypatch):
    """torch's fake grouped_mm takes bfloat16 only: a usage error, not a traceback; the
    real step verifies the same spec."""
    monkeypatch.chdir(ROOT)
    args = ["verify", "specs/mixtral.mspec", "--no-step", "--peak", *MIXTRAL_SIZES]
    assert main(args) == 2
    assert "whose grouped_mm takes bfloat16 only" in capsys.readouterr().err
    assert main(["verify", "specs/mixtral.mspec", *MIXTRAL_SIZES]) == 0
