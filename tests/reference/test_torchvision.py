"""The zoo against torchvision: `torchvision.models.VisionTransformer` and
`torchvision.models.resnet18`, built with small arguments, trained one real CPU step with
`F.cross_entropy(model(images), labels)` and AdamW, compared with memspec to the byte:
parameters and buffers (elements), the bytes autograd saves (each storage once), and the
MemTracker peak of the second step, category by category.

Two differences are named, computed terms, never tolerances: AdamW's `step` counters
(a 4-byte tensor per parameter tensor, in the tracker's OPT), and, where a tensor gets two
gradients at the peak (a ResNet block's input: conv1's and the downsample's), the sum
that autograd makes out of place under the tracker's dispatch mode and in place in a
real step (`peak_memory(sums_in_place=False)`; tests/zoo/test_peak_exact.py).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from memspec import compile_spec
from tests.conftest import SPECS
from tests.reference.harness import measure_library
from tests.reference.test_transformers import (
    assert_same_step,
    assert_same_traced_step,
    out_of_place_sums,
    traced_peak,
)
from tests.reference.torchvision_import import import_torchvision

torchvision = import_torchvision()


def image_step(make_model, spec: str, sizes: dict, use: tuple):
    """(the library's step, memspec's compile): an image classifier trained on
    [B, 3, I, I] images and int64 labels with F.cross_entropy."""

    def batch() -> tuple:
        images = torch.randn(sizes["B"], 3, sizes["I"], sizes["I"])
        return images, torch.randint(0, sizes["C"], (sizes["B"],))

    def step(model, b) -> torch.Tensor:
        return F.cross_entropy(model(b[0]), b[1])

    measured = measure_library(make_model, batch, step)
    result = compile_spec(SPECS / spec, set=sizes, use=use, convention="autograd")
    return measured, result


VIT_SIZES = [
    {"B": 2, "I": 32, "p": 8, "D": 16, "N": 2, "H": 4, "F": 32, "C": 10},
    {"B": 1, "I": 32, "p": 8, "D": 32, "N": 3, "H": 2, "F": 64, "C": 7},
    {"B": 3, "I": 32, "p": 4, "D": 24, "N": 1, "H": 3, "F": 48, "C": 5},
]
# memspec --use: torchvision runs nn.MultiheadAttention through scaled_dot_product_attention
# (need_weights=False), whose CPU kernel without dropout is the fused one: `sdpa` (the
# default) and `flash` are the same step.
VIT_PATHS = [(), ("flash",)]


def vit_step(sizes: dict, use: tuple):
    def make():
        return torchvision.models.VisionTransformer(
            image_size=sizes["I"],
            patch_size=sizes["p"],
            num_layers=sizes["N"],
            num_heads=sizes["H"],
            hidden_dim=sizes["D"],
            mlp_dim=sizes["F"],
            num_classes=sizes["C"],
        )

    return image_step(make, "vit.mspec", sizes, use)


@pytest.mark.parametrize("sizes", VIT_SIZES, ids=lambda s: "B{B}-I{I}-p{p}-D{D}-N{N}".format(**s))
@pytest.mark.parametrize("use", VIT_PATHS, ids=lambda u: ",".join(u) or "default")
def test_vit_step_equals_torchvision(sizes, use):
    measured, result = vit_step(sizes, use)
    assert_same_traced_step(result, measured)
    assert_same_step(result, measured)


def test_vit_class_token_gradient_at_batch_1_holds_the_whole_sequence():
    """At B = 1, `class_token.expand(1, -1, -1)`'s backward hands on its incoming gradient,
    cat's backward's narrowed view of the [1, S, D] gradient of the concatenation, and
    AccumulateGrad keeps that view as `.grad` (its strides obey the layout contract on
    the dims of size > 1): the gradient holds the whole [1, S, D] storage, (S - 1) D
    floats more than the parameter, until zero_grad (at B > 1 expand's backward sums
    into a new tensor: test_vit_step_equals_torchvision)."""
    sizes = VIT_SIZES[1]
    measured, result = vit_step(sizes, ())
    tracker = dict(measured.peak_by_category)
    own = result.value(result.categories["gradients"].bytes)
    peak = dict(result.peak.winner().breakdown)
    assert result.peak.winner().phase.value == "optimizer step"
    tokens = (sizes["I"] // sizes["p"]) ** 2  # S - 1
    assert result.value(peak["gradients"]) - own == 4 * tokens * sizes["D"] == 2048
    assert result.value(peak["gradients"]) == tracker["GRAD"]


RESNET_SIZES = [
    {"B": 2, "I": 32, "C": 10},  # peaks in the optimizer step
    {"B": 1, "I": 64, "C": 7},
    {"B": 16, "I": 64, "C": 10},  # in backward, at layer3.b0's input (two gradients)
]


_RESNET_STEPS: dict[tuple, tuple] = {}  # the B=16 step is read by two tests: measured once


def resnet_step(sizes: dict, use: tuple = ()):
    key = (tuple(sorted(sizes.items())), use)
    if key not in _RESNET_STEPS:
        _RESNET_STEPS[key] = image_step(
            lambda: torchvision.models.resnet18(num_classes=sizes["C"]),
            "resnet18.mspec",
            sizes,
            use,
        )
    return _RESNET_STEPS[key]


@pytest.mark.parametrize("sizes", RESNET_SIZES, ids=lambda s: "B{B}-I{I}-C{C}".format(**s))
def test_resnet18_step_equals_torchvision(sizes):
    assert_same_traced_step(*reversed(resnet_step(sizes)))


def test_resnet18_peak_at_a_block_input_names_the_out_of_place_sum():
    """At B=16, I=64 the step peaks in backward at layer3.b0.conv1, where layer3.b0's
    input gets its second gradient (conv1's, after the downsample's): under the tracker
    autograd adds such sums out of place, and memspec's replay of that step
    (sums_in_place=False) peaks 262,144 B above a real step's."""
    measured, result = resnet_step(RESNET_SIZES[2])
    assert traced_peak(result).label() == "backward: layer3.b0.conv1"
    assert out_of_place_sums(result) == 262_144
    assert result.peak.value + measured.optimizer_scalars + 262_144 == measured.peak


def table_rows():
    """(spec, sizes, memspec --use, the library's configuration, measured, result) per row
    of the README's table, as tests/reference/table.py::rows()."""
    for use in VIT_PATHS:
        for sizes in VIT_SIZES:
            measured, result = vit_step(sizes, use)
            config = "VisionTransformer (dropout 0, attention_dropout 0: SDPA's fused kernel)"
            yield "vit", sizes, ", ".join(use) or "(default)", config, measured, result
    for sizes in RESNET_SIZES:
        measured, result = resnet_step(sizes)
        sums = out_of_place_sums(result)
        terms = (("gradient sums out of place under MemTracker's dispatch mode", sums),)
        config = "resnet18(num_classes=C)"
        yield "resnet18", sizes, "(default)", config, measured, result, terms if sums else ()
