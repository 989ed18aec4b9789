"""rms_norm's backward, node by node (its `backward_moments`), against PyTorch.

torch 2.13 decomposes CPU rms_norm into pow, mean, add_, rsqrt and two muls (in float32
for a 16-bit x, with casts); its backward holds, at the pow node, three [..., D]
temporaries beside the other part of x's gradient. Every moment of that backward is
checked against MemTracker's memory after each aten op, in every category, for each
case of which inputs need a gradient; and `verify --peak` to the byte where it is the
step's peak (cs336_lm_swiglu with math and flash attention, llama, a frozen weight).
"""

from __future__ import annotations

import itertools

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.ops import lookup
from memspec.passes.peak import repeats
from memspec.passes.peak.moments import Phase
from memspec.passes.peak.replay import replay
from memspec.symbolic.polys import evaluate, poly
from memspec.verify import peak as verify_peak
from memspec.verify.peak import compare_peak, measure_peak
from tests.conftest import SPECS

# x's gradient from an embedding (none from a frozen one), the norm under test, a head
PROBE = """use std
dim B; dim L; dim V; dim D
layer Frozen(d) {{
    param weight: [d] frozen
    forward(x: [..., d]) {{ return rms_norm(x, weight, 1e-5) }}
}}
layer Bare(d) {{
    forward(x: [..., d]) {{ return rms_norm(x, 1e-5) }}
}}
layer FrozenEmbedding(n, d) {{
    param weight: [n, d] frozen
    forward(indices: [...]) {{ return embedding(indices, weight) }}
}}
model M {{
    wte  = {embedding}(V, D)
    norm = {layer}(D)
    head = Linear(D, V)
    proj = Linear(D, D)
    forward(tokens: int64[B, L], targets: int64[B, L]) {{
        h = wte(tokens)
        return cross_entropy(head({body}), targets)
    }}
}}
"""
NORM, RESIDUAL = "proj(norm(h))", "h + proj(norm(h))"
CASES = {  # (the norm layer, the embedding, the head's input): which of x and the weight
    # need a gradient; whether x has a gradient (the residual's) when the norm's arrive
    "both": ("RMSNorm", "Embedding", NORM),
    "x only, frozen weight": ("Frozen", "Embedding", NORM),
    "weight only": ("RMSNorm", "FrozenEmbedding", NORM),
    "x, no weight": ("Bare", "Embedding", NORM),
    "both, residual": ("RMSNorm", "Embedding", RESIDUAL),
    "x only, residual": ("Bare", "Embedding", RESIDUAL),
}
SIZES = [  # D large beside B*L, and B*L large beside D; V small: the norm peaks
    {"B": 2, "L": 3, "V": 4, "D": 64},
    {"B": 4, "L": 16, "V": 4, "D": 8},
    {"B": 1, "L": 5, "V": 2, "D": 24},
]
CATEGORIES = ("activations", "temporaries", "gradients")
TRACKER = {"activations": "ACT", "temporaries": "TEMP", "gradients": "GRAD"}


def _recording_tracker(log: list):
    """verify's tracker, noting the replayed categories before and after each aten op
    of backward, with the op's name."""
    make = verify_peak._phase_tracker

    def tracker():
        base = type(make())

        class Recording(base):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                before = self._snap()
                out = super().__torch_dispatch__(func, types, args, kwargs)
                if self._mod_tracker.is_bw and not self._in_opt:
                    log.append((str(func), before, self._snap()))
                return out

            def _snap(self) -> tuple[int, ...]:
                (snap,) = self._curr_mem_snap.values() or ({},)
                names = {str(k).rsplit(".", 1)[-1]: v for k, v in snap.items()}
                return tuple(names.get(TRACKER[c], 0) for c in CATEGORIES)

        return Recording()

    return tracker


