"""What each rank of a data-parallel run holds, measured: the lowering under
`DistributedDataParallel` (`zero=0`), optionally with its optimizer sharded by
`ZeroRedundancyOptimizer` (`zero=1`), on torch's fake process group.

Each rank runs in a process of its own (a process group is initialised once per
process). DDP cannot be built under fake tensors (its shape check reads data), so the model is
real, at the small sizes the result binds. The fake group's allreduce returns an empty
future, so torch's own `noop_hook` (the bucket, reduced by nobody) is registered as the
communication hook. The reducer builds one bucket of every parameter at construction
and rebuilds its buckets in gradient-ready order in the second step's forward, so the
steady state is the third step, tracked by MemTracker with the reducer's buckets
passed to it after everything else (category OTH).
"""

from __future__ import annotations

import inspect
import os
import pickle
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import memspec
from memspec.errors import UsageError
from memspec.passes.peak import StepOptions
from memspec.result import CompileResult
from memspec.verify.measure import (
    _FLAGS,
    _optimizer,
    _torch_class,
    lowered_model,
    training_step,
)
from memspec.verify.peak import CATEGORIES, PeakMeasurement
from memspec.verify.trackers import phase_tracker

__all__ = ["Bucket", "DDPRun", "RankMeasurement", "measure_ddp", "measure_ddp_runs"]


@dataclass(frozen=True)
class Bucket:
    """One of the reducer's gradient buckets: a flat tensor of `bytes`, holding the
    gradients of `parameters` in this order (the order of their offsets)."""

    index: int
    bytes: int
    dtype: str
    parameters: tuple[str, ...]


@dataclass(frozen=True)
class RankMeasurement:
    """One rank's tracked step: the peak by MemTracker category (the buckets are OTH),
    the reducer's buckets in that step, and what the step leaves allocated: each
    gradient's bytes (views into the buckets where `gradients_in_buckets`), and the
    optimizer's state tensors of this rank's parameters, `name.key` to bytes."""

    rank: int
    world_size: int
    zero: int
    peak: PeakMeasurement
    buckets: tuple[Bucket, ...]
    gradients: tuple[tuple[str, int], ...]
    gradients_in_buckets: bool
    optimizer_state: tuple[tuple[str, int], ...]
    optimizer_scalars: tuple[tuple[str, int], ...]
    owned: tuple[str, ...]  # the parameters this rank's optimizer steps

    @property
    def bucket_bytes(self) -> int:
        return sum(b.bytes for b in self.buckets)


@dataclass(frozen=True)
class DDPRun:
    """A data-parallel configuration to measure, and which of its ranks (all: None).
    `bucket_cap_mb=None` is DDP's default: 25 MiB buckets after a first one of 1 MiB
    (`dist._DEFAULT_FIRST_BUCKET_BYTES`); a cap given explicitly, even 25, caps the
    first bucket too. `options.first_step` tracks the first step (one bucket of every
    parameter, no optimizer state); otherwise the third (buckets rebuilt, state made)."""

    world_size: int
    zero: int = 0
    gradient_as_bucket_view: bool = False
    bucket_cap_mb: float | None = None
    options: StepOptions = field(default_factory=StepOptions)
    ranks: tuple[int, ...] | None = None

    def requested(self) -> tuple[int, ...]:
        return tuple(range(self.world_size)) if self.ranks is None else self.ranks

    def check(self, result: CompileResult) -> None:
        if self.zero not in (0, 1):
            raise UsageError(f"measure_ddp measures --zero 0 and 1, not {self.zero}")
        if self.world_size < 1:
            raise UsageError(f"the world size must be positive, not {self.world_size}")
        if self.options.grad_accum != 1:
            raise UsageError("measure_ddp runs one micro-batch per step (no no_sync() loop)")
        if result.config.precision.scaler is not None:
            raise UsageError("measure_ddp runs no loss scaler; measure a precision without one")
        optimizer = result.config.optimizer
        if self.zero == 1 and len(optimizer.chain()) != 1:
            raise UsageError(
                f"optimizer {optimizer.name} is a chain of optimizers; "
                "ZeroRedundancyOptimizer wraps one optimizer class"
            )
        for rank in self.requested():
            if not 0 <= rank < self.world_size:
                raise UsageError(f"rank {rank} is not in a world of {self.world_size}")


