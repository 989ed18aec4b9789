"""What one tensor-parallel rank holds when torch's `parallelize_module` runs a spec's
lowering with its `tp_plan`s: the truth `--tp N` is checked against.

Each rank runs in a process of its own on torch's fake process group (a world of TP
ranks, one mesh dim): the lowering with each planned member a torch.nn.Linear or
Embedding at its whole size, `parallelize_module` with the stock styles
(`ColwiseParallel`, `RowwiseParallel`; a vocab-parallel embedding is
`RowwiseParallel(input_layouts=Replicate())`; the loss-parallel LM head is
`ColwiseParallel(output_layouts=Shard(-1))`, its logits taken as a DTensor into
`loss_parallel()`). The saved tensors of one step are measured on real tensors (small
sizes), the true peak with `MemTracker` on fake ones, after DTensor's sharding
propagation is kept from borrowing the tracker's fake mode (TRUTH.md: it would count
the whole-size tensors it makes to work out shapes).
"""

from __future__ import annotations

from memspec.errors import UsageError
from memspec.result import CompileResult
from memspec.verify.processes import in_processes, run_child

__all__ = ["dtensor_step", "measure_rank", "parallelize", "plan_of", "verify_tp"]


def plan_of(model, sp: bool = False) -> dict:
    """torch's parallelize_module plan for the lowering's planned members; under
    sequence parallelism (`sp`) the row-parallel ones reduce-scatter on the sequence
    (dim 1 of [b, s, h]) unless the plan keeps their output whole (`replicated`); the
    column-parallel ones take the gathered DTensor the interpreter makes, as
    torchtitan's PrepareModuleInput does."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    def style_of(style: str, whole: bool):
        out = {"output_layouts": Shard(1)} if sp and not whole else {}
        if style == "rowwise":
            return RowwiseParallel(**out)
        if style == "vocab_parallel":
            return RowwiseParallel(input_layouts=Replicate(), **out)
        if style == "loss_parallel":
            # the logits stay a local slice here; the interpreter hands them to the loss
            # as the DTensor use_local_output=False would make (a view: the same storage)
            return ColwiseParallel(output_layouts=Shard(-1))
        return ColwiseParallel()

    return {path: style_of(style, whole) for path, (_, style, whole) in model.tp_members.items()}


def dtensor_step():
    """What a tensor-parallel step runs under here: torch's loss_parallel() (the loss of
    vocab-sharded logits), with DTensor's sharding propagation kept from the tracker's
    fake mode (it works out output shapes on fake tensors of whatever mode it finds,
    which the tracker would count as memory; with none it makes a mode of its own)."""
    from torch.distributed.tensor import _sharding_prop
    from torch.distributed.tensor.parallel import loss_parallel

    _sharding_prop.detect_fake_mode = lambda *args, **kwargs: None
    return loss_parallel()


def parallelize(model, mesh, sp: bool = False) -> None:
    """Apply the plan, and run a loss_parallel member's loss (and under sequence
    parallelism the gathers) on `mesh`."""
    from torch.distributed.tensor.parallel import parallelize_module

    parallelize_module(model, mesh, plan_of(model, sp))
    model.mesh = mesh


def measure_rank(result: CompileResult, rank: int, step: bool = True, peak: bool = True):
    """One rank's (Measurement or None, PeakMeasurement or None), in this process: it
    initialises the process group, once."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from memspec.verify.measure import measure_step
    from memspec.verify.peak import measure_peak

    world = result.config.parallel.tp
    dist.init_process_group("fake", rank=rank, world_size=world, store=FakeStore())
    try:
        mesh = init_device_mesh("cpu", (world,))
        sp = result.config.parallel.sp

        def prepare(model) -> None:
            parallelize(model, mesh, sp)

        with dtensor_step():
            measured = top = None
            if step:
                measured = measure_step(result, prepare=prepare)
            if peak and result.peak is not None:
                top = measure_peak(result, result.peak.options, prepare=prepare)
        return measured, top
    finally:
        dist.destroy_process_group()
        torch.manual_seed(0)


def verify_tp(result: CompileResult, step: bool, peak: bool) -> tuple[str, bool]:
    """`memspec verify --tp N`: every rank measured as torch runs it, compared with the
    prediction (one rank's: the ranks of a group hold alike)."""
    from memspec.verify.compare import compare
    from memspec.verify.peak import compare_peak
    from memspec.verify.report import render_verify

    precision = result.config.precision
    if precision.autocast is not None:
        raise UsageError(
            f"verify --tp does not run autocast precisions yet ({precision.name}): the "
            "graph's explicit casts of a parameter would meet the DTensor the planned "
            "member casts itself; verify a parameter precision (fp32, bf16, mixed_bf16)"
        )
    if peak and result.peak is None:
        raise UsageError(f"no peak to verify: {result.peak_unavailable}")
    measured = _in_ranks(result, step, peak)
    texts, ok = [], True
    degree = result.config.parallel.tp
    for rank, (step_measured, peak_measured) in enumerate(measured):
        tables = compare(result, step_measured) if step else None
        top = compare_peak(result, peak_measured) if peak else None
        ok = ok and (tables is None or all(t.ok for t in tables)) and (top is None or top.ok)
        text = render_verify(result, tables, step_measured if step else None, top)
        texts.append(f"## Tensor-parallel rank {rank} of {degree}\n\n{text}")
    return "\n".join(texts), ok


def _in_ranks(result: CompileResult, step: bool, peak: bool) -> list:
    degree = result.config.parallel.tp
    if degree is None:
        raise UsageError("verify --tp needs the degree bound: --tp N")
    done = []
    for start in range(0, degree, 2):
        payloads = [(result, r, step, peak) for r in range(start, min(start + 2, degree))]
        done += in_processes("memspec.verify.tp", payloads, "tensor-parallel rank")
    return done


if __name__ == "__main__":
    run_child("memspec.verify.tp", "measure_rank")
