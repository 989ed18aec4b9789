"""What each rank holds when FSDP2 trains a spec's lowering: the truth `--zero 2|3` is
checked against.

Each rank runs in a process of its own (a process group is initialised once per
process), on torch's fake process group (`backend="fake"`, its collectives move no
data), the model built inside `FakeTensorMode` (or on real tensors, at small sizes): the
lowering with each repetition of the top-level repeat a module call (`units=True`),
`fully_shard` on each repetition and then on the root, the configuration's optimizer,
one untracked step so that its state exists (unless `first_step`) and one step under
`torch.distributed._tools.fsdp2_mem_tracker.FSDPMemTracker`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

from memspec.errors import UsageError
from memspec.result import CompileResult
from memspec.verify.processes import in_processes, run_child
from memspec.verify.tp import dtensor_step, parallelize

__all__ = ["TRACKER_CATEGORIES", "FsdpRun", "RankMeasurement", "measure_fsdp", "measure_rank"]

# FSDPMemTracker's categories (`_FSDPRefType`'s values), in the order a report lists them.
TRACKER_CATEGORIES = (
    "Sharded Param",
    "Unsharded Param",
    "Buffer",
    "Sharded Grad",
    "Unsharded Grad",
    "Activation",
    "Temp",
    "All Gather",
    "Reduce Scatter",
    "OptState",
    "Inputs",
)


@dataclass(frozen=True)
class FsdpRun:
    """How FSDP2 runs the step: `mixed_bf16` is `MixedPrecisionPolicy(param_dtype=
    bfloat16, reduce_dtype=float32)` (the float32 shard the master); `real` runs on
    allocated tensors instead of fake ones."""

    world_size: int
    reshard_after_forward: bool = True
    mixed_bf16: bool = False
    first_step: bool = False
    real: bool = False


@dataclass(frozen=True)
class RankMeasurement:
    """One rank's step. `peak`: the tracker's peak by category (`TRACKER_CATEGORIES`);
    `phase`: forward, backward or optimizer step at the first moment of the peak, and
    `modules`: the modules running then. After the step, keyed by the parameter's
    indexed name: `params` the bytes of each local shard's storage (padded to
    ceil(dim 0 / W) rows), `params_local` those of its unpadded local rows, `grads` those
    of each sharded gradient's local rows, `grad_storage` the bytes of the distinct
    storages the gradients are views of, `optimizer_state` each state tensor's local
    bytes (`name.key`)."""

    rank: int
    world_size: int
    total: int
    peak: tuple[tuple[str, int], ...]
    phase: str
    modules: tuple[str, ...]
    params: tuple[tuple[str, int], ...]
    params_local: tuple[tuple[str, int], ...]
    grads: tuple[tuple[str, int], ...]
    grad_storage: int
    optimizer_state: tuple[tuple[str, int], ...]

    def get(self, category: str) -> int:
        return dict(self.peak)[category]


def measure_fsdp(
    result: CompileResult,
    world_size: int,
    *,
    reshard_after_forward: bool = True,
    mixed_bf16: bool = False,
    ranks: Iterable[int] | None = None,
    first_step: bool = False,
    real: bool = False,
    jobs: int = 2,
) -> list[RankMeasurement]:
    """Each rank of `ranks` (all by default) measured in a process of its own, `jobs` at
    a time; in the order of `ranks`."""
    if world_size < 1:
        raise UsageError(f"the world size must be positive, not {world_size}")
    ranks = list(range(world_size) if ranks is None else ranks)
    for rank in ranks:
        if not 0 <= rank < world_size:
            raise UsageError(f"rank {rank} is not in 0..{world_size - 1}")
    run = FsdpRun(world_size, reshard_after_forward, mixed_bf16, first_step, real)
    done: list[RankMeasurement] = []
    for start in range(0, len(ranks), max(jobs, 1)):
        batch = ranks[start : start + max(jobs, 1)]
        payloads = [(result, run, rank) for rank in batch]
        done += in_processes("memspec.verify.fsdp", payloads, "FSDP2 rank")
    return done


def measure_rank(result: CompileResult, run: FsdpRun, rank: int) -> RankMeasurement:
    """One rank's step, in this process: it initialises the process group, once."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    parallel = result.config.parallel
    tp = parallel.tp if parallel.tensor_parallel else 1
    # under tensor parallelism the world is DP x TP, this process the rank of tensor-
    # parallel coordinate 0 in its data-parallel group (the ranks of a group hold alike)
    world = run.world_size * tp
    dist.init_process_group("fake", rank=rank * tp, world_size=world, store=FakeStore())
    try:
        if tp == 1:
            mesh = init_device_mesh("cpu", (run.world_size,))
            tp_mesh = None
        else:
            grid = init_device_mesh("cpu", (run.world_size, tp), mesh_dim_names=("dp", "tp"))
            mesh, tp_mesh = grid["dp"], grid["tp"]
        with contextlib.nullcontext() if tp_mesh is None else dtensor_step():
            if run.real:
                return _measure(result, run, rank, mesh, tp_mesh)
            from torch._subclasses.fake_tensor import FakeTensorMode

            with FakeTensorMode():
                return _measure(result, run, rank, mesh, tp_mesh)
    finally:
        dist.destroy_process_group()
        torch.manual_seed(0)


