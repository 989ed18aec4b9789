"""What each data-parallel rank holds, predicted against measured: the table
`memspec verify --dp N --zero K` prints, rank by rank and category by category."""

from __future__ import annotations

from dataclasses import dataclass

from memspec.result import CompileResult

__all__ = ["RankRow", "compare_ddp_ranks", "compare_ranks", "render_ranks"]

# the categories a rank's runtime shards, as the measurement names them
_MEASURED = ("parameters", "gradients", "optimizer_state")


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
    (held,) = [c for c in result.ranks.classes if rank in c.ranks]
    return {k: result.value(held.categories[k].bytes) for k in _MEASURED}


def compare_ddp_ranks(result: CompileResult, measurements) -> list[RankRow]:
    """Each measured DDP rank's gradients, optimizer state (ZeroRedundancyOptimizer's
    own parameters' under ZeRO-1; step counters left out) and the reducer's buckets
    against memspec's."""
    scalars = set(result.config.optimizer.scalars)
    rows = []
    for m in measurements:
        (held,) = [c for c in result.ranks.classes if m.rank in c.ranks]
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
            RankRow(m.rank, "gradient buckets", buckets, m.bucket_bytes),
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
