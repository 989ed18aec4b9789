"""Recomputation under an autocast precision: torch's checkpoint runs the recomputation
under `torch.amp.autocast("cpu", ...)` entered afresh with the forward's settings, so
its cache (empty: the forward's was cleared as the forward returned) makes each
parameter's 16-bit copy again and holds it until the recomputation stops; after that
only the backward nodes that saved a copy hold it. Verified against torch.autocast
itself (the cast ops left to autocast) and against the graph's explicit casts."""

from __future__ import annotations

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.cli import main
from memspec.ir.types import DType
from memspec.passes.peak.replay import replay
from memspec.recompute import checkpointed_regions
from memspec.symbolic.polys import poly
from memspec.verify.compare import compare
from memspec.verify.measure import measure_step
from memspec.verify.peak import compare_peak, measure_peak
from tests.conftest import ROOT

SWIGLU = {"B": 2, "L": 16, "D": 32, "H": 4, "V": 64, "N": 3, "F": 64}
GPT2 = {"B": 2, "L": 16, "D": 32, "H": 4, "V": 64, "N": 5, "P": 32}  # 2 left out
CASES = [
    ("specs/cs336_lm_swiglu.mspec", SWIGLU, "math"),
    ("specs/cs336_lm_swiglu.mspec", SWIGLU, "flash"),
    ("specs/gpt2.mspec", GPT2, "sdpa"),
    ("specs/gpt2.mspec", GPT2, "eager"),
]

# A repeated block one of whose weights is cast for an input that needs no gradient:
# linear saves that input, not the weight's copy, which only autocast's cache holds.
CONDITIONED = """
use std
dim batch_size as B
dim d_model    as D
dim d_ff       as F
dim num_layers as N
dim classes    as C

layer Block(d_model, d_ff) {
    up   = Linear(d_model, d_ff, bias = false)
    cond = Linear(d_model, d_ff, bias = false)
    down = Linear(d_ff, d_model, bias = false)
    forward(x: [b, d_model], c: [b, d_model]) -> [b, d_model] {
        return x + down(relu(up(x)) * cond(c))
    }
}

model Conditioned {
    embed  = Linear(D, D, bias = false)
    layers = repeat N of Block(D, F)
    head   = Linear(D, C, bias = false)
    forward(x: [B, D], c: [B, D], labels: int64[B]) {
        h = layers(embed(x), c)   : [B, D]
        return cross_entropy(head(h), labels)
    }
}

train { precision fp32; optimizer sgd; convention autograd }
"""
COND_SIZES = {"B": 2, "D": 32, "F": 256, "N": 3, "C": 4}


def _compile(spec, sizes, variant, recompute):
    return compile_spec(ROOT / spec, set=sizes, use=[variant], precision="autocast_bf16",
                        convention="autograd", recompute=recompute)


@pytest.mark.parametrize("recompute", ["full", "selective", "save_matmuls"])
@pytest.mark.parametrize(("spec", "sizes", "variant"), CASES)
def test_recomputation_under_autocast_equals_torch(spec, sizes, variant, recompute):
    """Saved tensors and the peak, to the byte (save_matmuls: PyTorch's selective
    checkpointing, the 16-bit products kept). Before the recomputation let go of its
    cache, memspec held every recomputed layer's copies to the end of the step (cs336
    full: 45,056 B over at the peak)."""
    result = _compile(spec, sizes, variant, recompute)
    tables = compare(result, measure_step(result))
    assert [(t.category, r) for t in tables for r in t.rows if r.difference] == []
    peak = compare_peak(result, measure_peak(result, explicit_casts=False))
    assert peak.ok, (peak.rows, peak.moment, peak.phases)


@pytest.mark.parametrize(("spec", "sizes", "variant"), CASES[::2])
def test_the_lowerings_casts_are_autocasts_under_recomputation(spec, sizes, variant):
    """The graph's explicit casts hold the forward's copies only until the forward
    returns, and the recomputation's until it stops, as autocast's cache does (the
    lowering kept the forward's copies alive through backward: 65,536 B over torch's
    own autocast on cs336)."""
    result = _compile(spec, sizes, variant, "full")
    assert measure_peak(result) == measure_peak(result, explicit_casts=False)


def _conditioned(tmp_path, recompute="full"):
    spec = tmp_path / "conditioned.mspec"
    spec.write_text(CONDITIONED)
    return compile_spec(spec, set=COND_SIZES, precision="autocast_bf16", recompute=recompute)


def test_a_copy_only_the_cache_holds_goes_when_the_recomputation_stops(tmp_path):
    """cond's weight copy is saved by no node: in each layer's recomputation it lives
    from cond's cast until the stop (down, the last node to save), then goes before
    down's backward runs: the recomputation's last moment less D*F*2 bytes."""
    result = _conditioned(tmp_path)
    graph = result.graph
    subs = result.substitutions()
    counts = {region.id: COND_SIZES["N"] for region in graph.regions}
    rep = replay(graph, counts, lambda dtype: DType.float32, False,
                 lambda e: poly(e.xreplace(subs)),
                 checkpointed=checkpointed_regions(graph, result.config.recompute))
    points = [p for p in rep.points if p.phase.value == "backward"]
    copy = COND_SIZES["D"] * COND_SIZES["F"] * 2
    stops = [i for i, p in enumerate(points) if p.op_path == "recompute layers.down"]
    assert len(stops) == COND_SIZES["N"]
    for i in stops:
        before, after = (dict(points[k].memory)["activations"] for k in (i, i + 1))
        assert points[i + 1].op_path == "layers.down"
        assert before[1] - after[1] == copy


@pytest.mark.parametrize("recompute", ["none", "full"])
def test_a_conditioned_block_under_autocast_equals_torch(tmp_path, recompute):
    result = _conditioned(tmp_path, recompute)
    measured = measure_peak(result, explicit_casts=False)
    assert measure_peak(result) == measured
    assert compare_peak(result, measured).ok


def test_a_checkpointed_layer_under_autocast_equals_torch():
    """`repeat N of checkpoint Block(...)` in the spec, under autocast: its peak
    formula is the full policy's, and torch agrees to the byte."""
    text = (ROOT / "specs/cs336_lm_swiglu.mspec").read_text().replace(
        "repeat N of Block", "repeat N of checkpoint Block")
    marked = compile_spec(text, precision="autocast_bf16")
    full = compile_spec(ROOT / "specs/cs336_lm_swiglu.mspec", precision="autocast_bf16",
                        recompute="full")
    assert sp.expand(marked.peak.bytes - full.peak.bytes) == 0
    sized = compile_spec(text, set=SWIGLU, use=["math"], precision="autocast_bf16")
    peak = compare_peak(sized, measure_peak(sized, explicit_casts=False))
    assert peak.ok, (peak.rows, peak.moment)


def test_cli_verifies_recomputation_under_autocast(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = ["verify", "specs/cs336_lm_swiglu.mspec", "--precision", "autocast_bf16",
            "--recompute", "full", "--peak", *[f"--set={k}={v}" for k, v in SWIGLU.items()]]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "verify --peak: equal to the byte in every category" in out
