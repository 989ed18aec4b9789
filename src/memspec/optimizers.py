"""Optimizers as data: state and step temporaries shaped from each parameter.

An optimizer is declared in a spec (`specs/std/train.mspec`); this module checks the
declaration and answers, for one parameter's shape, which state tensors and which step
temporaries exist and how large they are. Nothing here is particular to one optimizer:
Adafactor's factored second moment is `like param reduced over -1 if rank >= 2`,
bitsandbytes' quantization blocks `blocks of 256 of param`, Muon's Newton-Schulz Gram
matrices `gram of param`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import sympy as sp

from memspec.errors import SpecValueError
from memspec.ir.sizes import BoundSizes, note_integer, note_relation
from memspec.ir.types import DType, Shape, numel

__all__ = ["Condition", "Extent", "Optimizer", "StateRule", "TempRule", "TorchValue"]

# A constructor argument of an optimizer class, as the declaration spells it.
TorchValue = bool | int | float | tuple

_COMPARE = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
QUANTITIES = ("rank", "numel")
LIFETIMES = ("freed", "kept", "until first", "until last")


@dataclass(frozen=True, slots=True)
class Condition:
    """`rank >= 2` or `numel < 4096` of a parameter. A rank is always known; a symbolic
    element count is decided at the bound sizes, and taken as large where none are bound
    (the parameters a memory estimate is about)."""

    quantity: str
    op: str
    number: int

    def holds(self, shape: Shape, bound: BoundSizes) -> bool:
        if self.quantity == "rank":
            return _COMPARE[self.op](len(shape), self.number)
        value = bound.at(numel(shape))
        if value.is_Integer:
            return _COMPARE[self.op](int(value), self.number)
        note_relation(sp.Gt, value, self.number)
        return _COMPARE[self.op](self.number + 1, self.number)  # large: above any bound

    def describe(self) -> str:
        return f"{self.quantity} {self.op} {self.number}"


@dataclass(frozen=True, slots=True)
class Extent:
    """A tensor's shape from its parameter's: `like` (with dims reduced to 1), `scalar`,
    `blocks` (one element per `size` elements, the last block partial), `gram` ([m, m],
    m the smaller of the last two sides), `fixed` ([size])."""

    kind: str
    dims: tuple[int, ...] = ()
    size: int = 0

    def shape(self, param: Shape, bound: BoundSizes) -> Shape:
        if self.kind == "scalar":
            return ()
        if self.kind == "fixed":
            return (sp.Integer(self.size),)
        if self.kind == "blocks":
            elements = numel(param)
            value = bound.at(elements)
            if value.is_Integer and int(value) % self.size:
                return (sp.Integer(-(-int(value) // self.size)),)  # ceil: exact at these sizes
            note_integer(value / self.size)
            return (elements / self.size,)
        if self.kind == "gram":
            a, b = param[-2], param[-1]
            # torch transposes the wider side first: the smaller side, at the bound sizes
            # (or for every size where sympy can tell; else the first)
            difference = bound.at(sp.expand(b - a))
            if not difference.is_number:  # b >= a taken for granted where sympy cannot tell
                note_relation(sp.Lt if difference.is_negative else sp.Ge, difference, 0)
            side = b if difference.is_negative else a
            return (side, side)
        out = list(param)
        for dim in self.dims:
            out[dim] = sp.Integer(1)
        return tuple(out)

    def describe(self) -> str:
        if self.kind == "like":
            if not self.dims:
                return "like param"
            dims = ", ".join(map(str, self.dims))
            return f"like param reduced over {dims if len(self.dims) == 1 else f'({dims})'}"
        return {
            "scalar": "scalar",
            "blocks": f"blocks of {self.size} of param",
            "gram": "gram of param",
            "fixed": f"[{self.size}]",
        }[self.kind]


@dataclass(frozen=True, slots=True)
class StateRule:
    """A state tensor per parameter the condition picks (one per optimizer if `shared`)."""

    name: str
    extent: Extent
    dtype: DType | None = None  # the precision's state dtype when None
    when: Condition | None = None
    shared: bool = False

    def applies(self, shape: Shape, bound: BoundSizes) -> bool:
        return self.when is None or self.when.holds(shape, bound)

    @property
    def plain(self) -> bool:
        return self.extent == Extent("like") and not (self.dtype or self.when or self.shared)

    def describe(self) -> str:
        parts = [self.extent.describe()]
        if self.dtype:
            parts.append(f"as {self.dtype.value}")
        if self.when:
            parts.append(f"if {self.when.describe()}")
        if self.shared:
            parts.append("one per optimizer")
        return f"{self.name} ({', '.join(parts)})"


@dataclass(frozen=True, slots=True)
class TempRule:
    """One temporary of a step, in the order the step makes them; `lifetime` says when
    it dies (`freed`: within its parameter's update; the others are loop variables)."""

    extent: Extent
    dtype: DType | None = None
    when: Condition | None = None
    lifetime: str = "freed"

    def applies(self, shape: Shape, bound: BoundSizes) -> bool:
        return self.when is None or self.when.holds(shape, bound)


@dataclass(frozen=True, slots=True)
class Optimizer:
    """An optimizer's state and step, as declared.

    `temps` are (implementation, temporaries) in the order the step makes them.
    `flops_per_element` counts the step's elementwise arithmetic, one FLOP per operation.
    `torch_class` (a `torch.optim` class name, or `module:Class` of any importable
    module) and `torch_args` are the real optimizer that verify runs; `torch_classes`
    names another class for an implementation. `takes` picks the parameters it updates;
    `rest` is the optimizer of the others (Muon's AdamW). `eager`: the constructor makes
    the state (Adagrad's), which so exists before the first step().
    """

    name: str
    description: str
    state_rules: tuple[StateRule, ...] = ()
    temps: tuple[tuple[str, tuple[TempRule, ...]], ...] = ()
    flops_per_element: int | None = None
    torch_class: str | None = None
    torch_args: tuple[tuple[str, TorchValue], ...] = ()
    torch_classes: tuple[tuple[str, str, tuple[tuple[str, TorchValue], ...]], ...] = ()
    takes: Condition | None = None
    rest: Optimizer | None = None
    eager: bool = False

    @property
    def states(self) -> tuple[str, ...]:
        """Names of the state tensors (not the scalars), this optimizer's and its rest's."""
        names = [r.name for r in self.state_rules if r.extent.kind != "scalar"]
        return tuple(dict.fromkeys([*names, *(self.rest.states if self.rest else ())]))

    @property
    def scalars(self) -> tuple[str, ...]:
        """0-dim float32 state per parameter tensor (torch's `step` counters)."""
        names = [r.name for r in self.state_rules if r.extent.kind == "scalar"]
        return tuple(dict.fromkeys([*names, *(self.rest.scalars if self.rest else ())]))

    @property
    def own_scalars(self) -> tuple[str, ...]:
        """The scalars of the parameters this optimizer itself updates."""
        return tuple(r.name for r in self.state_rules if r.extent.kind == "scalar")

    def temps_of(self, implementation: str) -> tuple[TempRule, ...]:
        return dict(self.temps).get(implementation, ())

    def keeps_last(self, implementation: str) -> bool:
        """Whether the last temporary of a parameter's update outlives it (a loop
        variable such as AdamW's `denom`, alive while the next parameter's are made)."""
        temps = self.temps_of(implementation)
        return bool(temps) and temps[-1].lifetime != "freed"

    def torch_for(self, implementation: str) -> tuple[str | None, tuple]:
        """(class, arguments) that run `implementation`: its own `torch IMPL CLASS(...)`,
        else the optimizer's `torch CLASS(...)`."""
        for impl, cls, args in self.torch_classes:
            if impl == implementation:
                return cls, args
        return self.torch_class, self.torch_args

    def owner(self, shape: Shape, bound: BoundSizes) -> Optimizer:
        """The optimizer that updates a parameter of this shape."""
        if self.takes is None or self.takes.holds(shape, bound) or self.rest is None:
            return self
        return self.rest.owner(shape, bound)

    def chain(self) -> tuple[Optimizer, ...]:
        """This optimizer and those of the parameters it leaves, in the order they step."""
        return (self, *(self.rest.chain() if self.rest else ()))

    def describe_state(self) -> str:
        rules = [r for r in self.state_rules if r.extent.kind != "scalar"]
        if all(r.plain for r in rules):
            return ", ".join(r.name for r in rules) or "no state"
        return ", ".join(r.describe() for r in rules)


def read_condition(cond, span) -> Condition | None:
    if cond is None:
        return None
    quantity, op, number = cond
    if quantity not in QUANTITIES:
        raise SpecValueError(
            f"a condition is on a parameter's {' or '.join(QUANTITIES)}, not {quantity!r}", span
        )
    return Condition(quantity, op, number)


def read_extent(shape, span) -> Extent:
    kind, *rest = shape
    if kind in ("like", "blocks", "gram"):
        target = rest[0] if kind != "blocks" else rest[1]
        if target != "param":
            raise SpecValueError(
                f"an optimizer tensor is shaped from 'param', not {target!r}", span
            )
    if kind == "like":
        return Extent("like", tuple(rest[1]))
    if kind == "blocks":
        if rest[0] <= 0:
            raise SpecValueError("a block holds at least one element", span)
        return Extent("blocks", size=rest[0])
    if kind == "fixed":
        return Extent("fixed", size=rest[0])
    return Extent(kind)


def read_dtype(name: str | None, span) -> DType | None:
    if name is None:
        return None
    dtype = DType.parse(name)
    if dtype is None:
        raise SpecValueError(DType.unknown(name), span)
    return dtype


def check_rank(extent: Extent, when: Condition | None, span) -> None:
    """A shape that reads a parameter's last sides needs a condition that it has them."""
    need = max([-d for d in extent.dims] + [2 if extent.kind == "gram" else 0])
    ranks_below = range(need)
    if need and (
        when is None
        or when.quantity != "rank"
        or any(_COMPARE[when.op](r, when.number) for r in ranks_below)
    ):
        raise SpecValueError(
            f"{extent.describe()} needs parameters of rank >= {need}: add `if rank >= {need}`",
            span,
        )
