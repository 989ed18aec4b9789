"""The zoo specs that describe no library's model, against plain PyTorch code a user writes.

- `specs/mlp.mspec` is the PyTorch quickstart tutorial's `NeuralNetwork`: the tutorial's
  own code (nn.Flatten, nn.Sequential of nn.Linear and nn.ReLU, nn.CrossEntropyLoss).
- `specs/cs336_lm.mspec` and `specs/cs336_lm_swiglu.mspec` are the CS336 assignment-1
  model, which every student writes for themselves: here written once in torch.nn from
  the handout's definitions, with the choices the specs state (no biases, RMSNorm by
  F.rms_norm, RoPE on interleaved pairs with cos/sin buffers per layer, attention by
  einsum and softmax over a masked_fill causal mask, or F.scaled_dot_product_attention
  under `--use flash`, F.cross_entropy). This is independent code, not memspec's
  lowering, but a student's own choices (an explicit log-softmax, einops) would change
  the saved tensors: the spec states which it models.

One real CPU step each, compared with memspec to the byte (tests/reference/harness.py);
the one named term is AdamW's step counters.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from memspec import compile_spec
from tests.conftest import SPECS
from tests.reference.harness import measure_library
from tests.reference.test_transformers import assert_same_step


class NeuralNetwork(nn.Module):
    """The quickstart tutorial's model, with its 28 x 28 input and widths as arguments."""

    def __init__(self, image: int, hidden: int, classes: int):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(image * image, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, classes),
        )

    def forward(self, x):
        x = self.flatten(x)
        logits = self.linear_relu_stack(x)
        return logits


MLP_SIZES = [
    {"B": 4, "I": 8, "F": 32, "C": 10},
    {"B": 1, "I": 6, "F": 16, "C": 3},
    {"B": 5, "I": 4, "F": 24, "C": 7},
]


def mlp_step(sizes: dict):
    loss_fn = nn.CrossEntropyLoss()

    def batch():
        images = torch.randn(sizes["B"], sizes["I"], sizes["I"])
        return images, torch.randint(0, sizes["C"], (sizes["B"],))

    def step(model, b):
        return loss_fn(model(b[0]), b[1])

    measured = measure_library(
        lambda: NeuralNetwork(sizes["I"], sizes["F"], sizes["C"]), batch, step
    )
    result = compile_spec(SPECS / "mlp.mspec", set=sizes, convention="autograd")
    return measured, result


@pytest.mark.parametrize("sizes", MLP_SIZES, ids=lambda s: "B{B}-I{I}-F{F}".format(**s))
def test_mlp_step_equals_the_tutorial(sizes):
    assert_same_step(*reversed(mlp_step(sizes)))


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class RoPE(nn.Module):
    def __init__(self, d_k: int, max_len: int, theta: float = 10000.0):
        super().__init__()
        freqs = theta ** (-torch.arange(0, d_k, 2).float() / d_k)
        angles = torch.outer(torch.arange(max_len).float(), freqs)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x):
        c, s = self.cos[: x.shape[-2]], self.sin[: x.shape[-2]]
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack((even * c - odd * s, even * s + odd * c), dim=-1).flatten(-2)


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, d: int, heads: int, max_len: int, flash: bool):
        super().__init__()
        self.heads, self.flash = heads, flash
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.output_proj = nn.Linear(d, d, bias=False)
        self.rope = RoPE(d // heads, max_len)

    def split(self, x):  # b s (h d) -> b h s d, a view
        b, s, _ = x.shape
        return x.view(b, s, self.heads, -1).transpose(1, 2)

    def forward(self, x):
        q = self.rope(self.split(self.q_proj(x)))
        k = self.rope(self.split(self.k_proj(x)))
        v = self.split(self.v_proj(x))
        if self.flash:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = torch.einsum("...sd,...td->...st", q, k) / q.shape[-1] ** 0.5
            s = scores.shape[-1]
            future = torch.ones(s, s, dtype=torch.bool).triu(1)
            probs = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
            o = torch.einsum("...st,...td->...sd", probs, v)
        b, _, s, _ = o.shape
        return self.output_proj(o.transpose(1, 2).reshape(b, s, -1))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, d_ff: int, max_len: int, swiglu: bool, flash: bool):
        super().__init__()
        self.swiglu = swiglu
        self.ln1 = RMSNorm(d)
        self.attn = MultiHeadSelfAttention(d, heads, max_len, flash)
        self.ln2 = RMSNorm(d)
        self.ffn = nn.Module()
        self.ffn.w1 = nn.Linear(d, d_ff, bias=False)
        self.ffn.w2 = nn.Linear(d_ff, d, bias=False)
        if swiglu:
            self.ffn.w3 = nn.Linear(d, d_ff, bias=False)

    def feed_forward(self, x):
        hidden = F.silu(self.ffn.w1(x))
        if self.swiglu:
            hidden = hidden * self.ffn.w3(x)
        return self.ffn.w2(hidden)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.feed_forward(self.ln2(x))


