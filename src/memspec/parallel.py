"""Data parallelism as a runtime runs it: what each rank holds of the model's state.

`--dp N` (the degree, the symbol `DP` in formulas: unbound, the formulas hold for any
degree) and `--zero K` pick a runtime, named in every report:

- ZeRO-0: replicas under `DistributedDataParallel`: every rank holds everything.
- ZeRO-1 as `zero_redundancy` (the default for stage 1): DDP replicas whose optimizer is
  `torch.distributed.optim.ZeroRedundancyOptimizer`: each parameter's whole state lives
  on one rank, the parameters taken largest first (a stable sort by numel) and each
  given to the rank with the fewest elements so far (the first such rank). The
  assignment is decided at bound sizes, so ranks differ and there is no formula in DP.
- ZeRO-1/2/3 as `fsdp2` (PyTorch's `fully_shard`, the default for stages 2 and 3):
  every parameter is sharded on dim 0 in chunks of ceil(d0 / DP) rows (`torch.chunk`:
  rank r holds rows [r c, min((r + 1) c, d0)), possibly none) and each rank keeps its
  chunk padded to c rows, so parameters and gradients take c rows on every rank; the
  optimizer state follows the unpadded local rows, so the last ranks may hold less.
  Stage 2 is `reshard_after_forward=False` (SHARD_GRAD_OP: parameters stay gathered from
  forward to backward), stage 3 the default. Under a precision with a master copy
  (`mixed_bf16`) FSDP2's scheme applies: the float32 shard is the master, gathered in
  bfloat16 for compute, gradients reduced in float32; there is no separate master copy.
- ZeRO-1/2/3 as `deepspeed` (Rajbhandari et al. 2019, DeepSpeed's stages): each sharded
  category is one flat buffer partitioned evenly, ceil(elements / DP) per rank; stage 1
  shards the optimizer state (and master copies), stage 2 the gradients too, stage 3
  the parameters too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from memspec.errors import UsageError
from memspec.syntax.decls import DeclDim
from memspec.syntax.imports import Program

__all__ = ["DP", "RUNTIMES", "SINGLE", "Parallel", "read_parallel", "with_degree"]

DP = "DP"  # the data-parallel degree's symbol in formulas
RUNTIMES = {
    "ddp": "torch DistributedDataParallel: every rank a full replica",
    "zero_redundancy": (
        "torch ZeroRedundancyOptimizer under DDP: whole parameters' optimizer state per "
        "rank, assigned greedily by size"
    ),
    "fsdp2": "torch FSDP2 fully_shard, dim-0 shards padded to ceil(d0 / DP) rows",
    "deepspeed": "DeepSpeed ZeRO: flat buffers partitioned evenly, ceil(n / DP) per rank",
}


@dataclass(frozen=True, slots=True)
class Parallel:
    """The data-parallel configuration; `dp` None: the degree is the symbol DP."""

    zero: int = 0
    dp: int | None = 1
    runtime: str = "ddp"
    reshard_after_forward: bool = True

    @property
    def distributed(self) -> bool:
        return self.dp != 1 or self.zero > 0

    def shards(self, category: str) -> bool:
        """Whether each rank holds a shard of `category` (parameters, gradients,
        optimizer_state) rather than all of it."""
        if self.runtime == "fsdp2":
            return self.zero > 0 and category in ("parameters", "gradients", "optimizer_state")
        if self.runtime == "zero_redundancy":
            return category == "optimizer_state"
        stage = {"optimizer_state": 1, "gradients": 2, "parameters": 3}.get(category)
        return stage is not None and self.zero >= stage

    def label(self) -> str:
        """`ZeRO-3 (fsdp2)`, `DDP`: the configuration in a few words."""
        return f"ZeRO-{self.zero} ({self.runtime})" if self.zero else "DDP"

    def describe(self) -> str:
        degree = "DP" if self.dp is None else str(self.dp)
        if not self.zero:
            return f"DP = {degree} replicas ({RUNTIMES['ddp']})"
        text = f"ZeRO-{self.zero} over DP = {degree} ranks, as {RUNTIMES[self.runtime]}"
        if self.runtime == "fsdp2":
            text += (
                "; fully_shard on each repetition of the top-level repeat and on the root, "
                f"reshard_after_forward={self.reshard_after_forward}"
            )
        return text


SINGLE = Parallel()


def read_parallel(dp: int | None, zero: int | None, runtime: str | None) -> Parallel:
    """The configuration from its settings (None: not given). Without `dp`, ZeRO's
    degree is the symbol DP (`--set DP=N` binds it, as `--dp N` does)."""
    zero = 0 if zero is None else zero
    if zero not in (0, 1, 2, 3):
        raise UsageError(f"--zero is a ZeRO stage: 0, 1, 2 or 3, not {zero}")
    if dp is not None and dp < 1:
        raise UsageError(f"--dp is a number of ranks, at least 1, not {dp}")
    if runtime is None:
        runtime = ("ddp", "zero_redundancy", "fsdp2", "fsdp2")[zero]
    if runtime not in RUNTIMES:
        raise UsageError(
            f"unknown data-parallel runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}"
        )
    if (runtime == "ddp") != (zero == 0):
        raise UsageError(
            f"runtime {runtime} runs ZeRO-{'0' if runtime == 'ddp' else '1, 2 or 3'}, "
            f"not --zero {zero}"
        )
    if runtime == "zero_redundancy" and zero != 1:
        raise UsageError(
            f"ZeroRedundancyOptimizer shards the optimizer state only (ZeRO-1), not --zero {zero}"
        )
    if runtime == "fsdp2" and zero == 1:
        raise UsageError(
            "FSDP2 has no ZeRO-1 (it shards parameters and gradients too): "
            "--zero 1 runs as zero_redundancy (torch's ZeroRedundancyOptimizer) or deepspeed"
        )
    degree = (1 if zero == 0 else None) if dp is None else dp
    return Parallel(zero, degree, runtime, reshard_after_forward=zero != 2)


def with_degree(program: Program) -> Program:
    """The program with the data-parallel degree declared as a dim, `DP`, after its own."""
    names = program.top_level_names()
    if DP in names or "data_parallel_degree" in names:
        raise UsageError(
            f"the spec declares {DP}, which data parallelism names its degree", names.get(DP)
        )
    degree = DeclDim("data_parallel_degree", DP)
    return replace(program, dims={**program.dims, degree.name: degree})
