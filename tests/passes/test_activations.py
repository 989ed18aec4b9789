"""Activation counting on small specs: storage sharing, repeat carries, requires_grad."""

from __future__ import annotations

import sympy as sp

from memspec import compile_spec
from memspec.ir.verify import verify

B, D, N = (sp.Symbol(s, integer=True, positive=True) for s in "BDN")

HEADER = """
use std
dim batch_size as B
dim d_model as D
dim depth as N
"""


def activations(body: str, convention: str = "autograd"):
    r = compile_spec(HEADER + body, convention=convention)
    verify(r.graph)
    return r, r.resolve(r.categories["activations"].elements)


def test_carried_input_counts_once_per_repetition():
    # Each repetition's linear saves its input: the model input once (repetition 1),
    # then N - 1 earlier outputs; the final output is saved by nothing.
    r, total = activations("""
    layer Step(d) {
        lin = Linear(d, d)
        forward(x: [b, d]) -> [b, d] { return lin(x) }
    }
    model M {
        w = Linear(D, D)
        layers = repeat N of Step(D)
        forward(x: [B, D]) { return layers(w(x)) }
    }
    """)
    assert sp.expand(total - (B * D + N * B * D)) == 0  # w's input, then N block inputs
    assert [i.path for i in r.categories["activations"].items] == ["x", "w", "layers.lin (carried)"]


def test_output_saved_inside_the_region_is_not_counted_twice():
    # relu saves its output: N outputs inside the region, plus the first input saved by
    # the linear of repetition 1 and N - 1 outputs it reads later, which are the same
    # storages as the relu outputs of repetitions 1..N-1.
    _, total = activations("""
    layer Step(d) {
        lin = Linear(d, d)
        forward(x: [b, d]) -> [b, d] { return relu(lin(x)) }
    }
    model M {
        w = Linear(D, D)
        layers = repeat N of Step(D)
        forward(x: [B, D]) { return layers(w(x)) }
    }
    """)
    # x (w's input), w's output (repetition 1's input), N linear outputs? no: relu saves
    # its output (N of them); linear saves its input: w's output + the N - 1 relu outputs.
    assert sp.expand(total - (B * D + B * D + N * B * D)) == 0


def test_views_share_storage_and_ops_on_inputs_save_nothing():
    r, total = activations("""
    model M {
        lin = Linear(D, D)
        forward(x: [B, D]) {
            h = x * 2                                  # no input needs a gradient: nothing saved
            y = lin(h)
            v = rearrange(y, "b (two half) -> b two half", two = 2)   # a view of y
            w = rearrange(y, "b (two half) -> b half two", two = 2)   # another view of y
            return v * rearrange(w, "b half two -> b two half")     # saves both: one storage
        }
    }
    """)
    assert sp.expand(total - 2 * B * D) == 0  # h (linear's input) and y once
    paths = [i.path for i in r.categories["activations"].items]
    assert paths == ["h", "y"]


def test_tied_weight_counts_once():
    r = compile_spec(HEADER + """
    dim vocab_size as V
    model M {
        emb = Embedding(V, D)
        forward(tokens: int64[B]) {
            return linear(emb(tokens), emb.weight)   # the output layer reuses emb.weight
        }
    }
    """)
    params = r.resolve(r.categories["parameters"].elements)
    V = sp.Symbol("V", integer=True, positive=True)
    assert params == V * D
    assert r.resolve(r.categories["optimizer_state"].elements) == 2 * V * D


def test_course_counts_each_value_once():
    # Linear's output and the `linear` op inside it are one value.
    _, total = activations("""
    model M {
        lin = Linear(D, D)
        forward(x: [B, D]) { return softmax(lin(x)) }
    }
    """, convention="course")
    assert sp.expand(total - 2 * B * D) == 0


def test_course_counts_a_users_own_norm_layer_like_rmsnorm():
    # `course` picks ops by kind: a norm layer of the user's own, named nowhere in the
    # convention, is counted because it calls a norm op, as the std RMSNorm is.
    mine, total = activations("""
    layer ScaleNorm(d) {
        param gain: [d]
        forward(x: [..., d]) -> [..., d] { return rms_norm(x, gain, 1e-6) }
    }
    model M {
        norm = ScaleNorm(D)
        forward(x: [B, D]) { return norm(x) }
    }
    """, convention="course")
    std, std_total = activations("""
    model M {
        norm = RMSNorm(D)
        forward(x: [B, D]) { return norm(x) }
    }
    """, convention="course")
    assert sp.expand(total - B * D) == 0 and sp.expand(std_total - B * D) == 0
    (item,) = mine.categories["activations"].items
    (std_item,) = std.categories["activations"].items
    assert item.path == std_item.path
    # The note names the op, or the layer when the convention names it (RMSNorm).
    assert (item.note, std_item.note) == ("output of rms_norm", "output of RMSNorm")
