"""memspec.verify.ddp: each rank of DistributedDataParallel (and of DDP with
ZeroRedundancyOptimizer) measured on the fake process group, checked against what the
test computes on its own: the reducer's buckets from the parameter sizes, the order
their gradients are ready in and DDP's bucketing rule; ZeRO-1's greedy partition; and
the single-device step's peak (memspec.verify.peak, no DDP) plus the buckets."""

from __future__ import annotations

import pytest
import torch

from memspec import compile_spec
from memspec.errors import UsageError
from memspec.passes.peak import StepOptions
from memspec.verify.ddp import DDPRun, measure_ddp, measure_ddp_runs
from memspec.verify.measure import lowered_model
from memspec.verify.peak import measure_peak
from tests.conftest import SPECS

SPEC = SPECS / "cs336_lm_swiglu.mspec"
SMALL = {"B": 2, "L": 8, "D": 16, "H": 2, "V": 32, "N": 2, "F": 24}
# the embedding and lm_head are 1 MiB each: DDP's default first bucket holds lm_head alone
WIDE = {"B": 1, "L": 4, "D": 64, "H": 2, "V": 4096, "N": 1, "F": 96}
# the optimizer's step outweighs backward: the step peaks in optimizer.step()
HEAVY = {"B": 1, "L": 4, "D": 32, "H": 4, "V": 64, "N": 3, "F": 64}
W = 4
MIB = 1024 * 1024
SMALL_CAP_MB = 0.002  # 2,097 B: several buckets at SMALL
ADAMW_STATE = ("exp_avg", "exp_avg_sq")


@pytest.fixture(scope="module")
def small():
    return compile_spec(SPEC, set=SMALL)


@pytest.fixture(scope="module")
def wide():
    return compile_spec(SPEC, set=WIDE)


@pytest.fixture(scope="module")
def heavy():
    return compile_spec(SPEC, set=HEAVY)


@pytest.fixture(scope="module")
def measured(small, wide, heavy):
    """Every run the tests read, measured in one go (torch imported once)."""
    runs = {
        "plain": (small, DDPRun(W)),
        "views": (small, DDPRun(W, gradient_as_bucket_view=True, bucket_cap_mb=SMALL_CAP_MB)),
        "zero1": (small, DDPRun(W, zero=1, bucket_cap_mb=SMALL_CAP_MB)),
        "wide": (wide, DDPRun(W, ranks=(2,))),
        "first": (small, DDPRun(W, options=StepOptions(first_step=True), ranks=(3,))),
        "heavy": (heavy, DDPRun(W, ranks=(1,))),
    }
    return dict(zip(runs, measure_ddp_runs(list(runs.values())), strict=True))


@pytest.fixture(scope="module")
def plain(measured):
    return measured["plain"]


@pytest.fixture(scope="module")
def views(measured):
    return measured["views"]


@pytest.fixture(scope="module")
def zero1(measured):
    return measured["zero1"]


def _parameters(result) -> dict[str, int]:
    """Each parameter's bytes, in registration order."""
    model = lowered_model(result)
    return {n: p.numel() * p.element_size() for n, p in model.named_parameters()}


def _ready_order(result) -> list[str]:
    """The order autograd accumulates the gradients in, from a plain step's hooks."""
    model = lowered_model(result)
    order: list[str] = []
    for name, p in model.named_parameters():
        p.register_post_accumulate_grad_hook(lambda _p, name=name: order.append(name))
    model(*model.make_inputs()).backward()
    return order


def _buckets(names: list[str], sizes: dict[str, int], limits: list[int]) -> list[list[str]]:
    """DDP's bucketing (the reducer's compute_bucket_assignment_by_size, one dtype and
    device): parameters join the open bucket in order; it closes once its bytes reach
    its limit (with the parameter that reached it); each limit in `limits` is used for
    one bucket, the last for all the rest."""
    buckets: list[list[str]] = []
    current: list[str] = []
    size = 0
    for name in names:
        current.append(name)
        size += sizes[name]
        if size >= limits[min(len(buckets), len(limits) - 1)]:
            buckets.append(current)
            current, size = [], 0
    return buckets + ([current] if current else [])


