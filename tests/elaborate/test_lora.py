"""`--lora R` (issue #14): PEFT's LoRA adapters on the targeted Linear layers, every other
parameter frozen. Counts as PEFT prints them (against its published LLaMA-2-7B lines),
names as PEFT's state_dict has them, bad targets, and the step torch runs on memspec's
lowering, to the byte (tests/reference/test_peft.py checks PEFT's own model)."""

from __future__ import annotations

import json

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.cli import main
from memspec.errors import MemspecError
from memspec.lora import Lora
from tests.conftest import SPECS

LLAMA = SPECS / "llama.mspec"
LLAMA2_7B = 6_738_415_616


def S(name: str) -> sp.Symbol:
    return sp.Symbol(name, integer=True, positive=True)


D, N, H, KV, F = map(S, ["D", "N", "H", "KV", "F"])


def test_the_adapters_are_peft_s_in_name_shape_and_dtype():
    result = compile_spec(
        LLAMA, preset="llama2_7b", set={"B": 1}, lora=Lora(16, 32, 0.0, ("q_proj",))
    )
    params = {i.path: i for i in result.categories["parameters"].items}
    # the first layer apart (behind the frozen embedding its input needs no gradient)
    for layers in ("model.layers.0", "model.layers[1:]"):
        q = f"{layers}.self_attn.q_proj"
        a, b = params[f"{q}.lora_A.default.weight"], params[f"{q}.lora_B.default.weight"]
        assert [result.value(s) for s in a.shape] == [16, 4096]
        assert [result.value(s) for s in b.shape] == [4096, 16]
        assert a.dtype.value == b.dtype.value == "float32"
        assert params[f"{q}.base_layer.weight"].note.startswith("frozen")
        assert f"{layers}.self_attn.k_proj.weight" in params  # not a target: as it was
    grads = {i.path for i in result.categories["gradients"].items}
    assert all(".lora_" in g for g in grads)


@pytest.mark.parametrize(
    ("r", "targets", "trainable"),
    [
        # PEFT's print_trainable_parameters for meta-llama/Llama-2-7b-hf
        (8, ("q_proj", "v_proj"), 4_194_304),
        (16, ("q_proj", "v_proj"), 8_388_608),
        # QLoRA's recipe: r = 64 on every linear layer but the head
        (64, ("all-linear",), 159_907_840),
    ],
)
def test_trainable_counts_are_peft_s(r, targets, trainable):
    result = compile_spec(LLAMA, preset="llama2_7b", set={"B": 1}, lora=Lora(r, 16, 0.0, targets))
    value = result.value
    assert value(result.categories["parameters"].elements) == LLAMA2_7B + trainable
    assert value(result.categories["gradients"].elements) == trainable
    assert value(result.categories["optimizer_state"].elements) == 2 * trainable


def test_the_trainable_formula_is_exact():
    result = compile_spec(LLAMA, lora=Lora(16, 16, 0.0, ("q_proj", "v_proj")))
    got = result.resolve(result.categories["gradients"].elements)
    # q: A [16, D] + B [D, 16]; v: A [16, D] + B [D KV/H, 16]; per layer
    assert sp.expand(got - N * (3 * 16 * D + 16 * D * KV / H)) == 0


def test_the_report_and_json_say_what_peft_says(capsys):
    args = ["compile", str(LLAMA), "--preset", "llama2_7b", "--set", "B=1", "--lora", "8"]
    args += ["--lora-targets", "q_proj,v_proj"]
    assert main([*args, "--format", "md"]) == 0
    out = capsys.readouterr().out
    assert "`trainable params: 4,194,304 || all params: 6,742,609,920 || trainable%: 0.0622`" in out
    assert "- **LoRA**: r = 8, lora\\_alpha = 8 (scaling 1), lora\\_dropout = 0, on q\\_proj" in out
    assert "adapters on $2 N$ = 64 Linear modules" in out
    assert main([*args, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["values"]["parameters"]["elements"] == LLAMA2_7B + 4_194_304
    assert data["values"]["trainable_parameters"] == {"elements": 4_194_304}
    assert data["config"]["lora"] == {
        "r": 8,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"],
        "wrapped": 64,
    }


def test_the_spec_s_expects_count_its_own_model():
    # llama.mspec's `expect params == ...` holds with the adapters added
    compile_spec(LLAMA, preset="llama2_7b", set={"B": 1}, lora=Lora(8))


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (("q_prj",), "'q_prj' matches no Linear layer.*did you mean 'q_proj'"),
        (("model.layers.*.attn.*",), "matches no Linear layer"),
        # the embedding is not a Linear
        (("embed_tokens",), "'embed_tokens' matches no Linear layer"),
    ],
)
def test_a_target_that_matches_nothing_is_an_error(targets, message):
    with pytest.raises(MemspecError, match=message):
        compile_spec(LLAMA, preset="llama2_7b", set={"B": 1}, lora=Lora(8, 8, 0.0, targets))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lora", "0"], "rank must be at least 1"),
        (["--lora", "8", "--lora-dropout", "1"], "probability below 1"),
        (["--lora", "8", "--lora-targets", "all-linear,q_proj"], "already targets every"),
        (["--lora", "8", "--tp", "2"], "--lora with --tp is not modelled"),
    ],
)
def test_bad_flags_are_usage_errors(args, message, capsys):
    assert main(["compile", str(LLAMA), "--preset", "llama2_7b", "--set", "B=1", *args]) == 2
    assert message in capsys.readouterr().err


SIZES = {"B": 2, "L": 16, "V": 64, "D": 32, "N": 2, "H": 4, "KV": 2}


@pytest.mark.parametrize(
    "flags",
    [
        ["--lora", "4", "--lora-targets", "q_proj,v_proj"],
        ["--lora", "4", "--lora-dropout", "0.1"],
        # float32 adapters on a bfloat16 model: x cast up for them, the sum cast back
        ["--lora", "4", "--precision", "bf16"],
        ["--lora", "8", "--lora-targets", "model.layers.*.mlp.*", "--recompute", "full"],
        ["--lora", "4", "--lora-targets", "o_proj,down_proj", "--grad-accum", "2"],
    ],
    ids=["q-v", "dropout", "bf16", "mlp-full-recompute", "accumulation"],
)
def test_the_step_torch_runs_matches_to_the_byte(flags, capsys):
    args = [f"--set={k}={v}" for k, v in SIZES.items()]
    assert main(["verify", str(LLAMA), "--peak", *flags, *args]) == 0
    assert "equal to the byte in every category and in total" in capsys.readouterr().out
