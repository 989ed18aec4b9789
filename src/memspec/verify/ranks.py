"""What each data-parallel rank holds, predicted against measured: the table
`memspec verify --dp N --zero K` prints, rank by rank and category by category."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from memspec.errors import UsageError
from memspec.parallel import DP
from memspec.result import CompileResult
from memspec.symbolic.symbols import dim_symbol

__all__ = ["RankRow", "compare_ddp_ranks", "compare_ranks", "render_ranks", "verify_ranks"]

# the categories a rank's runtime shards, as the measurement names them
_MEASURED = ("parameters", "gradients", "optimizer_state")
_BUCKETS = "gradient buckets"  # DDP's, beside them


@dataclass(frozen=True)
class RankRow:
    rank: int
    category: str
    predicted: int
    measured: int

    @property
    def ok(self) -> bool:
        return self.predicted == self.measured


def _predicted(result: CompileResult, rank: int) -> dict[str, int]:
    held = result.ranks.classes[result.ranks.index_of(rank)]
    return {k: result.value(held.categories[k].bytes) for k in _MEASURED}


def compare_ddp_ranks(result: CompileResult, measurements) -> list[RankRow]:
    """Each measured DDP rank's gradients, optimizer state (ZeroRedundancyOptimizer's
    own parameters' under ZeRO-1; step counters left out) and the reducer's buckets
    against memspec's."""
    scalars = set(result.config.optimizer.scalars)
    rows = []
    for m in measurements:
        held = result.ranks.classes[result.ranks.index_of(m.rank)]
        buckets = sum(
            result.value(i.bytes)
            for i in held.categories["buffers"].items
            if i.path.startswith("ddp.gradient_buckets")
        )
        state = sum(b for name, b in m.optimizer_state if name.rsplit(".", 1)[1] not in scalars)
        rows += [
            RankRow(
                m.rank,
                "gradients",
                result.value(held.categories["gradients"].bytes),
                sum(b for _, b in m.gradients),
            ),
            RankRow(
                m.rank,
                "optimizer_state",
                result.value(held.categories["optimizer_state"].bytes),
                state,
            ),
            RankRow(m.rank, _BUCKETS, buckets, m.bucket_bytes),
        ]
    return rows


def compare_ranks(result: CompileResult, measurements) -> list[RankRow]:
    """Each measured rank's parameters, gradients and optimizer state (its step
    counters, which memspec does not count, left out) against memspec's."""
    scalars = set(result.config.optimizer.scalars)
    rows = []
    for m in measurements:
        measured = {
            "parameters": sum(b for _, b in m.params),
            "gradients": m.grad_storage,
            "optimizer_state": sum(
                b for name, b in m.optimizer_state if name.rsplit(".", 1)[1] not in scalars
            ),
        }
        predicted = _predicted(result, m.rank)
        rows += [RankRow(m.rank, k, predicted[k], measured[k]) for k in _MEASURED]
    return rows


def render_ranks(result: CompileResult, rows: list[RankRow], runtime: str) -> str:
    lines = [
        f"Per rank, {result.ranks.parallel.describe()}; measured by {runtime} on torch's fake "
        "process group, one process per rank (bytes after the step):",
        f"  {'rank':>4}  {'category':<16} {'measured':>14} {'memspec':>14} {'difference':>11}",
    ]
    for row in rows:
        mark = "" if row.ok else "  MISMATCH"
        lines.append(
            f"  {row.rank:>4}  {row.category:<16} {row.measured:>14,} {row.predicted:>14,} "
            f"{row.measured - row.predicted:>11,}{mark}"
        )
    return "\n".join(lines) + "\n"