class TransformerLM(nn.Module):
    def __init__(self, sizes: dict, swiglu: bool, flash: bool):
        super().__init__()
        v, d, length = sizes["V"], sizes["D"], sizes["L"]
        d_ff = sizes.get("F", 4 * d)
        self.token_embeddings = nn.Embedding(v, d)
        self.layers = nn.ModuleList(
            Block(d, sizes["H"], d_ff, length, swiglu, flash) for _ in range(sizes["N"])
        )
        self.ln_final = RMSNorm(d)
        self.lm_head = nn.Linear(d, v, bias=False)

    def forward(self, tokens, targets):
        x = self.token_embeddings(tokens)
        for layer in self.layers:
            x = layer(x)
        logits = self.lm_head(self.ln_final(x))
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


CS336_SIZES = [
    {"B": 2, "L": 8, "V": 32, "D": 16, "N": 2, "H": 4},
    {"B": 1, "L": 6, "V": 48, "D": 24, "N": 1, "H": 2, "F": 40},
    {"B": 3, "L": 4, "V": 64, "D": 32, "N": 3, "H": 4, "F": 48},
]
CS336_SPECS = [("cs336_lm", False), ("cs336_lm_swiglu", True)]
CS336_PATHS = [(), ("flash",)]  # the specs' default (math), then --use flash


def cs336_step(spec: str, swiglu: bool, sizes: dict, use: tuple):
    def batch():
        tokens = torch.randint(0, sizes["V"], (sizes["B"], sizes["L"]))
        return tokens, torch.randint(0, sizes["V"], (sizes["B"], sizes["L"]))

    measured = measure_library(
        lambda: TransformerLM(sizes, swiglu, flash="flash" in use),
        batch,
        lambda model, b: model(*b),
    )
    result = compile_spec(SPECS / f"{spec}.mspec", set=sizes, use=use, convention="autograd")
    return measured, result


@pytest.mark.parametrize("sizes", CS336_SIZES, ids=lambda s: "B{B}-L{L}-D{D}-N{N}".format(**s))
@pytest.mark.parametrize("use", CS336_PATHS, ids=lambda u: ",".join(u) or "default")
@pytest.mark.parametrize(("spec", "swiglu"), CS336_SPECS, ids=lambda x: str(x))
def test_cs336_step_equals_plain_torch(spec, swiglu, sizes, use):
    assert_same_step(*reversed(cs336_step(spec, swiglu, sizes, use)))


def table_rows():
    for sizes in MLP_SIZES:
        yield "mlp", sizes, "(default)", "PyTorch quickstart NeuralNetwork", *mlp_step(sizes)
    for spec, swiglu in CS336_SPECS:
        for use in CS336_PATHS:
            for sizes in CS336_SIZES:
                core = "F.scaled_dot_product_attention" if use else "einsum + softmax"
                label = f"plain torch.nn, {core}"
                measured, result = cs336_step(spec, swiglu, sizes, use)
                yield spec, sizes, ", ".join(use) or "(default)", label, measured, result
