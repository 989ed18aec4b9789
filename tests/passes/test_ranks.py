"""What each data-parallel rank holds (`--dp N --zero K`): the ZeRO paper's model states
reproduced symbolically, FSDP2's dim-0 shards rank by rank at uneven sizes, the per-rank
report and JSON, solving for the degree, and the errors."""

from __future__ import annotations

import json

import pytest
import sympy as sp

from memspec import compile_spec
from memspec.cli import main
from memspec.errors import MemspecError, UsageError
from memspec.parallel import DP
from memspec.passes.peak import StepOptions
from memspec.solve import solve_min_degree
from memspec.symbolic.symbols import dim_symbol
from tests.conftest import SPECS

SPEC = SPECS / "cs336_lm_swiglu.mspec"
SMALL = {"B": 2, "L": 16, "D": 32, "H": 4, "V": 65, "N": 3, "F": 66}

# ZeRO's mixed-precision Adam (Rajbhandari et al. 2019, §3.1): fp16 parameters and
# gradients (2 + 2 bytes), and K = 12 bytes of optimizer state: the fp32 master copy,
# momentum and variance
PAPER = """
precision zero_paper {
    param bfloat16; master float32; grad bfloat16; state float32; activation bfloat16
}
"""


def _divides(expr: sp.Expr) -> sp.Expr:
    """`expr` where DP divides what it partitions: ceil(n / DP) = n / DP."""
    return sp.expand(expr.replace(sp.ceiling, lambda arg: arg))


def _model_states(result) -> sp.Expr:
    held = result.ranks.largest.categories
    return sum((held[k].bytes for k in ("parameters", "gradients", "optimizer_state")), 0)


@pytest.mark.parametrize(
    ("zero", "runtime", "per_psi"),
    [
        (0, None, lambda nd: 2 + 2 + 12),
        (1, "deepspeed", lambda nd: 2 + 2 + sp.Rational(12) / nd),
        (2, "deepspeed", lambda nd: 2 + (2 + sp.Rational(12)) / nd),
        (3, "deepspeed", lambda nd: (2 + 2 + sp.Rational(12)) / nd),
    ],
)
def test_zero_papers_model_states_per_device(zero, runtime, per_psi):
    """(2 + 2 + K)Ψ, 4Ψ + KΨ/Nd, 2Ψ + (2 + K)Ψ/Nd, (4 + K)Ψ/Nd with K = 12, where Nd
    divides Ψ (DeepSpeed pads its flat partitions to a multiple of it)."""
    result = compile_spec(
        SPEC.read_text() + PAPER,
        precision="zero_paper",
        zero=zero,
        runtime=runtime,
        dp=None if zero else 8,
    )
    psi = result.categories["parameters"].elements
    nd = dim_symbol(DP) if zero else 1
    assert sp.expand(_divides(_model_states(result)) - per_psi(nd) * psi) == 0


