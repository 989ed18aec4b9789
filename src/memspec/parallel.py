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

`--tp N` (the symbol `TP`) runs the spec's `tp_plan`s as torch's `parallelize_module`
does (`tensor_parallel.py`): the graph is elaborated as one rank runs it, every tensor at
its local size. `--sp` adds sequence parallelism (Korthikanti et al. 2022): between the
planned members the activations are sharded on the sequence, gathered for the
column-parallel members and reduce-scattered by the row-parallel ones. What a gathered
input's matrix products keep for backward is the one choice where the runtimes differ
(`SP_CONVENTIONS`): PyTorch's DTensor keeps the gathered tensor, Megatron-LM its local
shard (and gathers it again in backward).
"""

from __future__ import annotations

from dataclasses import dataclass

from memspec.errors import UsageError
from memspec.syntax.imports import Program, with_dim

__all__ = [
    "DP",
    "RUNTIMES",
    "SINGLE",
    "SP_CONVENTIONS",
    "TP",
    "Parallel",
    "read_parallel",
    "with_degree",
]

DP = "DP"  # the data-parallel degree's symbol in formulas
TP = "TP"  # the tensor-parallel degree's
RUNTIMES = {
    "ddp": "torch DistributedDataParallel: every rank a full replica",
    "zero_redundancy": (
        "torch ZeroRedundancyOptimizer under DDP: whole parameters' optimizer state per "
        "rank, assigned greedily by size"
    ),
    "fsdp2": "torch FSDP2 fully_shard, dim-0 shards padded to ceil(d0 / DP) rows",
    "deepspeed": "DeepSpeed ZeRO: flat buffers partitioned evenly, ceil(n / DP) per rank",
}
SP_CONVENTIONS = {
    "pytorch": (
        "PyTorch's DTensor: a column-parallel member's matrix product keeps the all-gathered "
        "input [b, s, h] for backward"
    ),
    "megatron": (
        "Megatron-LM: a column-parallel member keeps its local shard of the input "
        "[b, s/TP, h] and all-gathers it again in backward"
    ),
}


@dataclass(frozen=True, slots=True)
class Parallel:
    """The parallel configuration; `dp` None: the degree is the symbol DP (`tp` None: TP)."""

    zero: int = 0
    dp: int | None = 1
    runtime: str = "ddp"
    reshard_after_forward: bool = True
    tp: int | None = 1
    sp: bool = False  # sequence parallelism between the planned members
    sp_convention: str = "pytorch"

    @property
    def distributed(self) -> bool:
        """Whether data parallelism is in force."""
        return self.dp != 1 or self.zero > 0

    @property
    def tensor_parallel(self) -> bool:
        return self.tp != 1

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
        """`ZeRO-3 (fsdp2)`, `DDP`, `TP`: the configuration in a few words."""
        words = [f"ZeRO-{self.zero} ({self.runtime})" if self.zero else "DDP"]
        if self.tensor_parallel:
            words = [*words[: self.distributed], "TP"]
        return " x ".join(words)

    def describe_tp(self) -> str:
        degree = "TP ranks" if self.tp is None else f"TP = {self.tp} ranks"
        text = (
            f"{degree} per tensor-parallel group, as torch's parallelize_module "
            "runs the spec's tp_plans (DTensor, use_local_output=True between the planned "
            "linears); every size is one rank's"
        )
        if self.sp:
            text += (
                "; sequence parallel: activations between the planned members sharded on "
                "the sequence (dim -2), all-gathered into column-parallel members and "
                "reduce-scattered out of row-parallel ones; saved as "
                + SP_CONVENTIONS[self.sp_convention]
            )
        return text

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


def read_parallel(
    dp: int | None,
    zero: int | None,
    runtime: str | None,
    tp: int | str | None = None,
    sp: bool | None = None,
    sp_convention: str | None = None,
) -> Parallel:
    """The configuration from its settings (None: not given). Without `dp`, ZeRO's
    degree is the symbol DP (`--set DP=N` binds it, as `--dp N` does); `tp` is a number
    of ranks or the symbol `TP` (formulas in the degree)."""
    if isinstance(tp, str) and tp != TP and not (tp.isascii() and tp.isdigit()):
        raise UsageError(f"--tp is a number of ranks or the symbol {TP}, not {tp!r}")
    # the degree: 1 when not given, None for the symbol TP
    tp = 1 if tp is None else None if tp == TP else int(tp)
    if tp is not None and tp < 1:
        raise UsageError(f"--tp is a number of ranks, at least 1, not {tp}")
    if sp and tp == 1:
        raise UsageError("--sp shards the sequence across the tensor-parallel ranks: give --tp")
    if sp_convention is not None and sp_convention not in SP_CONVENTIONS:
        raise UsageError(
            f"unknown sequence-parallel convention {sp_convention!r}; expected one of "
            f"{', '.join(SP_CONVENTIONS)}"
        )
    if sp_convention is not None and not sp:
        raise UsageError("--sp-convention says what sequence parallelism saves: give --sp")
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
    return Parallel(
        zero,
        degree,
        runtime,
        reshard_after_forward=zero != 2,
        tp=tp,
        sp=bool(sp),
        sp_convention=sp_convention or "pytorch",
    )


def with_degree(program: Program, symbol: str = DP) -> Program:
    """The program with a parallel degree declared as a dim (`DP`, `TP`), after its own."""
    long = {DP: "data_parallel_degree", TP: "tensor_parallel_degree"}[symbol]
    what = {DP: "data", TP: "tensor"}[symbol]
    return with_dim(program, long, symbol, f"{what} parallelism names its degree")
