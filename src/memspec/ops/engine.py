"""A composite op's backward as autograd's engine runs its nodes: the `BackwardMoment`s
that an op's `backward_moments` rule returns, built event by event."""

from __future__ import annotations

import sympy as sp

from memspec.ops.registry import BackwardMoment

__all__ = ["Engine"]


class Engine:
    """Memory of a composite op's backward, node by node: the temporaries alive (by
    name), the bytes of the internal saved tensors freed, and the moments at which it can
    peak (each allocation followed by a free), and the gradients it hands on."""

    def __init__(self, sums_in_place: bool):
        self.sums_in_place = sums_in_place
        self.live: dict[str, sp.Expr] = {}
        self.freed: dict[str, sp.Expr] = {}
        self.dropped: list[str] = []
        self.output_grad_dropped = False
        self.moments: list[BackwardMoment] = []
        self._grew = False

    def alloc(self, name: str, size: sp.Expr) -> None:
        self.live[name] = size
        self._grew = True

    def free(self, name: str) -> None:
        self._moment()
        del self.live[name]

    def release(self, label: str, size: sp.Expr) -> None:
        """A node that saved an internal tensor has run, and nothing else holds it."""
        self._moment()
        self.freed[label] = self.freed.get(label, 0) + size

    def drop(self, label: str) -> None:
        """The last node that saved this tensor has run."""
        self._moment()
        self.dropped.append(label)

    def drop_output_grad(self) -> None:
        self._moment()
        self.output_grad_dropped = True

    def accumulate(self, total: str, new: str) -> None:
        """The engine's InputBuffer: the first gradient of a tensor is kept; a second is
        added into it in place (then freed), or, under a TorchDispatchMode, old + new
        is a new tensor and both are freed."""
        if total not in self.live:
            self.live[total] = self.live.pop(new)
        elif self.sums_in_place:
            self.free(new)
        else:
            self.alloc(total + " + " + new, self.live[total])
            self.free(total)
            self.free(new)
            self.live[total] = self.live.pop(total + " + " + new)

    def give(self, position: int, name: str) -> None:
        """The node that made `name` has returned: it is the gradient (or a part of it)
        of the op's input at `position`, which the replay adds into the gradient that
        input has, beside the temporaries still alive."""
        self._moment()
        del self.live[name]
        self.moments.append(self._state(given=(position,)))

    def close(self) -> None:
        self._moment()

    def _moment(self) -> None:
        if self._grew:
            self.moments.append(self._state())
            self._grew = False

    def _state(self, given: tuple[int, ...] = ()) -> BackwardMoment:
        return BackwardMoment(
            sp.Add(*self.live.values()),
            tuple((k, sp.sympify(v)) for k, v in self.freed.items()),
            tuple(self.dropped),
            self.output_grad_dropped,
            given,
        )