def _tracker_moments(log) -> list[tuple[int, ...]]:
    """The memory at each local maximum of the norm's backward: after the head's last
    matrix product, before the embedding's backward."""
    start = max(i for i, (name, _, _) in enumerate(log) if name.startswith("aten.mm")) + 1
    end = next((i for i, e in enumerate(log) if "embedding_dense_backward" in e[0]), len(log))
    values = [("", log[start][1])]
    for name, before, after in log[start:end]:
        values += [("", before), (name, after)]
    values.append(("", log[end][1] if end < len(log) else (0, 0, 0)))
    peaks, rising, name = [], False, ""
    for (_, now), (op, after) in itertools.pairwise(values):
        if sum(after) > sum(now):
            rising, name = True, op  # the op that allocated last
        elif sum(after) < sum(now) and rising:
            # memspec leaves out a 16-bit gradient's cast to its dtype beside its float32
            # sum: below the moment before it in every category, never the peak
            cast = name == "aten._to_copy.default" and peaks
            if not (cast and all(a <= b for a, b in zip(now, peaks[-1], strict=True))):
                peaks.append(now)
            rising = False
    return peaks


def _memspec_moments(result, sums_in_place: bool) -> list[tuple[int, ...]]:
    bindings = dict(result.bindings)
    plan = repeats.plan(result.graph, bindings)
    points = replay(
        result.graph, plan.repetitions, result.config.precision.grad_for, False,
        lambda e: poly(result.resolve(e)), sums_in_place,
    ).points
    return [
        tuple(int(evaluate(dict(p.memory)[c], bindings)) for c in CATEGORIES)
        for p in points
        if p.phase is Phase.BACKWARD and p.op_path == "norm"
    ]


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()))
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_moment_of_the_backward_matches_the_tracker(precision, case, sizes, monkeypatch):
    layer, embedding, body = CASES[case]
    result = compile_spec(PROBE.format(layer=layer, embedding=embedding, body=body), set=sizes,
                          convention="autograd", precision=precision)
    log: list = []
    monkeypatch.setattr(verify_peak, "_phase_tracker", _recording_tracker(log))
    measurement = measure_peak(result)
    moments = _memspec_moments(result, sums_in_place=False)
    assert moments == _tracker_moments(log)
    if precision == "fp32":
        assert compare_peak(result, measurement).ok


def test_the_moments_without_a_weight():
    """x's first part (g * r) goes to x as the mul node returns; the pow node then holds
    the mean's gradient and x^1, 2x and their product: 4X of temporaries beside the
    first part, which the replay holds as x's gradient; the second part follows."""
    result = compile_spec(PROBE.format(layer="Bare", embedding="Embedding", body=NORM),
                          convention="autograd")
    (op,) = [o for o in result.graph.ops if o.op == "rms_norm"]
    B, L, D = (sp.Symbol(n, positive=True, integer=True) for n in "BLD")
    x, s = 4 * B * L * D, 4 * B * L
    moments = lookup("rms_norm").backward_moments(op, result.graph, True)
    assert [(sp.expand(m.temporaries - t), m.given) for m, t in zip(
        moments, [2 * x + s, s, 4 * s, x + s, 4 * x, 0], strict=True)] == [
        (0, ()), (0, (0,)), (0, ()), (0, ()), (0, ()), (0, (0,))]
    assert moments[-1].dropped == ("rsqrt", "input")


LM = {"B": 2, "L": 64, "D": 16, "H": 8, "V": 16, "N": 3, "F": 32}
LLAMA = {"B": 1, "L": 96, "V": 16, "D": 16, "N": 2, "H": 4, "F": 24, "KV": 2}


@pytest.mark.parametrize(("spec", "sizes", "use", "moment"), [
    ("cs336_lm_swiglu.mspec", LM, ["flash"], "ln_final"),
    ("cs336_lm_swiglu.mspec", {"B": 8, "L": 8, "D": 32, "H": 2, "V": 8, "N": 2, "F": 32},
     ["math"], "ln_final"),
    ("llama.mspec", {"B": 16, "L": 4, "V": 8, "D": 32, "N": 1, "H": 2, "F": 32, "KV": 1},
     ["math"], "model.norm"),
    ("llama.mspec", LLAMA, ["sdpa"], "model.norm"),
])
def test_verify_peak_at_the_final_norm(spec, sizes, use, moment):
    result = compile_spec(SPECS / spec, set=sizes, use=use, convention="autograd")
    comparison = compare_peak(result, measure_peak(result))
    assert comparison.ok, (comparison.moment, comparison.rows, comparison.terms)
    assert comparison.moment == f"backward: {moment}"