def _fsdp2_rank(d0: int, world: int, rank: int) -> int:
    """torch.chunk's rows on a rank: chunks of ceil(d0 / world), the last ones short."""
    chunk = -(-d0 // world)
    return min(chunk, max(0, d0 - rank * chunk))


def test_fsdp2_shards_rank_by_rank_at_uneven_sizes():
    """V = 65 and F = 66 over 4 ranks: chunks of 17 and 17 rows; parameters and gradients
    padded to them on every rank, the optimizer state the rank's own rows (rank 3 has
    14 of V's and 15 of F's)."""
    world = 4
    result = compile_spec(SPEC, set=SMALL, zero=3, dp=world)
    d, v, f, n = SMALL["D"], SMALL["V"], SMALL["F"], SMALL["N"]
    # (rows, columns, copies) of each parameter: embeddings and lm_head [V, D]; per layer
    # 2 norms [D], q k v o [D, D], w1 w3 [F, D], w2 [D, F]; the final norm [D]
    params = [(v, d, 1), (v, d, 1), (d, 1, 2 * n + 1), (d, d, 4 * n), (f, d, 2 * n), (d, f, n)]
    padded = sum(-(-rows // world) * cols * k for rows, cols, k in params) * 4
    by_rank = []
    for rank in range(world):
        own = sum(_fsdp2_rank(rows, world, rank) * cols * k for rows, cols, k in params)
        by_rank.append(padded + padded + 2 * own * 4)
    classes = {c.ranks: result.value(c.bytes) - result.value(
        c.categories["activations"].bytes + c.categories["buffers"].bytes
    ) for c in result.ranks.classes}
    expected: dict[tuple[int, ...], int] = {}
    for rank, total in enumerate(by_rank):
        key = next(k for k in classes if rank in k)
        expected[key] = total
    assert classes == expected
    assert len(classes) == 2  # ranks 0-2 hold full chunks, rank 3 the short ones


def test_fsdp2_mixed_precision_keeps_float32_shards_and_no_master():
    result = compile_spec(SPEC, set=SMALL, zero=3, dp=4, precision="mixed_bf16")
    held = result.ranks.largest.categories
    assert {i.dtype.value for i in held["parameters"].items} == {"float32"}
    assert not [i for i in held["optimizer_state"].items if i.note == "master copy"]
    single = compile_spec(SPEC, set=SMALL, precision="mixed_bf16")
    masters = [i for i in single.categories["optimizer_state"].items if i.note == "master copy"]
    assert masters  # one device: bf16 weights beside a float32 master


def test_replicas_hold_everything_and_the_buckets():
    result = compile_spec(SPEC, set=SMALL, dp=8)
    (every,) = result.ranks.classes
    assert every.ranks == tuple(range(8))
    buckets = result.value(result.categories["gradients"].bytes)  # DDP's copy of them
    assert result.value(every.bytes) == result.value(result.total_bytes) + buckets


def test_per_rank_json_and_report():
    result = compile_spec(SPEC, set=SMALL, zero=3, dp=4)
    doc = json.loads(result.to_json())
    assert [c["ranks"] for c in doc["ranks"]] == [[0, 1, 2], [3]]
    first = doc["ranks"][0]
    assert first["peak"] == doc["values"]["peak"] == result.value(result.peak.winner().bytes)
    assert first["categories"]["total"]["bytes"] == result.value(result.ranks.classes[0].bytes)
    assert "fsdp2" in doc["config"]["parallel"].lower() or "FSDP2" in doc["config"]["parallel"]
    text = result.to_markdown()
    assert "## Per data-parallel rank" in text
    assert r"\left\lceil{\frac{V}{\mathrm{DP}}}\right\rceil" in text
    symbolic = json.loads(compile_spec(SPEC, zero=3).to_json())
    (unbound,) = symbolic["ranks"]
    assert unbound["ranks"] is None
    assert "ceiling(V/DP)" in unbound["categories"]["parameters"]["bytes"]


def test_the_true_peak_is_not_claimed_where_it_is_not_modelled():
    """FSDP2's per-rank peak with gradient accumulation is not modelled: the report says
    so rather than give one device's."""
    result = compile_spec(SPEC, set=SMALL, zero=3, dp=4, step=StepOptions(grad_accum=2))
    assert result.peak is None
    assert "gradient accumulation" in result.peak_unavailable
    assert "values" not in json.loads(result.to_json()) or "peak" not in json.loads(
        result.to_json()
    )["values"]


def test_solve_for_the_fewest_ranks():
    """The fewest ranks whose rank 0 fits, checked one below."""
    result = compile_spec(SPEC, preset="gpt2_xl", set={"B": 1}, zero=3, recompute="full")
    budget = 8 * 10**9
    solution = solve_min_degree(result, budget)
    degree = dim_symbol(DP)

    def at(n: int) -> int:
        return int(solution.expression.xreplace({degree: n}))

    assert at(solution.maximum) <= budget < at(solution.maximum - 1)


def test_train_block_sets_the_parallel_configuration(capsys):
    text = SPEC.read_text().replace(
        "train { precision fp32;", "train { dp 8; zero 3; precision fp32;"
    )
    result = compile_spec(text, set=SMALL)
    assert (result.config.parallel.dp, result.config.parallel.zero) == (8, 3)
    assert result.ranks.classes


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"zero": 5}, "ZeRO stage: 0, 1, 2 or 3"),
        ({"dp": 0}, "at least 1"),
        ({"zero": 1, "runtime": "fsdp2"}, "FSDP2 has no ZeRO-1"),
        ({"zero": 3, "runtime": "ddp"}, "runtime ddp runs ZeRO-0"),
        ({"zero": 3, "runtime": "megatron"}, "unknown data-parallel runtime"),
        ({"zero": 3, "optimizer": "adafactor"}, "not shaped like its parameter"),
    ],
)
def test_bad_configuration_is_a_clear_error(kwargs, message):
    with pytest.raises(UsageError, match=message):
        compile_spec(SPEC, set=SMALL, **kwargs)


def test_a_spec_that_declares_dp_is_refused():
    text = SPEC.read_text().replace("dim batch_size", "dim dp_size as DP\ndim batch_size")
    with pytest.raises(MemspecError, match="declares DP"):
        compile_spec(text, zero=3)


