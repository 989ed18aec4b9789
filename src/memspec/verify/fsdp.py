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
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from memspec.errors import UsageError
from memspec.result import CompileResult

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
        done += _in_processes(result, run, ranks[start : start + max(jobs, 1)])
    return done


def _in_processes(result: CompileResult, run: FsdpRun, ranks: list[int]) -> list:
    """`measure_rank` for each of `ranks` in a child process of this module, at once."""
    source = str(Path(__file__).resolve().parents[2])  # this copy of memspec, not another
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([source, os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory() as where:
        children = []
        for rank in ranks:
            out = Path(where) / f"rank{rank}.pickle"
            child = subprocess.Popen(
                [sys.executable, "-m", "memspec.verify.fsdp", str(out)],
                stdin=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            child.stdin.write(pickle.dumps((result, run, rank)))
            child.stdin.close()
            children.append((child, out))
        measured = []
        for child, out in children:
            error = child.stderr.read().decode()
            if child.wait() != 0:
                raise RuntimeError(f"the FSDP2 rank process failed:\n{error}")
            measured.append(pickle.loads(out.read_bytes()))
    return measured


def measure_rank(result: CompileResult, run: FsdpRun, rank: int) -> RankMeasurement:
    """One rank's step, in this process: it initialises the process group, once."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", rank=rank, world_size=run.world_size, store=FakeStore())
    try:
        mesh = init_device_mesh("cpu", (run.world_size,))
        if run.real:
            return _measure(result, run, rank, mesh)
        from torch._subclasses.fake_tensor import FakeTensorMode

        with FakeTensorMode():
            return _measure(result, run, rank, mesh)
    finally:
        dist.destroy_process_group()
        torch.manual_seed(0)


def _measure(result: CompileResult, run: FsdpRun, rank: int, mesh) -> RankMeasurement:
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from memspec.verify.measure import _optimizer, lowered_model, training_step
    from memspec.verify.trackers import fsdp_tracker

    torch.manual_seed(0)
    model = lowered_model(result, units=True)
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


def _local(tensor):
    """A DTensor's local tensor; any other tensor itself."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _held(model, optimizer) -> tuple:
    """(params, params_local, grads, grad_storage, optimizer_state) after the step."""
    params, local, grads, state = [], [], [], []
    storages: dict[int, int] = {}
    for name, p in model.named_parameters():
        shard = _local(p)
        params.append((name, shard.untyped_storage().nbytes()))
        local.append((name, shard.numel() * shard.element_size()))
        if p.grad is not None:
            grad = _local(p.grad)
            grads.append((name, grad.numel() * grad.element_size()))
            storage = grad.untyped_storage()
            storages[storage.data_ptr() if storage.data_ptr() else id(storage)] = storage.nbytes()
        for key, value in optimizer.state.get(p, {}).items():
            if hasattr(value, "untyped_storage"):
                value = _local(value)
                state.append((f"{name}.{key}", value.numel() * value.element_size()))
    return tuple(params), tuple(local), tuple(grads), sum(storages.values()), tuple(state)


def _child() -> None:
    """`python -m memspec.verify.fsdp OUT`: a pickled (result, run, rank) on stdin, its
    RankMeasurement pickled to OUT."""
    # run as __main__: the measurement must be pickled as the importable module's class
    from memspec.verify import fsdp

    result, run, rank = pickle.loads(sys.stdin.buffer.read())
    with contextlib.redirect_stdout(sys.stderr):
        measured = fsdp.measure_rank(result, run, rank)
    Path(sys.argv[1]).write_bytes(pickle.dumps(measured))


if __name__ == "__main__":
    _child()
