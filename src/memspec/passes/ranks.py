"""What each data-parallel rank holds: the model's categories, sharded as the runtime
(`memspec.parallel`) shards them.

Activations and buffers are every rank's own (the batch `B` is each rank's); parameters,
gradients and optimizer state are replicated or sharded by the ZeRO stage. FSDP2 cuts
each parameter on dim 0 into chunks of c = ceil(d0 / DP) rows: parameters and gradients
take c rows on every rank (the last chunk is padded), the optimizer state the rank's
own rows, min(c, max(0, d0 - r c)), so the last ranks may hold less and the formulas,
rank 0's, are the most any rank holds. DeepSpeed partitions one flat buffer per
category and dtype evenly, ceil(n / DP) elements per rank.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace

import sympy as sp

from memspec.config import TrainConfig
from memspec.errors import UsageError
from memspec.ir.types import DType
from memspec.parallel import DP, TP, Parallel
from memspec.passes.parameters import WHOLE_GRADIENT
from memspec.passes.peak.optimizer_step import STEPPED, module_order, repetition_groups
from memspec.passes.results import CATEGORY_TITLES, CategoryResult, LineItem
from memspec.symbolic.symbols import dim_symbol

__all__ = ["RankClass", "RanksResult", "count_ranks"]


@dataclass(frozen=True, slots=True)
class RankClass:
    """Ranks that hold the same bytes in every category, and what they hold."""

    ranks: tuple[int, ...]
    categories: dict[str, CategoryResult]
    # the parameters a ZeroRedundancyOptimizer rank steps, in the order it steps them
    stepped: tuple[LineItem, ...] | None = None

    @property
    def bytes(self) -> sp.Expr:
        return sp.expand(sp.Add(*(c.bytes for c in self.categories.values())))

    @property
    def stepping(self) -> dict[str, CategoryResult]:
        """The categories the peak replays: with the parameters these ranks step, in
        their order, where they step only some (ZeroRedundancyOptimizer)."""
        if self.stepped is None:
            return self.categories
        return {**self.categories, STEPPED: CategoryResult(STEPPED, self.stepped)}


@dataclass(frozen=True, slots=True)
class RanksResult:
    """`largest`: rank 0's categories, symbolic in DP (no rank holds more in any);
    `classes`: every rank's, grouped, where the degree and the sizes are bound."""

    parallel: Parallel
    largest: RankClass
    classes: tuple[RankClass, ...]

    def index_of(self, rank: int) -> int:
        """Which of `classes` holds `rank`."""
        return next(k for k, c in enumerate(self.classes) if rank in c.ranks)


def count_ranks(
    config: TrainConfig,
    categories: dict[str, CategoryResult],
    evaluate: Callable[[sp.Expr], int | None],
) -> RanksResult | None:
    """Per-rank categories under `config.parallel`; None on a single device. `evaluate`
    gives an expression's integer at the bound sizes (None where one is unbound)."""
    parallel = config.parallel
    if not parallel.distributed:
        return None
    degree = dim_symbol(DP)
    world = evaluate(degree)
    if parallel.runtime in ("ddp", "zero_redundancy"):
        categories = {**categories, "buffers": _with_buckets(categories)}
    if parallel.runtime == "zero_redundancy":
        return _zero_redundancy(config, categories, evaluate, world)
    sharding = _Sharding(config, degree)
    largest = RankClass((0,), {k: sharding.category(categories[k], None) for k in categories})
    classes: list[RankClass] = []
    if world is not None:
        rows = _Rows(evaluate, world)
        by_bytes: dict[tuple, RankClass] = {}
        for rank in range(world):
            held = {k: sharding.category(categories[k], rank, rows) for k in categories}
            key = tuple(evaluate(c.bytes) for c in held.values())
            if None in key:
                break
            if key in by_bytes:
                known = by_bytes[key]
                by_bytes[key] = replace(known, ranks=(*known.ranks, rank))
            else:
                by_bytes[key] = RankClass((rank,), held)
        else:
            classes = list(by_bytes.values())
    return RanksResult(parallel, largest, tuple(classes))


