"""The architecture zoo: every family's published parameter count, to the unit, in one
table; and T5, which has no family file of its own.

Family files beside this one (test_gpt2_bert.py, test_llama_mistral.py, test_mixtral.py,
test_vision.py, test_mamba.py) hold each family's hand-derived formulas and `verify` runs;
test_every_spec.py compiles and renders every spec under both conventions.
"""

from __future__ import annotations

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.verify.compare import compare
from memspec.verify.measure import measure_step
from tests.conftest import SPECS

PUBLISHED = [
    # (spec, preset, published count): sum(p.numel() for p in model.parameters()).
    ("cs336_lm_swiglu.mspec", "tinystories", 22_696_448),  # CS336 assignment 1 handout
    ("mlp.mspec", "quickstart", 669_706),  # PyTorch Quickstart NeuralNetwork
    ("gpt2.mspec", "small", 124_439_808),  # HF gpt2 (lm_head tied to wte)
    ("bert.mspec", "base", 109_482_240),  # HF bert-base-uncased BertModel
    ("llama.mspec", "llama2_7b", 6_738_415_616),  # meta-llama/Llama-2-7b-hf
    ("llama.mspec", "llama2_13b", 13_015_864_320),  # meta-llama/Llama-2-13b-hf
    ("llama.mspec", "llama2_70b", 68_976_648_192),  # meta-llama/Llama-2-70b-hf
    ("mistral.mspec", "mistral_7b", 7_241_732_096),  # mistralai/Mistral-7B-v0.1
    ("mixtral.mspec", "mixtral_8x7b", 46_702_792_704),  # mistralai/Mixtral-8x7B-v0.1
    ("vit.mspec", "b16", 86_567_656),  # torchvision vit_b_16
    ("resnet18.mspec", "imagenet", 11_689_512),  # torchvision resnet18
    ("t5.mspec", "small", 60_506_624),  # HF t5-small (v1.0)
    ("mamba.mspec", "mamba_130m", 129_135_360),  # state-spaces/mamba-130m-hf (tied head)
]


@pytest.mark.parametrize(("spec", "preset", "count"), PUBLISHED)
def test_published_parameter_count(spec, preset, count):
    result = compile_spec(SPECS / spec, preset=preset)
    assert result.value(result.categories["parameters"].elements) == count
    assert result.expects and all(e.holds for e in result.expects)


def S(name: str) -> sp.Symbol:
    return sp.Symbol(name, integer=True, positive=True)


def test_t5_parameters_and_an_inner_width_that_is_not_d_model():
    V, D, K, H, F, N, R = map(S, ["V", "D", "K", "H", "F", "N", "R"])
    result = compile_spec(SPECS / "t5.mspec")
    # shared embedding; encoder blocks (4 attention matrices D x HK, two FF, two norms),
    # decoder blocks (8 attention matrices, two FF, three norms); two bias tables; two
    # final norms.
    want = (
        V * D
        + N * (4 * D * H * K + 2 * D * F + 2 * D)
        + N * (8 * D * H * K + 2 * D * F + 3 * D)
        + 2 * R * H
        + 2 * D
    )
    got = result.resolve(result.categories["parameters"].elements)
    assert sp.expand(got - result.resolve(want)) == 0
    # t5-3b: H * d_kv = 32 * 128 = 4096 while D = 1024.
    big = compile_spec(
        SPECS / "t5.mspec", set={"V": 32128, "D": 1024, "K": 128, "H": 32, "F": 16384, "N": 24}
    )
    assert big.value(big.categories["parameters"].elements) == 2_851_598_336


def test_t5_verify_at_small_sizes():
    sizes = {"B": 2, "S": 5, "T": 4, "V": 32, "D": 8, "K": 2, "H": 2, "F": 12, "N": 2, "R": 8}
    result = compile_spec(SPECS / "t5.mspec", convention="autograd", set=sizes)
    tables = compare(result, measure_step(result))
    assert [(t.category, r) for t in tables for r in t.rows if r.difference] == []
