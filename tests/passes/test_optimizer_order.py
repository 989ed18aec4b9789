"""torch.optim updates parameters in `nn.Module.parameters()` order: each module's own
parameters before its submodules'. The for-loop step's moment holds the previous
parameter's `denom`, so the order decides the peak."""

from __future__ import annotations

import sympy as sp

from memspec import compile_spec
from memspec.ir.types import DType
from memspec.passes.peak.optimizer_step import module_order
from memspec.passes.results import LineItem
from tests.conftest import SPECS


def item(path: str) -> LineItem:
    return LineItem(path, (sp.Integer(2),), DType.parse("float32"))


def test_own_parameters_come_before_submodules():
    declared = [item(p) for p in (
        "conv_proj.weight", "conv_proj.bias", "class_token", "encoder.layers.ln.weight",
        "encoder.pos_embedding", "encoder.ln.weight", "heads.head.weight")]
    assert [i.path for i in module_order(tuple(declared))] == [
        "class_token", "conv_proj.weight", "conv_proj.bias", "encoder.pos_embedding",
        "encoder.layers.ln.weight", "encoder.ln.weight", "heads.head.weight"]


def test_vit_updates_class_token_before_conv_proj():
    """torchvision's ViT declares class_token after conv_proj and updates it first: its
    denom (D floats) is alive while conv_proj.weight's temporaries are made."""
    sizes = {"B": 1, "I": 32, "p": 8, "D": 32, "N": 3, "H": 2, "F": 64, "C": 7}
    result = compile_spec(SPECS / "vit.mspec", set=sizes, convention="autograd")
    moment = result.peak.winner()
    assert moment.label() == "optimizer step: updating conv_proj.weight"
    params = result.value(result.categories["parameters"].bytes)
    conv = 3 * 8 * 8 * 32 * 4
    assert result.value(moment.part("optimizer_state")) == 2 * params + 2 * conv + 32 * 4