def _measure(result: CompileResult, run: FsdpRun, rank: int, mesh, tp_mesh=None) -> RankMeasurement:
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from memspec.verify.measure import _optimizer, lowered_model, training_step
    from memspec.verify.trackers import fsdp_tracker

    torch.manual_seed(0)
    model = lowered_model(result, units=True)
    if tp_mesh is not None:  # the tensor-parallel plan first, then fully_shard over DP
        parallelize(model, tp_mesh, result.config.parallel.sp)
    policy = MixedPrecisionPolicy()
    if run.mixed_bf16:
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        # MixedPrecisionPolicy casts parameters, not buffers: float32 tables (RoPE's)
        # would promote what they touch to float32 and meet bfloat16 in a matmul, which
        # torch refuses; the model computes in bfloat16 throughout, its buffers too
        for module in model.modules():
            for name, buffer in module.named_buffers(recurse=False):
                if buffer.is_floating_point():
                    setattr(module, name, buffer.to(torch.bfloat16))
    options = {"mesh": mesh, "reshard_after_forward": run.reshard_after_forward}
    for modules in model.units.values():
        for module in modules:
            fully_shard(module, mp_policy=policy, **options)
    # the root as torch's default leaves it (reshard_after_forward=None): gathered from
    # its forward to its post-backward when the units reshard; kept like them otherwise
    root = None if run.reshard_after_forward else False
    fully_shard(model, mp_policy=policy, mesh=mesh, reshard_after_forward=root)
    step_options = result.step
    optimizer = _optimizer(result.config.optimizer, model.parameters(), step_options.optimizer_impl)

    def step() -> None:
        training_step(model, optimizer)

    if not run.first_step:
        step()
    tracker = fsdp_tracker(model, optimizer)
    with tracker:
        step()
    (snapshot,) = tracker.get_tracker_snapshot("peak").values()
    by_name = {getattr(k, "value", str(k)): int(v) for k, v in snapshot.items()}
    peak = tuple((c, by_name.get(c, 0)) for c in TRACKER_CATEGORIES)
    return RankMeasurement(
        rank,
        run.world_size,
        by_name["Total"],
        peak,
        tracker.peak_phase,
        tracker.peak_modules,
        *_held(model, optimizer),
    )


def _held(model, optimizer) -> tuple:
    """(params, params_local, grads, grad_storage, optimizer_state) after the step."""
    from memspec.verify.measure import local

    params, unpadded, grads, state = [], [], [], []
    storages: dict[int, int] = {}
    for name, p in model.named_parameters():
        shard = local(p)
        params.append((name, shard.untyped_storage().nbytes()))
        unpadded.append((name, shard.numel() * shard.element_size()))
        if p.grad is not None:
            grad = local(p.grad)
            grads.append((name, grad.numel() * grad.element_size()))
            storage = grad.untyped_storage()
            storages[storage.data_ptr() if storage.data_ptr() else id(storage)] = storage.nbytes()
        for key, value in optimizer.state.get(p, {}).items():
            if hasattr(value, "untyped_storage"):
                value = local(value)
                state.append((f"{name}.{key}", value.numel() * value.element_size()))
    return tuple(params), tuple(unpadded), tuple(grads), sum(storages.values()), tuple(state)


if __name__ == "__main__":
    run_child("memspec.verify.fsdp", "measure_rank")