def verify_ranks(
    result: CompileResult, peak: bool, lowered_in_fp32: Callable[[], CompileResult]
) -> tuple[str, bool]:
    """`memspec verify` under data parallelism: every rank's step on torch's fake
    process group, what each holds (and with `peak`, each rank's peak where memspec
    models it) against memspec's. `lowered_in_fp32` compiles the spec in float32, the
    parameters FSDP2's mixed precision trains."""
    parallel = result.ranks.parallel
    if peak and result.peak is None:
        raise UsageError(f"no peak to verify: {result.peak_unavailable}")
    world = result.value(dim_symbol(DP))
    if parallel.runtime in ("ddp", "zero_redundancy"):
        return _ddp(result, peak, world)
    if parallel.runtime != "fsdp2":
        raise UsageError(
            f"verify runs {parallel.label()} not yet: DDP, ZeroRedundancyOptimizer and "
            "FSDP2 are measured per rank"
        )
    from memspec.verify.fsdp import measure_fsdp

    mixed = result.config.precision.master is not None
    measured = measure_fsdp(
        lowered_in_fp32() if mixed else result,
        world,
        reshard_after_forward=parallel.reshard_after_forward,
        mixed_bf16=mixed,
        first_step=result.step.first_step,
        # a 2-D mesh looks its coordinates up with nonzero, which fake tensors cannot
        # run: with tensor parallelism the step runs on real tensors (small sizes)
        real=result.config.parallel.tensor_parallel,
    )
    rows = compare_ranks(result, measured)
    text = render_ranks(result, rows, "FSDP2 fully_shard under FSDPMemTracker")
    ok = all(r.ok for r in rows)
    if peak:
        text, peaks_ok = _fsdp_peaks(result, measured, text)
        ok = ok and peaks_ok
    return _verdict(text, ok)


def _fsdp_peaks(result: CompileResult, measured, text: str) -> tuple[str, bool]:
    """Each rank's peak (FSDPMemTracker's total) against memspec's for its rank class,
    with AdamW's step counters named: CPU tensors on a GPU, which the tracker here counts
    (from the first step() on)."""
    from memspec.verify.peak import step_counters

    ok = True
    winner = result.peak.winner()
    counted = not result.step.first_step or winner.phase.value == "optimizer step"
    for m in measured:
        k = result.ranks.index_of(m.rank)
        predicted = result.rank_peaks[k]
        if predicted is None:
            text += f"  rank {m.rank} peak: measured {m.total:,}; memspec: not modelled\n"
            continue
        _, counters = step_counters(result, None, result.ranks.classes[k].categories)
        expected = predicted + (counters if counted else 0)
        equal = expected == m.total
        ok = ok and equal
        text += (
            f"  rank {m.rank} peak: measured {m.total:,} ({m.phase}), memspec "
            f"{predicted:,} + {counters if counted else 0:,} step counters = {expected:,} "
            f"({'equal' if equal else 'MISMATCH'})\n"
        )
    return text, ok


def _ddp(result: CompileResult, peak: bool, world: int) -> tuple[str, bool]:
    """Every rank under DistributedDataParallel (and ZeroRedundancyOptimizer); with
    `peak`, each rank's peak against memspec's for that rank."""
    from memspec.verify.ddp import measure_ddp
    from memspec.verify.peak import Term, compare_peak

    measured = measure_ddp(result, world, zero=result.ranks.parallel.zero, options=result.step)
    rows = compare_ddp_ranks(result, measured)
    ok = all(r.ok for r in rows)
    text = render_ranks(result, rows, "DistributedDataParallel under MemTracker")
    if not peak:
        return _verdict(text, ok)
    for m in measured:
        held = result.ranks.classes[result.ranks.index_of(m.rank)]
        (buckets,) = [r.predicted for r in rows if (r.rank, r.category) == (m.rank, _BUCKETS)]
        moved = Term(
            "DDP's gradient buckets",
            "OTH",
            buckets,
            "memspec counts them with the buffers; the tracker, given them after the "
            "model, as tensors of its own",
            moved_from="BUFFER",
        )
        comparison = compare_peak(result, m.peak, extra=(moved,), categories=held.stepping)
        ok = ok and comparison.ok
        text += (
            f"  rank {m.rank} peak: measured {comparison.measured:,}, memspec "
            f"{comparison.expected:,} ({'equal' if comparison.ok else 'MISMATCH'}; "
            f"phases {comparison.phases[0]} / {comparison.phases[1]})\n"
        )
    return _verdict(text, ok)


def _verdict(text: str, ok: bool) -> tuple[str, bool]:
    verdict = "every rank matches exactly" if ok else "MISMATCH between prediction and measurement"
    return text + f"\nverify: {verdict}\n", ok