def measure_ddp(
    result: CompileResult,
    world_size: int,
    *,
    zero: int = 0,
    gradient_as_bucket_view: bool = False,
    bucket_cap_mb: float | None = None,
    ranks: Iterable[int] | None = None,
    options: StepOptions | None = None,
) -> list[RankMeasurement]:
    """Each requested rank's step (all ranks by default) under DDP (`zero=0`) or DDP and
    ZeroRedundancyOptimizer (`zero=1`); the knobs as `DDPRun` describes them."""
    run = DDPRun(
        world_size,
        zero,
        gradient_as_bucket_view,
        bucket_cap_mb,
        options or StepOptions(),
        None if ranks is None else tuple(ranks),
    )
    return measure_ddp_runs([(result, run)])[0]


def measure_ddp_runs(runs: list[tuple[CompileResult, DDPRun]]) -> list[list[RankMeasurement]]:
    """Several runs' ranks, each in a process of its own, all forked from one process
    (`python -m memspec.verify.ddp`, this copy of memspec) that imports torch once:
    forking the caller instead hangs where it has run torch's OpenMP threads, and
    spawning a process per rank imports torch every time."""
    jobs = []
    for result, run in runs:
        run.check(result)
        jobs += [(result, rank, run) for rank in run.requested()]
    package_root = str(Path(memspec.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="memspec-ddp-") as folder:
        Path(folder, "request.pickle").write_bytes(pickle.dumps(jobs))
        server = subprocess.run(
            [sys.executable, "-m", "memspec.verify.ddp", folder],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        answers = [_answer_of(Path(folder), i, job, server.stderr) for i, job in enumerate(jobs)]
    measured, start = [], 0
    for _, run in runs:
        count = len(run.requested())
        measured.append(answers[start : start + count])
        start += count
    return measured


def _answer_of(folder: Path, index: int, job, stderr: str) -> RankMeasurement:
    _, rank, run = job
    answer = folder / f"job{index}.pickle"
    if not answer.exists():
        raise RuntimeError(f"rank {rank} of {run.world_size} gave no answer:\n{stderr}")
    kind, payload = pickle.loads(answer.read_bytes())
    if kind == "usage":
        raise UsageError(payload)
    if kind == "error":
        raise RuntimeError(f"rank {rank} of {run.world_size}: {payload}")
    return payload


def _serve(folder: Path) -> None:
    """Each job in a child forked from this process, which has imported torch and run
    nothing on it (so no OpenMP threads to lose); the answers as pickles in `folder`."""
    # DDP's constructor imports torch._dynamo (seconds): once here, not once per rank
    import torch._dynamo
    import torch.distributed.optim
    import torch.nn.parallel  # noqa: F401

    jobs = pickle.loads(Path(folder, "request.pickle").read_bytes())
    children = []
    for index, (result, rank, run) in enumerate(jobs):
        pid = os.fork()
        if pid == 0:
            try:
                answer = ("ok", _measure_rank(result, rank, run))
            except UsageError as e:
                answer = ("usage", str(e))
            except Exception:
                answer = ("error", traceback.format_exc())
            Path(folder, f"job{index}.pickle").write_bytes(pickle.dumps(answer))
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)


def _zero_optimizer(result: CompileResult, params: list, implementation: str):
    """ZeroRedundancyOptimizer over the class the configuration's optimizer names."""
    from torch.distributed.optim import ZeroRedundancyOptimizer

    policy = result.config.optimizer
    path, args = policy.torch_for(implementation)
    if path is None:
        raise UsageError(f"optimizer {policy.name} names no torch class to shard")
    cls = _torch_class(policy.name, path)
    flag, value = _FLAGS[implementation]
    flags = {flag: value} if flag in inspect.signature(cls.__init__).parameters else {}
    return ZeroRedundancyOptimizer(params, optimizer_class=cls, **dict(args), **flags)


def _measure_rank(result: CompileResult, rank: int, run: DDPRun) -> RankMeasurement:
    import torch
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks.debugging_hooks import noop_hook
    from torch.nn.parallel import DistributedDataParallel
    from torch.testing._internal.distributed.fake_pg import FakeStore

    options = run.options
    dist.init_process_group("fake", rank=rank, world_size=run.world_size, store=FakeStore())
    try:
        torch.manual_seed(0)
        model = lowered_model(result)
        model.keep_outputs = options.keep_outputs
        names = {id(p): n for n, p in model.named_parameters()}
        ddp = DistributedDataParallel(
            model,
            bucket_cap_mb=run.bucket_cap_mb,
            gradient_as_bucket_view=run.gradient_as_bucket_view,
        )
        seen: dict[int, tuple] = {}

        def hook(state, bucket):  # DDP checks this parameter's name
            seen[bucket.index()] = (bucket.buffer(), [names[id(p)] for p in bucket.parameters()])
            return noop_hook(state, bucket)

        ddp.register_comm_hook(None, hook)
        params = list(model.parameters())
        if run.zero:
            optimizer = _zero_optimizer(result, params, options.optimizer_impl)
            members = [optimizer.optim]
        else:
            optimizer = _optimizer(result.config.optimizer, params, options.optimizer_impl)
            members = list(getattr(optimizer, "optimizers", (optimizer,)))
        standins: list = []
        tracker = _bucket_tracker(standins)

        def step() -> None:
            training_step(model, optimizer, run=ddp, set_to_none=options.set_to_none)

        if options.first_step:
            # the buckets made at construction are reachable only inside a hook
            standins += [b.buffer() for b in ddp.reducer._get_zeros_like_grad_buckets()]
            buckets = list(standins)
        else:
            step()  # one bucket of every parameter, in registration order
            step()  # rebuilt in gradient-ready order before this forward
            buckets = [buffer for buffer, _ in seen.values()]
        seen.clear()
        tracker.track_external(ddp, *members, *buckets)  # buckets last: OTH
        del buckets
        with tracker:
            step()
        snapshot = tracker.get_tracker_snapshot("peak")
        scalar_keys = set(result.config.optimizer.scalars)
        return _answer(rank, run, tracker, snapshot, seen, model, members, scalar_keys)
    finally:
        dist.destroy_process_group()


def _bucket_tracker(standins: list):
    """MemTracker (noting the phase at the peak) in which each of `standins`, a copy the
    size of a bucket that the tracker cannot be given, counts for the bucket until the
    step first touches the bucket (it writes a gradient into it), and the bucket after
    that: the tracker would otherwise count a bucket from that moment only, as a
    temporary."""
    from torch.distributed._tools.mem_tracker import _MemRefType

    class BucketTracker(type(phase_tracker())):
        def _track(self, reftype, t) -> None:
            storage = t.untyped_storage()
            if standins and storage not in self._WINFO:
                for i, standin in enumerate(standins):
                    if standin.untyped_storage().nbytes() == storage.nbytes():
                        self._update_and_maybe_create_winfos(t, _MemRefType.OTH)
                        del standins[i]  # its last reference: the tracker drops it
                        break
            super()._track(reftype, t)

    return BucketTracker()


def _answer(rank, run, tracker, snapshot, seen, model, members, scalar_keys):
    names = {id(p): n for n, p in model.named_parameters()}
    (device_snapshot,) = snapshot.values()
    by_name = {str(k).rsplit(".", 1)[-1]: int(v) for k, v in device_snapshot.items()}
    peak = PeakMeasurement(
        by_name["Total"],
        tuple((c, by_name.get(c, 0)) for c in CATEGORIES),
        tracker.peak_phase,
    )
    buckets = tuple(
        Bucket(
            i,
            buffer.numel() * buffer.element_size(),
            str(buffer.dtype).removeprefix("torch."),
            tuple(params),
        )
        for i, (buffer, params) in sorted(seen.items())
    )
    bucket_storages = {buffer.untyped_storage().data_ptr() for buffer, _ in seen.values()}
    gradients, in_buckets = [], True
    for name, p in model.named_parameters():
        if p.grad is not None:
            gradients.append((f"{name}.grad", p.grad.numel() * p.grad.element_size()))
            in_buckets &= p.grad.untyped_storage().data_ptr() in bucket_storages
    state, scalars, owned = [], [], []
    for member in members:
        for group in member.param_groups:
            owned += [names[id(p)] for p in group["params"]]
        for p, tensors in member.state.items():
            for key, value in tensors.items():
                if not hasattr(value, "untyped_storage"):
                    continue
                entry = (f"{names[id(p)]}.{key}", value.numel() * value.element_size())
                (scalars if key in scalar_keys else state).append(entry)
    return RankMeasurement(
        rank=rank,
        world_size=run.world_size,
        zero=run.zero,
        peak=peak,
        buckets=buckets,
        gradients=tuple(gradients),
        gradients_in_buckets=bool(gradients) and in_buckets,
        optimizer_state=tuple(state),
        optimizer_scalars=tuple(scalars),
        owned=tuple(owned),
    )


if __name__ == "__main__":
    # the module's own copy, not __main__'s, so that the answers unpickle as its types
    from memspec.verify.ddp import _serve as serve

    serve(Path(sys.argv[1]))