def test_cli_flags(capsys):
    args = [f"--set={k}={v}" for k, v in SMALL.items()]
    assert main(["compile", str(SPEC), "--zero", "3", "--dp", "4", "--format", "json", *args]) == 0
    assert json.loads(capsys.readouterr().out)["ranks"][1]["ranks"] == [3]
    assert main(["compile", str(SPEC), "--zero", "7", *args]) == 2


def _zero_redundancy_state(sizes: dict, world: int) -> list[int]:
    """ZeroRedundancyOptimizer's greedy partition, recomputed: parameter tensors in
    module order, sorted by numel (largest first, stable), each to the first rank with
    the fewest elements; AdamW's two float32 moments per element."""
    d, v, f, n = sizes["D"], sizes["V"], sizes["F"], sizes["N"]
    block = [d, d * d, d * d, d * d, d * d, d, f * d, d * f, f * d]  # ln1 q k v o ln2 w1 w2 w3
    tensors = [v * d, *(block * n), d, v * d]  # embeddings, layers, ln_final, lm_head
    held = [0] * world
    for numel in sorted(tensors, reverse=True):
        held[held.index(min(held))] += numel
    return [8 * h for h in held]


def test_zero_redundancy_gives_whole_parameters_greedily():
    world = 4
    result = compile_spec(SPEC, set=SMALL, zero=1, dp=world)
    expected = _zero_redundancy_state(SMALL, world)
    got = {}
    for c in result.ranks.classes:
        for rank in c.ranks:
            got[rank] = result.value(c.categories["optimizer_state"].bytes)
    assert [got[r] for r in range(world)] == expected
    assert result.value(result.ranks.largest.bytes) == max(
        result.value(c.bytes) for c in result.ranks.classes
    )
    with pytest.raises(UsageError, match="decided at bound sizes"):
        compile_spec(SPEC, zero=1)


def test_deepspeed_zero2_against_its_own_estimator():
    """DeepSpeed's `estimate_zero2_model_states_mem_needs` (no offload) gives
    4Ψ + 16Ψ/N per GPU. memspec's `deepspeed` ZeRO-2 (the paper's 2Ψ + 14Ψ/N) differs by
    two named terms: the estimator keeps every fp16 gradient whole (2Ψ, not 2Ψ/N: all
    live before the reduction), and the fp32 copy of the rank's gradient partition that
    the optimizer steps on (4Ψ/N)."""
    result = compile_spec(SPEC.read_text() + PAPER, precision="zero_paper", zero=2,
                          runtime="deepspeed")
    psi = result.categories["parameters"].elements
    n = dim_symbol(DP)
    estimator = 4 * psi + 16 * psi / n
    whole_gradients = 2 * psi - 2 * psi / n
    fp32_gradient_partition = 4 * psi / n
    memspec = _divides(_model_states(result))
    assert sp.expand(estimator - memspec - whole_gradients - fp32_gradient_partition) == 0


def test_megatron_distributed_optimizer_is_deepspeed_zero1_under_mixed_bf16():
    """Megatron-LM's theoretical_memory_usage.py: (6 + 12/d) bytes per parameter with
    its distributed optimizer (bf16 weights 2, float32 gradients 4, the float32 master
    and Adam's two moments 12 sharded over d), 18 without: memspec's mixed_bf16 under
    `--zero 1 --dp-runtime deepspeed`, and DDP replicas."""
    zero1 = compile_spec(SPEC, precision="mixed_bf16", zero=1, runtime="deepspeed")
    psi = zero1.categories["parameters"].elements
    d = dim_symbol(DP)
    assert sp.expand(_divides(_model_states(zero1)) - (6 + 12 / d) * psi) == 0
    replicas = compile_spec(SPEC, precision="mixed_bf16", dp=8)
    assert sp.expand(_model_states(replicas) - 18 * psi) == 0


def test_llama2_70b_at_64_ranks_as_the_readme_says():
    result = compile_spec(SPECS / "llama.mspec", preset="llama2_70b", set={"B": 1}, zero=3,
                          dp=64, precision="mixed_bf16", recompute="full")
    psi = result.value(result.categories["parameters"].elements)
    assert psi == 68_976_648_192
    (every,) = result.ranks.classes  # every side divides by 64: no padding, ranks alike
    states = sum(result.value(every.categories[k].bytes)
                 for k in ("parameters", "gradients", "optimizer_state"))
    assert states == 16 * psi // 64 == 17_244_162_048
    assert result.value(every.categories["activations"].bytes) == 5_962_235_904