def _partition(sizes: dict[str, int], world_size: int) -> list[list[str]]:
    """ZeroRedundancyOptimizer._partition_parameters: the parameters largest first (a
    stable sort: ties keep registration order), each to the rank with the fewest
    elements so far (the lowest such rank)."""
    ranks: list[list[str]] = [[] for _ in range(world_size)]
    totals = [0] * world_size
    for name in sorted(sizes, key=lambda n: -sizes[n]):
        rank = totals.index(min(totals))
        ranks[rank].append(name)
        totals[rank] += sizes[name]
    return ranks


def test_buckets_agree_with_torch_own_assignment():
    """The test's bucketing rule is the reducer's (torch's binding of it)."""
    import torch.distributed as dist

    tensors = [torch.empty(n) for n in (300, 200, 600, 100, 700, 50)]
    sizes = {str(i): t.numel() * 4 for i, t in enumerate(tensors)}
    for limits in ([2000], [1200, 2400], [400, 4000], [10**9]):
        indices, _ = dist._compute_bucket_assignment_by_size(tensors, limits, [], list(range(6)))
        assert [[str(i) for i in b] for b in indices] == _buckets(list(sizes), sizes, limits)
    assert dist._DEFAULT_FIRST_BUCKET_BYTES == MIB


def test_default_cap_one_bucket_of_every_gradient_in_ready_order(small, plain):
    sizes = _parameters(small)
    for m in plain:
        (bucket,) = m.buckets
        assert list(bucket.parameters) == _ready_order(small)
        assert bucket.bytes == sum(sizes.values()) and bucket.dtype == "float32"


def test_small_cap_buckets_follow_the_rule(small, views):
    sizes = _parameters(small)
    cap = int(SMALL_CAP_MB * MIB)  # an explicit cap is the first bucket's too
    expected = _buckets(_ready_order(small), sizes, [cap, cap])
    assert len(expected) > 4
    for m in views:
        assert [list(b.parameters) for b in m.buckets] == expected
        # a bucket is its gradients, end to end: no padding
        assert [b.bytes for b in m.buckets] == [sum(sizes[n] for n in b) for b in expected]


def test_wide_default_first_bucket_is_1_mib(wide, measured):
    """lm_head's gradient is ready first and reaches the 1 MiB first cap alone; the
    rest share a 25 MiB bucket."""
    sizes = _parameters(wide)
    assert sizes["lm_head.weight"] == MIB
    (m,) = measured["wide"]
    expected = _buckets(_ready_order(wide), sizes, [MIB, 25 * MIB])
    assert [list(b.parameters) for b in m.buckets] == expected
    assert expected[0] == ["lm_head.weight"] and len(expected) == 2



def test_an_explicit_cap_is_the_first_bucket_cap_too():
    """DDP's 1 MiB first bucket is for bucket_cap_mb=None only: 25 given explicitly
    caps the first bucket at 25 MiB (measure_ddp passes None for DDP's default)."""
    from torch.nn.parallel.distributed import _BucketCapacityConfig

    assert _BucketCapacityConfig.create(None, None, False).first_bucket_bytes_cap == MIB
    assert _BucketCapacityConfig.create(25, None, False).first_bucket_bytes_cap == 25 * MIB


def _peak_plus(reference, extra: dict[str, int]) -> dict[str, int]:
    expected = dict(reference.by_category)
    for category, change in extra.items():
        expected[category] += change
    return expected


def test_ddp_peak_is_the_single_device_peak_plus_buckets(small, plain, views):
    """Every rank alike; the buckets (OTH) on top of the step without DDP, category by
    category, whether the gradients are copied into them or are views of them."""
    reference = measure_peak(small, real=True)
    assert reference.phase == "backward" and reference.get("GRAD") == 0
    total = sum(_parameters(small).values())
    for m in [*plain, *views]:
        assert dict(m.peak.by_category) == _peak_plus(reference, {"OTH": total})
        assert m.peak.total == reference.total + total
        assert m.peak.phase == reference.phase
        assert m.bucket_bytes == total


