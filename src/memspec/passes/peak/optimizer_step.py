"""The moments of `optimizer.step()`: parameters, every gradient, the optimizer state,
what is still alive of the forward (the batch and the loss), and the step's
temporaries. A `for_loop` optimizer updates one parameter at a time (one moment per
parameter shape: its temporaries and the previous parameter's `denom`); `foreach` holds
the temporaries of every parameter at once."""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp

from memspec.config import TrainConfig
from memspec.ir.sizes import BoundSizes
from memspec.ir.types import numel
from memspec.optimizers import Optimizer
from memspec.passes.parameters import trained_items
from memspec.passes.peak.moments import Phase, Point
from memspec.passes.results import CategoryResult, LineItem
from memspec.policies import Precision
from memspec.symbolic.polys import Poly, add_into

__all__ = ["STEPPED", "own_state", "repetition_groups", "state_before", "step_moments"]


def module_order(params: tuple[LineItem, ...]) -> tuple[LineItem, ...]:
    """The parameters (listed as declared) in `nn.Module.parameters()` order: modules in
    pre-order, each module's own parameters before its submodules' (torchvision's ViT
    declares `class_token` after `conv_proj`, and updates it first)."""
    first: dict[str, int] = {}  # a module path -> when it first appeared among its siblings
    for position, item in enumerate(params):
        parts = item.path.split(".")
        for depth in range(1, len(parts)):
            first.setdefault(".".join(parts[:depth]), position)

    def key(pair: tuple[int, LineItem]) -> tuple[tuple[int, int], ...]:
        position, item = pair
        parts = item.path.split(".")
        modules = tuple((1, first[".".join(parts[: depth + 1])]) for depth in range(len(parts) - 1))
        return (*modules, (0, position))  # own tensors (0) before submodules (1)

    return tuple(item for _, item in sorted(enumerate(params), key=key))


def _update_order(params: tuple[LineItem, ...]) -> list[LineItem]:
    """The parameters in the order torch.optim updates them: module order, each run of a
    repeated region's parameters twice (the first repetition, then one that follows a
    repetition, as all the others do)."""
    order = []
    for group in repetition_groups(module_order(params)):
        order += group * (2 if group[0].regions and len(group) > 1 else 1)
    return order


def repetition_groups(params: tuple[LineItem, ...]) -> list[list[LineItem]]:
    """Runs of consecutive parameters of the same repeat regions (one block's)."""
    groups: list[list[LineItem]] = []
    for item in params:
        if groups and groups[-1][0].regions == item.regions:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def _loop(
    optimizer: Optimizer,
    params: list[LineItem],
    impl: str,
    bound: BoundSizes,
    precision: Precision,
    measure: Callable[[sp.Expr], Poly],
) -> list[tuple[str, Poly]]:
    """A loop over parameters (for_loop): at each temporary made, this parameter's so
    far and the loop variables of earlier parameters not yet rebound."""
    rules = optimizer.temps_of(impl)
    carried: dict[int, sp.Expr] = {}  # rule index -> the bytes its variable still holds
    moments = []
    for item in params:
        dtype = precision.state_for(item.dtype)
        made = [k for k, rule in enumerate(rules) if rule.applies(item.shape, bound)]
        free_after = {}  # a carried variable -> the position after which it is rebound
        for k in carried:
            if k in made:
                life = rules[k].lifetime
                position = {"until first": 0, "until last": len(made) - 1}
                free_after[k] = position.get(life, made.index(k))
        own = sp.Integer(0)
        for position, k in enumerate(made):
            rule = rules[k]
            own += numel(rule.extent.shape(item.shape, bound)) * (rule.dtype or dtype).itemsize
            alive = [size for j, size in carried.items() if free_after.get(j, position) >= position]
            moments.append((f"updating {item.path}", measure(own + sum(alive, sp.Integer(0)))))
        for k in free_after:
            del carried[k]
        for k in made:
            if rules[k].lifetime != "freed":
                rule = rules[k]
                shape = rule.extent.shape(item.shape, bound)
                carried[k] = numel(shape) * (rule.dtype or dtype).itemsize
    return moments


# a categories key: the parameters one rank's optimizer steps, in its order (a
# ZeroRedundancyOptimizer rank's own, largest first), where it is not every trained one
STEPPED = "stepped"


def _members(config: TrainConfig, categories: dict[str, CategoryResult], bound: BoundSizes):
    """Each optimizer of the chain (Muon's, then AdamW's for the rest) that has
    parameters to update, with them and whether they are in the order it updates them;
    they step in turn. Frozen parameters take no step."""
    if STEPPED in categories:
        yield config.optimizer, list(categories[STEPPED].items), True
        return
    params = trained_items(categories["parameters"].items)
    for optimizer in config.optimizer.chain():
        own = [i for i in params if config.optimizer.owner(i.shape, bound) is optimizer]
        if own:
            yield optimizer, own, False


