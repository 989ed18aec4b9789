"""The IR graph of one model's training step (forward and loss).

Vocabulary, in the manner of torch.fx's Node docstring:

- A `Value` is a tensor: a symbolic `shape`, a `dtype` and a `role` (input, parameter,
  buffer or activation). `path` is its hierarchical name; for parameters and buffers it is
  the PyTorch `state_dict` key with layer indices replaced by a region's multiplicity
  (`layers.attn.q_proj.weight`). `storage` is the id of the value whose memory it uses:
  itself, or its base when it is a view, so passes count memory once per storage.
  `requires_grad` is PyTorch's flag: parameters and anything computed from them.
- An `OpApply` is one application of a primitive op from the registry (`ops/`), reading
  `inputs` and producing `outputs` (value ids), with constant `attrs`. `path` is the
  layer instance it runs in plus a local name (`layers.attn.attention.scores`); `calls` is
  the stack of layer and fn names it is nested in (`("Block", "MultiHeadSelfAttention")`).
- A `Region` is one `repeat N of Layer(...)`: everything created inside it exists `count`
  times. Regions nest through `parent`. They are never unrolled, so the graph's size does
  not depend on `num_layers`. A region whose repetitions run side by side on routed
  tokens (`route(experts, ...)`, a mixture of experts) is an expert bank: `active` is how
  many of its `count` repetitions each token passes through (top-k), None otherwise.
- A `RepetitionIndex` in an op's attributes stands for the current repetition of a
  region (the expert an op serves); the lowering binds it, passes never need it.
- A `CallOutput` records that `value` is what a call of layer or fn `callee` returned,
  which is what output-counting activation conventions look at.
- `carried` lists each call of a repeat region as `(region, input, output)`: the value
  that flows from one repetition into the next. A tensor saved inside the region that is
  the region's input exists once as `input` and `count - 1` times as earlier outputs.
- Under tensor parallelism the graph is one rank's: shapes are local, and `shard` says
  which dim a value holds 1/TP of (`tensor_parallel.py`).
- An `Assumption` is a fact the spec relies on for its shapes (`H divides D`).
- `bound` are the sizes the graph was elaborated at (`ir/sizes.py`): views, saved copies
  and gradients follow torch's decisions at them. A `SizeDecision` records one decision
  that holds at those sizes and not for general ones (at B = 1 a matmul saves its
  operands without copying them), so that no formula passes for general when it is not.
  A `SizeCondition` is a comparison of sizes (`L >= W`) that the sizes left unbound do
  not decide: the graph assumes it holds (`elaborate/conditions.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import reduce

import sympy as sp

from memspec.ir.sizes import GENERAL, BoundSizes
from memspec.ir.types import DType, Role, Shape
from memspec.source import Span

__all__ = [
    "Assumption",
    "CallOutput",
    "Graph",
    "OpApply",
    "Region",
    "RepetitionIndex",
    "SizeCondition",
    "SizeDecision",
    "Value",
]


def _span() -> Span | None:
    return field(default=None, compare=False, hash=False, repr=False)


@dataclass(frozen=True, slots=True)
class Region:
    id: int
    path: str
    count: sp.Expr
    parent: int | None
    active: sp.Expr | None = None  # an expert bank: repetitions each token passes through
    span: Span | None = _span()
    checkpoint: bool = False  # `repeat N of checkpoint ...`: each repetition a checkpoint


@dataclass(frozen=True, slots=True)
class RepetitionIndex:
    """An op attribute: the 0-based repetition of `region` the op runs in."""

    region: int


@dataclass(frozen=True, slots=True)
class Value:
    id: int
    path: str
    shape: Shape
    dtype: DType
    role: Role
    storage: int
    region: int | None
    requires_grad: bool
    strides: tuple[sp.Expr, ...] | None = None  # None: contiguous (row-major)
    span: Span | None = _span()
    # tensor parallelism: the dim of `shape` that is this rank's 1/TP of the whole tensor
    # (the graph is one rank's); None: the whole tensor, replicated on every rank
    shard: int | None = None

    @property
    def contiguous(self) -> bool:
        return self.strides is None

    def whole_shape(self, degree: sp.Expr) -> Shape:
        """The shape of the whole tensor of which this rank holds the value: its shard
        dim `degree` (the tensor-parallel degree) times its local size."""
        if self.shard is None:
            return self.shape
        return tuple(d * degree if i == self.shard else d for i, d in enumerate(self.shape))

    def __post_init__(self) -> None:
        if self.storage > self.id:
            raise ValueError(f"value {self.path} is a view of a later value")


@dataclass(frozen=True, slots=True)
class OpApply:
    id: int
    op: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    attrs: tuple[tuple[str, object], ...]
    path: str
    region: int | None
    calls: tuple[str, ...] = ()
    span: Span | None = _span()

    def attr(self, name: str, default: object = None) -> object:
        return dict(self.attrs).get(name, default)


@dataclass(frozen=True, slots=True)
class CallOutput:
    callee: str
    path: str
    value: int


@dataclass(frozen=True, slots=True)
class Assumption:
    text: str
    expr: sp.Expr  # must be an integer for the spec's shapes to exist
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class SizeDecision:
    """What `subject` (a value or op path) does at the bound sizes (`outcome`) and does
    not for general ones (`general`), and why: `facts` are (size, value) pairs that hold
    there (`B = 1`)."""

    facts: tuple[tuple[sp.Expr, sp.Expr], ...]
    subject: str
    outcome: str
    general: str
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class SizeCondition:
    """A comparison of sizes the graph assumes (`L >= W`), as a sympy relation."""

    relation: sp.Basic
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Graph:
    model: str
    values: tuple[Value, ...]
    ops: tuple[OpApply, ...]
    regions: tuple[Region, ...]
    call_outputs: tuple[CallOutput, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    assumptions: tuple[Assumption, ...] = ()
    carried: tuple[tuple[int, int, int], ...] = ()
    bound: BoundSizes = GENERAL
    decisions: tuple[SizeDecision, ...] = ()
    conditions: tuple[SizeCondition, ...] = ()
    # tensor parallelism: (member path, style) of each planned member, in the order made,
    # and the row-parallel members whose output stays whole under sequence parallelism
    tp_plan: tuple[tuple[str, str], ...] = ()
    tp_replicated: tuple[str, ...] = ()

    def value(self, value_id: int) -> Value:
        return self.values[value_id]

    def region_chain(self, region_id: int | None) -> tuple[Region, ...]:
        """The regions enclosing `region_id`, outermost first."""
        chain: list[Region] = []
        while region_id is not None:
            region = self.regions[region_id]
            chain.append(region)
            region_id = region.parent
        return tuple(reversed(chain))

    def producer(self, value_id: int) -> OpApply | None:
        """The op whose output `value_id` is (None: an input, parameter or buffer)."""
        return next((op for op in self.ops if value_id in op.outputs), None)

    def top_regions(self) -> tuple[Region, ...]:
        """The repeat regions in no other one (FSDP2's units are their repetitions)."""
        return tuple(r for r in self.regions if r.parent is None)

    def multiplicity(self, region_id: int | None) -> sp.Expr:
        """How many times a thing in `region_id` exists: the product of repeat counts."""
        return reduce(sp.Mul, (r.count for r in self.region_chain(region_id)), sp.Integer(1))
