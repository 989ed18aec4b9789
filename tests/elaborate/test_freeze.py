"""`--freeze PATTERN` (issue #14's first slice): globs over state_dict names, with `*`
for each repetition of a repeat, give requires_grad=False; counts as PEFT prints them,
errors for a pattern that freezes nothing, and the step torch runs, to the byte."""

from __future__ import annotations

import json

import pytest

from memspec import compile_spec
from memspec.cli import main
from memspec.errors import MemspecError
from memspec.freeze import generic_name
from tests.conftest import SPECS

LLAMA = SPECS / "llama.mspec"
SWIGLU = SPECS / "cs336_lm_swiglu.mspec"
LLAMA2_7B = 6_738_415_616


def test_names_carry_a_star_for_each_repetition():
    assert generic_name("model.layers.self_attn.q_proj.weight", ["model.layers"]) == (
        "model.layers.*.self_attn.q_proj.weight"
    )
    assert generic_name("lm_head.weight", []) == "lm_head.weight"
    # a split repeat's slice (`layers[1:]`) is the ModuleList's name
    assert generic_name("layers[1:].mlp.w", ["layers[1:]"]) == "layers.*.mlp.w"


@pytest.mark.parametrize(
    ("patterns", "frozen"),
    [
        # the MLPs: 32 layers x 3 x 4096 x 11008
        (["model.layers.*.mlp.*"], 32 * 3 * 4096 * 11008),
        # every RMSNorm (65 x 4096) and the LM head (32000 x 4096)
        (["*norm*", "lm_head.weight"], 65 * 4096 + 32000 * 4096),
    ],
)
def test_frozen_parameters_have_no_gradient_or_state(patterns, frozen):
    result = compile_spec(LLAMA, preset="llama2_7b", set={"B": 1}, freeze=patterns)
    value = result.value
    assert value(result.categories["parameters"].elements) == LLAMA2_7B
    assert value(result.categories["gradients"].elements) == LLAMA2_7B - frozen
    assert value(result.categories["optimizer_state"].elements) == 2 * (LLAMA2_7B - frozen)


def test_the_report_says_what_peft_says(capsys):
    args = ["compile", str(LLAMA), "--preset", "llama2_7b", "--set", "B=1"]
    args += ["--freeze", "model.layers.*.mlp.*"]
    assert main([*args, "--format", "md"]) == 0
    assert (
        "`trainable params: 2,409,893,888 || all params: 6,738,415,616 || trainable%: 35.7635`"
        in capsys.readouterr().out
    )
    assert main([*args, "--format", "json"]) == 0
    values = json.loads(capsys.readouterr().out)["values"]
    assert values["parameters"]["elements"] == LLAMA2_7B
    assert values["trainable_parameters"] == {"elements": 2_409_893_888}


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("model.embed_token.weight", "matches no parameter .*did you mean 'model.embed_tokens"),
        ("model.layers.0.*", "names one repetition of a repeat.*'model.layers.\\*.\\*'"),
    ],
)
def test_a_pattern_that_freezes_nothing_is_an_error(pattern, message):
    with pytest.raises(MemspecError, match=message):
        compile_spec(LLAMA, preset="llama2_7b", set={"B": 1}, freeze=[pattern])


def test_a_frozen_embedding_sets_the_first_repetition_apart():
    """Behind a frozen embedding the first layer's input needs no gradient, the others'
    do: it saves less (no rms_norm input, no rsqrt for x's gradient) and makes no
    gradient of its input, so it is elaborated apart (`layers.0`, then `layers[1:]`)."""
    frozen = compile_spec(SWIGLU, freeze=["token_embeddings.weight"], convention="autograd")
    assert [(r.path, str(r.count)) for r in frozen.graph.regions] == [("layers[1:]", "N - 1")]
    trained = compile_spec(SWIGLU, convention="autograd")
    assert [(r.path, str(r.count)) for r in trained.graph.regions] == [("layers", "N")]


@pytest.mark.parametrize(
    ("spec", "sizes", "flags"),
    [
        (SWIGLU, {"F": 64}, ["--freeze", "lm_head.weight", "--freeze", "layers.*.attn.*"]),
        (LLAMA, {"KV": 2}, ["--freeze", "model.layers.*.mlp.*", "--freeze", "*norm*"]),
        # the first layer apart behind the frozen embedding, checkpointed layers too
        (SWIGLU, {"F": 64, "N": 3}, ["--freeze", "token_embeddings.weight"]),
        (
            LLAMA,
            {"KV": 2, "N": 3},
            ["--freeze", "model.embed_tokens.weight", "--recompute", "full"],
        ),
        # with tensor parallelism: frozen column- and row-parallel members
        (LLAMA, {"KV": 2}, ["--freeze", "model.layers.*.self_attn.*", "--tp", "2"]),
    ],
    ids=[
        "swiglu-head-attention",
        "llama-mlp-norms",
        "swiglu-embedding",
        "llama-embedding-full",
        "llama-attention-tp2",
    ],
)
def test_the_step_torch_runs_matches_to_the_byte(spec, sizes, flags, capsys):
    sizes = {"B": 2, "L": 16, "V": 64, "D": 32, "N": 2, "H": 4, **sizes}
    args = [f"--set={k}={v}" for k, v in sizes.items()]
    assert main(["verify", str(spec), "--peak", *flags, *args]) == 0
    out = capsys.readouterr().out
    assert "equal to the byte in every category and in total" in out