def own_state(
    config: TrainConfig, optimizer: Optimizer, own: list[LineItem], bound: BoundSizes
) -> sp.Expr:
    """The bytes of the state `optimizer` makes for its parameters `own` (a shared
    tensor once; step counters are not counted, as in the optimizer state)."""
    total, shared = sp.Integer(0), set()
    for item in own:
        for rule in optimizer.state_rules:
            if rule.extent.kind == "scalar" or not rule.applies(item.shape, bound):
                continue
            if rule.shared and rule.name in shared:
                continue
            shared.add(rule.name)
            size = numel(rule.extent.shape(item.shape, bound))
            size *= (rule.dtype or config.precision.state_for(item.dtype)).itemsize
            total += size if rule.shared else size * item.multiplicity
    return total


def state_before(
    config: TrainConfig,
    categories: dict[str, CategoryResult],
    bound: BoundSizes,
    measure: Callable[[sp.Expr], Poly],
) -> Poly:
    """The optimizer state before a first step(): all of it but what step() makes (the
    state of every optimizer not declared `state at init`) and a loss scaler's, which
    its first scale() makes."""
    state = dict(measure(categories["optimizer_state"].bytes))
    for optimizer, own, _ in _members(config, categories, bound):
        if not optimizer.eager:
            add_into(state, measure(own_state(config, optimizer, own, bound)), -1)
    if config.precision.scaler is not None:
        add_into(state, measure(sp.Integer(config.precision.scaler.state_bytes)), -1)
    return state


def _temporaries(
    config: TrainConfig,
    optimizer: Optimizer,
    own: list[LineItem],
    impl: str,
    bound: BoundSizes,
    measure: Callable[[sp.Expr], Poly],
    ordered: bool = False,
) -> list[tuple[str, Poly]]:
    """(which parameter is being updated, the step's temporaries then), per moment of
    one optimizer's step; `ordered`: `own` is in update order already."""
    rules = optimizer.temps_of(impl)
    if not rules:
        return [("", {})]
    if impl != "foreach":
        return _loop(
            optimizer,
            own if ordered else _update_order(tuple(own)),
            impl,
            bound,
            config.precision,
            measure,
        )
    every = sp.Integer(0)
    for item in own:
        for rule in rules:
            if rule.applies(item.shape, bound):
                shape = rule.extent.shape(item.shape, bound)
                every += item.multiplicity * numel(shape) * (rule.dtype or item.dtype).itemsize
    return [("every parameter at once", measure(sp.expand(every)))]


def step_moments(
    config: TrainConfig,
    categories: dict[str, CategoryResult],
    impl: str,
    point: Point,
    fixed: dict[str, Poly],
    state: Poly,
    measure: Callable[[sp.Expr], Poly],
    beyond: Poly,
    bound: BoundSizes,
    before: Poly | None = None,
) -> list[tuple[Phase, str, str, dict[str, Poly]]]:
    """(phase, where, optimizer, memory by category) of each moment of the step; `point`
    is the replay's moment after backward, `fixed` the parameters' and buffers' bytes,
    `state` the optimizer state's, `beyond` what gradients that are views of larger
    ones hold more. `before`: in a first step, the state before it (`state_before`);
    each optimizer of a chain then makes its own as it steps. A loss scaler unscales
    each optimizer's gradients before it steps; its scalars are counted with the
    activations, beside the loss they come from."""
    memory = dict(point.memory)
    grads_all = dict(measure(categories["gradients"].bytes))
    add_into(grads_all, beyond)
    scaler = config.precision.scaler
    first_step = before is not None
    made = dict(before if first_step else state)
    if first_step and scaler is not None:  # its first scale() made it, before the step
        add_into(made, measure(sp.Integer(scaler.state_bytes)))

    def moment(temp: Poly, scalars: int) -> dict[str, Poly]:
        opt = dict(made)
        add_into(opt, temp)
        activations = dict(memory["activations"])
        add_into(activations, measure(sp.Integer(scalars)))
        return {
            **fixed,
            "gradients": dict(grads_all),
            "optimizer_state": opt,
            "activations": activations,
            "temporaries": dict(memory["temporaries"]),
        }

    out, seen = [], set()
    for member, (optimizer, own, ordered) in enumerate(_members(config, categories, bound)):
        held = 0
        if scaler is not None:
            where = f"scaler.unscale_ of {optimizer.name}'s gradients"
            unscaling = moment({}, scaler.unscaling(member))
            out.append((Phase.UNSCALE, where, optimizer.name, unscaling))
            held = scaler.stepping(member, impl == "fused")
        if first_step and not optimizer.eager:  # its step() makes its state first
            add_into(made, measure(own_state(config, optimizer, own, bound)))
        for where, temp in _temporaries(config, optimizer, own, impl, bound, measure, ordered):
            key = (held, frozenset(temp.items()), frozenset(made.items()))
            if key not in seen:  # a moment like one before it adds no candidate
                seen.add(key)
                out.append((Phase.OPTIMIZER_STEP, where, optimizer.name, moment(temp, held)))
    return out or [(Phase.OPTIMIZER_STEP, "", "", moment({}, 0))]
