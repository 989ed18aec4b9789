"""`--precision autocast_bf16`: the forward under torch.autocast on the CPU, its casts
ops of the graph, verified to the byte against torch (saved tensors, and the peak on
fake tensors), and against torch.autocast making the casts itself inside the ops."""

from __future__ import annotations

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.cli import main
from memspec.errors import MemspecError
from memspec.ops.casts import CAST
from memspec.passes.peak import StepOptions
from memspec.verify.compare import compare
from memspec.verify.measure import measure_step
from memspec.verify.peak import compare_peak, measure_peak
from tests.conftest import ROOT

SWIGLU = {"B": 2, "L": 16, "D": 32, "H": 4, "V": 64, "N": 2, "F": 64}
GPT2 = {"B": 2, "L": 16, "D": 32, "H": 4, "V": 64, "N": 5, "P": 32}  # 2 left out
CASES = [
    ("specs/cs336_lm_swiglu.mspec", SWIGLU, "math"),
    ("specs/cs336_lm_swiglu.mspec", SWIGLU, "flash"),
    ("specs/gpt2.mspec", GPT2, "sdpa"),
    ("specs/gpt2.mspec", GPT2, "eager"),
]


def _compile(spec, sizes, variant=None, **options):
    use = [variant] if variant else []
    return compile_spec(ROOT / spec, set=sizes, use=use, precision="autocast_bf16",
                        convention="autograd", **options)


@pytest.mark.parametrize(("spec", "sizes", "variant"), CASES)
def test_saved_tensors_and_peak_equal_torch_autocast(spec, sizes, variant):
    result = _compile(spec, sizes, variant)
    tables = compare(result, measure_step(result))
    assert [(t.category, r) for t in tables for r in t.rows if r.difference] == []
    peak = compare_peak(result, measure_peak(result))
    assert peak.ok, peak


@pytest.mark.parametrize(("spec", "sizes", "variant"), CASES[::2])
def test_the_graphs_casts_are_the_ones_torch_autocast_makes(spec, sizes, variant):
    """The same step with the cast ops passed through, so that torch.autocast casts
    inside each op (and caches the weights' copies) itself: the same bytes saved, the
    same peak in every category, the same loss."""
    result = _compile(spec, sizes, variant)
    ours, torchs = measure_step(result), measure_step(result, explicit_casts=False)
    assert sum(ours.activation_bytes.values()) == sum(torchs.activation_bytes.values())
    assert ours.loss == torchs.loss
    assert measure_peak(result) == measure_peak(result, explicit_casts=False)


def test_the_dtypes_are_cpu_autocasts():
    """Linear and einsum run in bfloat16 on cast copies; rope's product with the
    float32 tables, the residual add and nll_loss run in float32; rms_norm, softmax
    and log_softmax keep their input's dtype (CPU autocast lists neither)."""
    graph = _compile("specs/cs336_lm_swiglu.mspec", SWIGLU, "math").graph
    out = {op.path: graph.value(op.outputs[0]).dtype.value for op in graph.ops}
    assert out["layers.attn.q_proj"] == "bfloat16"
    assert out["layers.attn.q"] == "float32"  # rope: bfloat16 x float32 tables
    assert out["layers.attn.attention.scores"] == "bfloat16"
    assert out["layers.attn.attention.probs"] == "bfloat16"
    assert out["layers.x"] == "float32"  # float32 residual + bfloat16 projection
    assert out["ln_final"] == "float32"
    assert out["cross_entropy.log_probs"] == "bfloat16"
    assert out["cross_entropy.log_probs.float32"] == "float32"
    casts = [op for op in graph.ops if op.op == CAST]
    cached = {graph.value(op.inputs[0]).path for op in casts if dict(op.attrs)["cached"]}
    # one copy per weight (the repeat region's instances are its repetitions')
    assert len(cached) == len([op for op in casts if dict(op.attrs)["cached"]]) == 8


def test_a_tied_weight_is_cast_once():
    graph = _compile("specs/gpt2.mspec", GPT2, "sdpa").graph
    wte = [op for op in graph.ops
           if op.op == CAST and graph.value(op.inputs[0]).path == "wte.weight"]
    assert len(wte) == 1


def test_autocasts_activations_exactly():
    """The PyTorch quickstart MLP under autocast, autograd convention: linear saves the
    bfloat16 copy of its input (the float32 images are not kept), relu its bfloat16
    output, fc2 and fc3 their weights' copies (fc1's input needs no gradient, so its
    copy is not saved); log_softmax its bfloat16 output, nll_loss a float32 copy of it."""
    result = compile_spec(ROOT / "specs/mlp.mspec", precision="autocast_bf16",
                          convention="autograd")
    b, side, f, c = sp.symbols("B I F C", positive=True, integer=True)
    got = result.categories["activations"].bytes
    names = {str(x): x for x in (b, side, f, c)}
    got = got.xreplace({s: names[str(s)] for s in got.free_symbols})
    expected = (2 * b * side**2 + 2 * b * f * 2 + 2 * f * f + 2 * c * f + 2 * b * c
                + 4 * b * c + 8 * b + 4)
    assert sp.expand(got - expected) == 0


def test_a_weight_copy_no_op_saves_is_held_until_the_forward_ends():
    """fc1's input (the images) needs no gradient, so linear does not save fc1's
    bfloat16 weight copy; autocast's cache holds it until the forward returns. At
    B = 512 the step peaks in the forward, with the copy: without modelling the cache
    memspec was 223,184 bytes low and peaked in backward instead."""
    result = compile_spec(ROOT / "specs/mlp.mspec", preset="quickstart", set={"B": 512},
                          precision="autocast_bf16", optimizer="sgd")
    peak = compare_peak(result, measure_peak(result))
    assert peak.ok and peak.phases == ("forward", "forward")
    assert peak.measured == 7_993_384


def test_cli_verifies_with_the_precision(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = ["verify", "specs/cs336_lm_swiglu.mspec", "--precision", "autocast_bf16",
            *[f"--set={k}={v}" for k, v in SWIGLU.items()]]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "precision autocast_bf16 (torch.autocast on the CPU in bfloat16" in out
    assert "verify: every category matches exactly" in out


def test_a_cast_rule_naming_no_op_is_a_located_error(tmp_path):
    spec = tmp_path / "bad.mspec"
    spec.write_text(
        (ROOT / "specs/mlp.mspec").read_text()
        + '\nprecision mine { param float32; grad float32; state float32; '
        'activation float32; cast bfloat16 of linaer }\n'
    )
    with pytest.raises(MemspecError, match=r"cast rule names no op 'linaer'.*linear"):
        compile_spec(spec, precision="mine")


def test_the_first_step_under_autocast():
    """The step options apply unchanged: the first step (state made inside it)."""
    result = _compile("specs/cs336_lm_swiglu.mspec", SWIGLU, "math",
                      step=StepOptions(first_step=True))
    assert compare_peak(result, measure_peak(result, result.peak.options)).ok
