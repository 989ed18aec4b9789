"""Vision and MLP specs: the PyTorch Quickstart MLP, torchvision's ViT-B/16 and ResNet-18.

Per spec (published counts live in test_zoo.py, rendering in test_every_spec.py): a hand-
derived symbolic parameter formula (exact sympy equality), and `verify` at small sizes with
zero difference in every row.
"""

from __future__ import annotations

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.verify.compare import compare
from memspec.verify.measure import measure_step
from tests.conftest import SPECS


def S(name: str) -> sp.Symbol:
    return sp.Symbol(name, integer=True, positive=True)


B, IMG, P, D, N, H, F, C = map(S, ["B", "I", "p", "D", "N", "H", "F", "C"])

# --- hand-derived symbolic parameter formulas -------------------------------------------


def _resnet18_params() -> sp.Expr:
    """torchvision resnet18, counted block by block (convolutions have no bias)."""

    def conv(cin, cout, k):
        return cin * cout * k * k

    def bn(c):
        return 2 * c  # weight and bias; the running statistics are buffers

    def block(cin, cout, stride):
        n = conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout)
        if stride != 1 or cin != cout:
            n += conv(cin, cout, 1) + bn(cout)  # downsample
        return n

    total = conv(3, 64, 7) + bn(64)
    for cin, cout, stride in [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)]:
        total += block(cin, cout, stride) + block(cout, cout, 1)
    return total + 512 * C + C  # fc


SEQ = (IMG / P) ** 2 + 1  # ViT: patches plus the class token

FORMULAS = {
    # fc1 (I^2 F + F), fc2 (F^2 + F), fc3 (F C + C).
    "mlp.mspec": IMG**2 * F + F + F**2 + F + F * C + C,
    # conv_proj (3 p^2 D + D), class_token (D), pos_embedding (S D); per block: ln_1 and
    # ln_2 (4D), in_proj (3D^2 + 3D), out_proj (D^2 + D), mlp (DF + F + FD + D);
    # encoder.ln (2D); heads.head (DC + C).
    "vit.mspec": 3 * P**2 * D
    + D
    + D
    + SEQ * D
    + N * (4 * D + 3 * D**2 + 3 * D + D**2 + D + 2 * D * F + F + D)
    + 2 * D
    + D * C
    + C,
    "resnet18.mspec": _resnet18_params(),
}


@pytest.mark.parametrize("spec", sorted(FORMULAS))
def test_symbolic_parameter_formula(spec):
    result = compile_spec(SPECS / spec)
    got = result.resolve(result.categories["parameters"].elements)
    assert sp.expand(got - result.resolve(FORMULAS[spec])) == 0


def test_resnet18_formula_is_the_published_one():
    assert sp.expand(_resnet18_params() - (11_176_512 + 513 * C)) == 0
    assert _resnet18_params().subs(C, 1000) == 11_689_512


def test_vit_sequence_length_is_derived():
    result = compile_spec(SPECS / "vit.mspec", preset="b16")
    (pos,) = [i for i in result.categories["parameters"].items if i.path == "encoder.pos_embedding"]
    assert result.value(pos.total_elements) == 197 * 768  # (224 / 16)^2 + 1 = 197


def test_mlp_course_activations_by_hand():
    # fc1, relu, fc2, relu ([B, F] each), fc3 and log_softmax ([B, C] each).
    result = compile_spec(SPECS / "mlp.mspec", convention="course")
    got = result.categories["activations"].elements
    assert sp.expand(result.resolve(got) - (4 * B * F + 2 * B * C)) == 0


def test_vit_flash_stores_no_attention_matrix():
    # The [S, S] scores are (I/p)^4 terms; math saves them, flash does not.
    def acts(variant):
        result = compile_spec(SPECS / "vit.mspec", convention="autograd", use=[variant])
        return result.resolve(result.categories["activations"].elements)

    assert sp.Poly(acts("math").subs(IMG, P * S("r")), S("r")).degree() == 4
    assert sp.Poly(acts("flash").subs(IMG, P * S("r")), S("r")).degree() == 2


def test_resnet_buffers_are_batch_norm_statistics():
    result = compile_spec(SPECS / "resnet18.mspec", preset="imagenet")
    items = result.categories["buffers"].items
    floats = sum(int(i.total_elements) for i in items if i.dtype.value == "float32")
    counters = [i for i in items if i.dtype.value == "int64"]
    assert floats == 9_600  # running_mean and running_var of 20 BatchNorms
    assert len(counters) == 20
    assert sum(int(i.total_elements) for i in counters) == 20  # num_batches_tracked scalars
    assert result.value(result.categories["buffers"].bytes) == 9_600 * 4 + 20 * 8


def test_resnet_spatial_sizes_follow_pytorch():
    # 224 -> conv1 112 -> maxpool 56 -> 56, 28, 14, 7: the last stage's saved tensors.
    result = compile_spec(
        SPECS / "resnet18.mspec", preset="imagenet", set={"B": 1}, convention="autograd"
    )
    (pooled_input,) = [
        i for i in result.categories["activations"].items if i.path == "layer4.b1.add"
    ]
    assert result.value(pooled_input.total_elements) == 512 * 7 * 7


# --- verify at small sizes --------------------------------------------------------------

SMALL = [
    ("mlp.mspec", {"B": 2, "I": 4, "F": 8, "C": 3}, []),
    *(
        ("vit.mspec", {"B": 2, "I": 8, "p": 4, "D": 8, "N": 2, "H": 2, "F": 16, "C": 5}, [v])
        for v in ("math", "flash")
    ),
    # Full widths (64..512) at 32 x 32: about 10 s on the CPU.
    ("resnet18.mspec", {"B": 2, "I": 32, "C": 10}, []),
]


@pytest.mark.parametrize(("spec", "sizes", "use"), SMALL)
def test_verify_at_small_sizes(spec, sizes, use):
    result = compile_spec(SPECS / spec, convention="autograd", set=sizes, use=use)
    tables = compare(result, measure_step(result))
    assert [(t.category, r) for t in tables for r in t.rows if r.difference] == []
    assert all(t.measured > 0 for t in tables if t.category != "buffers")