def test_step_peak_holds_gradients_and_their_bucket_copies(heavy, measured):
    """Where the step peaks in optimizer.step(), each gradient is held twice: the
    gradient itself (GRAD) and its copy in the bucket (OTH)."""
    reference = measure_peak(heavy, real=True)
    assert reference.phase == "optimizer step"
    total = sum(_parameters(heavy).values())
    assert reference.get("GRAD") == total
    (m,) = measured["heavy"]
    assert dict(m.peak.by_category) == _peak_plus(reference, {"OTH": total})
    assert m.peak.phase == "optimizer step"


def test_gradients_copied_or_views(small, plain, views):
    sizes = _parameters(small)
    for m in plain:
        assert dict(m.gradients) == {f"{n}.grad": b for n, b in sizes.items()}
        assert not m.gradients_in_buckets
    for m in views:
        assert dict(m.gradients) == {f"{n}.grad": b for n, b in sizes.items()}
        assert m.gradients_in_buckets


def test_ddp_every_rank_holds_all_state(small, plain):
    sizes = _parameters(small)
    for m in plain:
        assert m.owned == tuple(sizes)
        assert dict(m.optimizer_state) == {
            f"{n}.{key}": b for n, b in sizes.items() for key in ADAMW_STATE
        }
        assert dict(m.optimizer_scalars) == {f"{n}.step": 4 for n in sizes}


def test_zero1_state_follows_the_greedy_partition(small, zero1):
    sizes = _parameters(small)
    partition = _partition(sizes, W)
    reference = measure_peak(small, real=True)
    full_state = reference.get("OPT")
    assert full_state == 2 * sum(sizes.values()) + 4 * len(sizes)
    states = set()
    for m in zero1:
        mine = partition[m.rank]
        assert sorted(m.owned) == sorted(mine)
        assert dict(m.optimizer_state) == {
            f"{n}.{key}": sizes[n] for n in mine for key in ADAMW_STATE
        }
        assert dict(m.optimizer_scalars) == {f"{n}.step": 4 for n in mine}
        own = 2 * sum(sizes[n] for n in mine) + 4 * len(mine)
        states.add(own)
        expected = _peak_plus(reference, {"OPT": own - full_state, "OTH": m.bucket_bytes})
        assert dict(m.peak.by_category) == expected
        assert m.peak.total == sum(expected.values())
        # the gradients stay whole on every rank: ZeRO-1 shards the state only
        assert sum(b for _, b in m.gradients) == sum(sizes.values())
    assert len(states) > 1  # the ranks differ


def test_first_step_one_bucket(small, measured):
    """The first step: the bucket made at construction (every parameter, registration
    order), the optimizer's state made in its step (where this step peaks)."""
    sizes = _parameters(small)
    (m,) = measured["first"]
    (bucket,) = m.buckets
    assert list(bucket.parameters) == list(sizes)
    reference = measure_peak(small, StepOptions(first_step=True), real=True)
    assert reference.phase == "optimizer step"
    expected = _peak_plus(reference, {"OTH": sum(sizes.values())})
    assert dict(m.peak.by_category) == expected
    assert m.peak.phase == reference.phase


def test_bad_requests(small):
    with pytest.raises(UsageError, match="--zero 0 and 1"):
        measure_ddp(small, W, zero=2)
    with pytest.raises(UsageError, match="rank 4 is not in a world of 4"):
        measure_ddp(small, W, ranks=[4])
    muon = compile_spec(SPEC, set=SMALL, optimizer="muon")
    with pytest.raises(UsageError, match="chain"):  # refused before any process starts
        measure_ddp(muon, W, zero=1, ranks=[0])
    with pytest.raises(UsageError, match="no_sync"):
        measure_ddp(small, W, options=StepOptions(grad_accum=2))
