"""Training policies as frozen rule sets, read from their declarations in spec files.

Precisions, optimizers and activation conventions are named data declared in the
standard library (`specs/std/train.mspec`) and extensible by users; this module only
checks them and gives them types.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from memspec.errors import SpecValueError
from memspec.ir.types import DType
from memspec.names import did_you_mean
from memspec.ops import REGISTRY, lookup
from memspec.ops.registry import OpKind
from memspec.optimizers import (
    LIFETIMES,
    Optimizer,
    StateRule,
    TempRule,
    TorchValue,
    check_rank,
    read_condition,
    read_dtype,
    read_extent,
)
from memspec.scaler import LossScaler
from memspec.syntax import decls as d

__all__ = [
    "IMPLEMENTATIONS",
    "CastRule",
    "Convention",
    "CountRule",
    "Optimizer",
    "Precision",
    "check_convention_names",
    "read_convention",
    "read_optimizer",
    "read_precision",
]

_PRECISION_ROLES = ("param", "master", "grad", "state", "activation", "buffer")


@dataclass(frozen=True, slots=True)
class CastRule:
    """Under torch.autocast, the float inputs of `ops` (op names) are cast to `dtype`;
    None: to the widest float dtype among them (autocast's promote list)."""

    dtype: DType | None
    ops: tuple[str, ...]

    def describe(self) -> str:
        to = self.dtype.value if self.dtype else "the widest float dtype among them"
        return f"inputs of {', '.join(self.ops)} cast to {to}"


@dataclass(frozen=True, slots=True)
class Precision:
    """The dtype of each kind of tensor; `master` is a float32 copy kept by the optimizer.
    `casts`: autocast's op lists; with any, the forward runs under torch.autocast in
    `autocast`, the 16-bit dtype they cast to. `scaler`: the loss scaler (fp16's)."""

    name: str
    param: DType
    grad: DType
    state: DType
    activation: DType
    buffer: DType
    master: DType | None = None
    description: str = ""
    casts: tuple[CastRule, ...] = ()
    scaler: LossScaler | None = None

    @property
    def autocast(self) -> DType | None:
        """The dtype torch.autocast runs in, or None without autocast."""
        low = [r.dtype for r in self.casts if r.dtype is not None and r.dtype.itemsize == 2]
        return low[0] if low else None

    # A parameter stored in a dtype other than `param` (PEFT's float32 LoRA adapters on a
    # bfloat16 model, `param w: float32[...]`) is trained as torch trains it: its
    # gradient and optimizer state in its own dtype, and no master copy.
    def grad_for(self, dtype: DType) -> DType:
        """The dtype of the gradient of a parameter stored in `dtype`."""
        return self.grad if dtype == self.param else dtype

    def state_for(self, dtype: DType) -> DType:
        """The dtype of the optimizer state of a parameter stored in `dtype`."""
        return self.state if dtype == self.param else dtype

    def master_for(self, dtype: DType) -> DType | None:
        """The dtype of the master copy of a parameter stored in `dtype`, if it has one."""
        return self.master if dtype == self.param else None

    def cast_rule(self, op: str) -> CastRule | None:
        return next((r for r in self.casts if op in r.ops), None)

    def describe(self) -> str:
        parts = [
            f"{self.description}: param {self.param.value}"
            if self.description
            else (f"param {self.param.value}")
        ]
        if self.master:
            parts.append(f"master {self.master.value}")
        parts += [
            f"grad {self.grad.value}",
            f"state {self.state.value}",
            f"activation {self.activation.value}",
        ]
        parts += [r.describe() for r in self.casts]
        if self.scaler is not None:
            parts.append(self.scaler.describe())
        return "; ".join(parts)


# How torch.optim runs a step (its `foreach`/`fused` flags): which tensors exist at once.
IMPLEMENTATIONS = {
    "for_loop": "one parameter at a time (torch's default on the CPU)",
    "foreach": "every parameter at once, with torch._foreach_* ops (torch's default on CUDA)",
    "fused": "one fused kernel per group, without temporaries",
}


@dataclass(frozen=True, slots=True)
class CountRule:
    """One rule of a convention: `what` is 'output' or 'saved'; it picks ops (and, by
    name, layer and fn calls) by name or ops by kind; with neither, every op."""

    what: str
    names: tuple[str, ...] = ()
    kinds: tuple[OpKind, ...] = ()

    def picks(self, op: str, *calls: str) -> bool:
        """Whether the rule picks primitive `op`, applied inside the calls `calls`."""
        if not self.names and not self.kinds:
            return True
        return any(c in self.names for c in (op, *calls)) or lookup(op).kind in self.kinds

    def picks_call(self, callee: str) -> bool:
        """Whether the rule picks a call of layer or fn `callee` (kinds pick only ops)."""
        return (not self.names and not self.kinds) or callee in self.names

    def describe(self) -> str:
        if self.kinds:
            kinds = ", ".join(k.value for k in self.kinds)
            if self.what == "output":
                return f"the output of each op of kind {kinds}, once per value"
            listed = f"the ops of kind {kinds}"
        else:
            listed = ", ".join(self.names) if self.names else "every op"
            if self.what == "output":
                return f"the output of each call of {listed}, once per value"
        return (
            f"every tensor that PyTorch's autograd saves for backward in {listed}, once per storage"
        )


@dataclass(frozen=True, slots=True)
class Convention:
    """Which tensors count as activations. Output rules count the value a picked layer,
    fn or op returns; saved rules count what the picked ops keep for backward (PyTorch's
    autograd)."""

    name: str
    description: str
    rules: tuple[CountRule, ...]

    def describe(self) -> str:
        """What the convention counts, as a sentence."""
        return "Counts " + "; and ".join(rule.describe() for rule in self.rules)


def read_precision(decl: d.DeclPrecision) -> Precision:
    dtypes: dict[str, DType] = {}
    for role, dtype_name, span in decl.rules:
        if role not in _PRECISION_ROLES:
            raise SpecValueError(
                f"unknown precision role {role!r}; expected one of {', '.join(_PRECISION_ROLES)}",
                span,
            )
        dtype = DType.parse(dtype_name)
        if dtype is None:
            raise SpecValueError(DType.unknown(dtype_name), span)
        dtypes[role] = dtype
    for role in ("param", "grad", "state", "activation"):
        if role not in dtypes:
            raise SpecValueError(
                f"precision {decl.name} does not give a dtype for {role}", decl.span
            )
    return Precision(
        decl.name,
        dtypes["param"],
        dtypes["grad"],
        dtypes["state"],
        dtypes["activation"],
        # whatever casts the parameters (module.to, .half(), .bfloat16()) casts the float
        # buffers with them; FSDP2's MixedPrecisionPolicy alone does not (verify casts them)
        dtypes.get("buffer", dtypes["param"]),
        dtypes.get("master"),
        decl.description,
        _cast_rules(decl),
        _scaler(decl, dtypes["grad"]),
    )


def _scaler(decl: d.DeclPrecision, grad: DType) -> LossScaler | None:
    """`scaler CLASS(ARGS)`: at most one, and gradients it can unscale (GradScaler
    refuses float16 ones)."""
    if not decl.scalers:
        return None
    first, *more = decl.scalers
    if more:
        raise SpecValueError(f"precision {decl.name} names a loss scaler twice", more[0].span)
    if grad is DType.float16:
        raise SpecValueError(
            f"precision {decl.name}: GradScaler refuses float16 gradients ('Attempting to "
            "unscale FP16 gradients'); keep grad float32 and cast under autocast",
            first.span,
        )
    return LossScaler(first.torch_class, _torch_args(first.args, first.span))


def _cast_rules(decl: d.DeclPrecision) -> tuple[CastRule, ...]:
    """`cast DTYPE of OP, ...`: every op named exists and is listed once; one 16-bit dtype."""
    rules, seen, low = [], set(), set()
    for word, dtype_name, ops, span in decl.casts:
        if word != "cast":
            raise SpecValueError(f"expected `cast DTYPE of OP, ...`, not {word!r}", span)
        dtype = None if dtype_name == "widest" else DType.parse(dtype_name)
        if dtype_name != "widest" and (dtype is None or not dtype.is_float):
            raise SpecValueError(
                f"autocast casts to a float dtype or `widest`, not {dtype_name!r}", span
            )
        if dtype is not None and dtype.itemsize == 2:
            low.add(dtype)
        for op in ops:
            if op not in REGISTRY:
                hint = did_you_mean(op, sorted(REGISTRY))
                raise SpecValueError(f"cast rule names no op {op!r}{hint}", span)
            if op in seen:
                raise SpecValueError(f"op {op!r} is in two cast rules", span)
            seen.add(op)
        rules.append(CastRule(dtype, ops))
    if rules and len(low) != 1:
        raise SpecValueError(
            f"precision {decl.name}: autocast casts to one 16-bit dtype (bfloat16 or "
            "float16) and float32",
            decl.span,
        )
    return tuple(rules)


def read_optimizer(decl: d.DeclOptimizer, table: dict | None = None) -> Optimizer:
    """An optimizer from its declaration; `table` (the declared optimizers by name)
    resolves `else NAME`."""
    states = []
    for name, shape, dtype, cond, flag, span in decl.states:
        extent, when = read_extent(shape, span), read_condition(cond, span)
        check_rank(extent, when, span)
        if flag not in (None, "shared"):
            raise SpecValueError(f"a state is 'shared' (one per optimizer), not {flag!r}", span)
        if extent.kind == "scalar" and (dtype or when or flag):
            raise SpecValueError("a scalar state is torch's float32 step counter, as it is", span)
        states.append(StateRule(name, extent, read_dtype(dtype, span), when, flag == "shared"))
    temps: dict[str, list[TempRule]] = {}
    for impl, count, shape, dtype, cond, life, span in decl.temps:
        if impl not in IMPLEMENTATIONS:
            raise SpecValueError(
                f"unknown optimizer implementation {impl!r}; expected one of "
                f"{', '.join(IMPLEMENTATIONS)}",
                span,
            )
        if life not in LIFETIMES:
            raise SpecValueError(
                f"a step's last temporary is {', '.join(map(repr, LIFETIMES))}, not {life!r}",
                span,
            )
        extent, when = read_extent(shape, span), read_condition(cond, span)
        check_rank(extent, when, span)
        rule = TempRule(extent, read_dtype(dtype, span), when)
        temps.setdefault(impl, []).extend([rule] * (count - 1) + [replace(rule, lifetime=life)])
    flops = None
    for count, unit, span in decl.flops:
        if unit != "element":
            raise SpecValueError(f"optimizer flops are counted 'per element', not {unit!r}", span)
        if flops is not None:
            raise SpecValueError(f"optimizer {decl.name} gives its flops twice", span)
        flops = count
    classes: dict[str | None, tuple[str, tuple]] = {}
    for impl, cls, args, span in decl.torch:
        if impl is not None and impl not in IMPLEMENTATIONS:
            raise SpecValueError(f"unknown optimizer implementation {impl!r}", span)
        if impl in classes:
            raise SpecValueError(f"optimizer {decl.name} names its torch class twice", span)
        classes[impl] = (cls, _torch_args(args, span))
    torch_class, torch_args = classes.pop(None, (None, ()))
    takes = rest = None
    for cond, span in decl.params:
        if takes is not None:
            raise SpecValueError(f"optimizer {decl.name} picks its parameters twice", span)
        takes = read_condition(cond, span)
    for name, span in decl.rest:
        if rest is not None or table is None or name not in table or name == decl.name:
            known = ", ".join(sorted(n for n in (table or {}) if n != decl.name))
            raise SpecValueError(
                f"optimizer {decl.name}: no other optimizer {name!r} for the rest of the "
                f"parameters (known: {known})",
                span,
            )
        rest = read_optimizer(table[name], {k: v for k, v in table.items() if k != decl.name})
    eager = False
    for when, span in decl.made:
        if when not in ("init", "step"):
            raise SpecValueError(
                f"an optimizer's state is made at `init` (by its constructor) or at `step` "
                f"(by the first step(), the default), not {when!r}",
                span,
            )
        eager = when == "init"
    if (takes is None) != (rest is None):
        raise SpecValueError(
            f"optimizer {decl.name}: `params if ...` and `else OPTIMIZER` come together",
            decl.span,
        )
    return Optimizer(
        decl.name,
        decl.description,
        tuple(states),
        tuple((impl, tuple(rules)) for impl, rules in temps.items()),
        flops,
        torch_class,
        torch_args,
        tuple((impl, cls, args) for impl, (cls, args) in classes.items()),
        takes,
        rest,
        eager,
    )


def _torch_args(args, span) -> tuple[tuple[str, TorchValue], ...]:
    seen: set[str] = set()
    out = []
    for key, value in args:
        if key in seen:
            raise SpecValueError(f"torch argument {key!r} is given twice", span)
        seen.add(key)
        out.append((key, _torch_value(value, span)))
    return tuple(out)


def _torch_value(value, span) -> TorchValue:
    if isinstance(value, tuple):
        return tuple(_torch_value(v, span) for v in value)
    if isinstance(value, str):  # a bare name: only the two booleans are values
        if value not in ("true", "false"):
            raise SpecValueError(
                f"a torch argument is a number, true, false or a tuple, not {value!r}", span
            )
        return value == "true"
    return value


def read_convention(decl: d.DeclConvention) -> Convention:
    rules = []
    for what, names, kinds, span in decl.rules:
        if what not in ("output", "saved"):
            raise SpecValueError(f"a convention counts 'output' or 'saved', not {what!r}", span)
        rules.append(CountRule(what, names, tuple(_op_kind(k, span) for k in kinds)))
    return Convention(decl.name, decl.description, tuple(rules))


def check_convention_names(decl: d.DeclConvention, known: set[str]) -> None:
    """A name a convention counts must be a layer, fn or op of the program: a misspelt
    one would count nothing, silently."""
    for _, names, _, span in decl.rules:
        for name in names:
            if name != "*" and name not in known:
                hint = did_you_mean(name, sorted(known))
                raise SpecValueError(
                    f"convention {decl.name}: {name!r} is no layer, fn or op of this spec{hint}",
                    span,
                )


def _op_kind(name: str, span) -> OpKind:
    try:
        return OpKind(name)
    except ValueError:
        kinds = [k.value for k in OpKind]
        hint = did_you_mean(name, kinds)
        raise SpecValueError(
            f"unknown op kind {name!r}{hint} (kinds: {', '.join(kinds)})", span
        ) from None