class _Rows:
    """Each sharded item's rows on a rank, at the bound sizes."""

    def __init__(self, evaluate: Callable[[sp.Expr], int | None], world: int) -> None:
        self.evaluate, self.world = evaluate, world

    def own(self, first: sp.Expr, rank: int) -> sp.Expr:
        """The rank's unpadded rows of a dim-0 cut into chunks of ceil(d0 / world)."""
        d0 = self.evaluate(first)
        if d0 is None:
            return sp.Min(_chunk(first, self.world), first)  # rank 0's, the most
        chunk = -(-d0 // self.world)
        return sp.Integer(min(chunk, max(0, d0 - rank * chunk)))


def _chunk(d0: sp.Expr, world: sp.Expr | int) -> sp.Expr:
    return sp.ceiling(d0 / world)


class _Sharding:
    """One category's items as a rank holds them."""

    def __init__(self, config: TrainConfig, degree: sp.Symbol) -> None:
        self.parallel, self.degree = config.parallel, degree
        precision = config.precision
        # FSDP2's mixed precision: the float32 shard is the master, reduced in float32
        self.master = precision.master if self.parallel.runtime == "fsdp2" else None
        if self.parallel.runtime == "fsdp2" and self.parallel.zero:
            _check_fsdp2_state(config)

    def category(
        self, category: CategoryResult, rank: int | None, rows: _Rows | None = None
    ) -> CategoryResult:
        name = category.name
        items = category.items
        if self.master is not None:
            items = self._fsdp2_mixed(name, items)
        if not self.parallel.shards(name):
            return replace(category, items=items)
        if self.parallel.runtime == "deepspeed":
            return CategoryResult(name, self._flat(name, items), self._describe(category))
        padded = name != "optimizer_state" or rank is None or rows is None
        out = []
        for item in items:
            if not item.shape:
                out.append(item)  # a 0-dim tensor (a loss scaler's): every rank's own
                continue
            first, *rest = item.shape
            if item.note == WHOLE_GRADIENT:
                # FSDP2 redistributes a DTensor gradient to its parameter's placement
                # before reducing it: the whole table's gradient is sharded as the table
                first = first / dim_symbol(TP)
            chunk = _chunk(first, self.degree) if padded else rows.own(first, rank)
            note = "dim-0 shard" + (", padded" if padded and name != "optimizer_state" else "")
            out.append(replace(item, shape=(chunk, *rest), note=note))
        return CategoryResult(name, tuple(out), self._describe(category))

    def _fsdp2_mixed(self, name: str, items: tuple[LineItem, ...]) -> tuple[LineItem, ...]:
        """FSDP2 with a bf16 param_dtype keeps float32 shards (no separate master copy)."""
        if name == "optimizer_state":
            return tuple(i for i in items if i.note != "master copy")
        if name in ("parameters", "gradients"):
            return tuple(replace(i, dtype=self.master) for i in items)
        return items

    def _flat(self, name: str, items: tuple[LineItem, ...]) -> tuple[LineItem, ...]:
        """DeepSpeed's flat partition: one buffer per dtype (per state: each state is
        made like the partition of the master weights), ceil(n / DP) elements each."""
        groups: dict[tuple[str, DType], sp.Expr] = {}
        for item in items:
            state = item.path.rsplit(".", 1)[-1] if name == "optimizer_state" else ""
            key = (state, item.dtype)
            groups[key] = groups.get(key, sp.Integer(0)) + item.total_elements
        title = CATEGORY_TITLES[name].lower()
        return tuple(
            LineItem(
                f"partition of the {state or title} ({dtype.value})",
                (sp.ceiling(sp.expand(total) / self.degree),),
                dtype,
                note="flat, evenly partitioned",
            )
            for (state, dtype), total in groups.items()
        )

    def _describe(self, category: CategoryResult) -> str:
        how = (
            "each rank's dim-0 shard of every tensor (FSDP2)"
            if self.parallel.runtime == "fsdp2"
            else "each rank's part of one flat buffer per dtype (DeepSpeed)"
        )
        described = category.description
        if self.master is not None:  # FSDP2's scheme has no master copy of its own
            described = described.replace(
                f"; plus a {self.master.value} master copy of each parameter", ""
            )
        text = f"{described}; sharded over DP ranks: {how}"
        if self.master is not None:
            text += (
                f"; FSDP2's mixed precision: {self.master.value} shards, the master copy, "
                "gathered in bfloat16 for compute (no separate master) and gradients "
                f"reduced in {self.master.value}"
            )
        return text


def _check_fsdp2_state(config: TrainConfig) -> None:
    """FSDP2 shards each state tensor like its parameter: only states shaped like it."""
    for optimizer in config.optimizer.chain():
        for rule in optimizer.state_rules:
            if rule.extent.kind == "scalar":
                continue
            if rule.extent.kind != "like" or rule.extent.dims or rule.shared:
                raise UsageError(
                    f"optimizer {optimizer.name}'s state {rule.describe()} is not shaped "
                    "like its parameter, so FSDP2's dim-0 shards of it are not modelled; "
                    "under FSDP2 pick an optimizer whose state is (adamw, adam, "
                    "sgd_momentum, ...)"
                )


def _with_buckets(categories: dict[str, CategoryResult]) -> CategoryResult:
    """DDP's reducer keeps its gradient buckets for good: with gradient_as_bucket_view
    False (its default) a flat copy of every gradient, per dtype, unpadded, beside the
    gradients themselves."""
    buffers = categories["buffers"]
    by_dtype: dict[DType, sp.Expr] = {}
    for item in categories["gradients"].items:
        by_dtype[item.dtype] = by_dtype.get(item.dtype, sp.Integer(0)) + item.total_elements
    buckets = tuple(
        LineItem(
            f"ddp.gradient_buckets ({dtype.value})",
            (sp.expand(total),),
            dtype,
            note="DDP's buckets: a copy of every gradient",
        )
        for dtype, total in by_dtype.items()
    )
    description = (
        f"{buffers.description}; and DistributedDataParallel's gradient buckets "
        "(gradient_as_bucket_view=False, its default: the gradients are copied into them)"
    )
    return CategoryResult(buffers.name, buffers.items + buckets, description)


def _zero_redundancy(
    config: TrainConfig,
    categories: dict[str, CategoryResult],
    evaluate: Callable[[sp.Expr], int | None],
    world: int | None,
) -> RanksResult:
    """ZeroRedundancyOptimizer's ranks: each holds the whole state of the parameters
    its greedy partition gives it (and the rest of the model whole)."""
    owned = _greedy_partition(categories["parameters"].items, evaluate, world)
    state = categories["optimizer_state"]
    params = frozenset(i.path for i in categories["parameters"].items)
    classes: dict[tuple, RankClass] = {}
    for rank, stepped in enumerate(owned):
        copies: dict[str, int] = {}
        for param in stepped:
            copies[param.path] = copies.get(param.path, 0) + 1
        items = []
        for item in state.items:
            param = item.path.rsplit(".", 1)[0]
            if param not in params:
                items.append(item)  # not a parameter's (a loss scaler's): every rank's
            elif copies.get(param):
                total = evaluate(item.multiplicity)
                note = f"{copies[param]} of its {total} copies" if total != 1 else "its own"
                items.append(replace(item, regions=(), extra=sp.Integer(copies[param]), note=note))
        description = (
            f"{state.description}; only for the parameters ZeroRedundancyOptimizer gives "
            "this rank (whole parameters, the largest first, each to the rank with the "
            "fewest elements so far)"
        )
        held = {
            **categories,
            "optimizer_state": CategoryResult(state.name, tuple(items), description),
        }
        key = tuple(evaluate(c.bytes) for c in held.values())
        # ranks whose steps differ (what they update, in which order) differ at the peak
        key += tuple(tuple(evaluate(d) for d in item.shape) for item in stepped)
        known = classes.get(key)
        classes[key] = (
            replace(known, ranks=(*known.ranks, rank))
            if known
            else RankClass((rank,), held, tuple(stepped))
        )
    found = tuple(classes.values())
    largest = max(found, key=lambda c: evaluate(c.bytes))
    return RanksResult(config.parallel, largest, found)


def _greedy_partition(
    params: tuple[LineItem, ...], evaluate: Callable[[sp.Expr], int | None], world: int | None
) -> list[list[LineItem]]:
    """Per rank, the parameter tensors ZeroRedundancyOptimizer gives it, in the order it
    steps them (torch 2.13 `_partition_parameters`): every parameter tensor of the
    module, sorted by numel, largest first (stable), each to the first rank with the
    fewest elements; one copy of a repeated parameter each."""
    sizes = [evaluate(i.elements) for i in params] + [evaluate(i.multiplicity) for i in params]
    if world is None or None in sizes:
        raise UsageError(
            "ZeroRedundancyOptimizer assigns whole parameters to ranks by their sizes, so "
            "its ranks are decided at bound sizes: bind DP (--dp N) and every dim, or pick "
            "--dp-runtime deepspeed for formulas in DP"
        )
    tensors = []  # (numel, one copy), in nn.Module.parameters() order
    for group in repetition_groups(module_order(params)):
        counts = [range(evaluate(count)) for _, count in group[0].regions]
        for _ in itertools.product(*counts):
            tensors += [
                (evaluate(i.elements), replace(i, regions=(), extra=sp.Integer(1))) for i in group
            ]
    held = [0] * world
    owned: list[list[LineItem]] = [[] for _ in range(world)]
    for numel, item in sorted(tensors, key=lambda t: -t[0]):
        rank = held.index(min(held))
        owned[rank].append(item)
        held[rank] += numel
    return owned
