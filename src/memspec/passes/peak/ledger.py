"""The memory of one replayed step: reference-counted blocks by category, and the
moments at which it can peak."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from memspec.passes.peak.moments import REPLAYED, Phase, Point, Position
from memspec.symbolic.polys import Poly, add_into

__all__ = ["Block", "Born", "Ledger"]

Born = tuple[tuple[int, int], ...]  # (region, repetition) of the replayed loops a block is in


@dataclass(slots=True)
class Block:
    size: Poly
    category: str
    refs: int
    born: Born


class Ledger:
    """Blocks alive now, their totals per category, and the moments recorded so far.

    A block is freed when its last reference goes, as a tensor's storage is. A moment is
    recorded after an op's allocations; one followed by more allocation before any free,
    in the same repetitions, cannot be the peak and is replaced by the next.
    """

    def __init__(self) -> None:
        self.blocks: dict[int, Block] = {}
        self.totals: dict[str, Poly] = {c: {} for c in REPLAYED}
        self.points: list[Point] = []
        self._freed = False  # whether a block was freed since the last moment recorded
        self._ids = itertools.count()

    def alloc(self, size: Poly, category: str, born: Born) -> int:
        """A new block holding one reference; its id."""
        bid = next(self._ids)
        self.blocks[bid] = Block(size, category, 1, born)
        add_into(self.totals[category], size)
        return bid

    def release(self, size: Poly, category: str, born: Born) -> int:
        """Memory counted from before the step that is freed now (a K/V cache's old
        tensor, which its update replaces): a block of minus `size`, never freed, so that
        every later moment holds that much less."""
        bid = self.alloc({k: -v for k, v in size.items()}, category, born)
        self._freed = True
        return bid

    def ref(self, bid: int) -> int:
        self.blocks[bid].refs += 1
        return bid

    def unref(self, bid: int | None) -> None:
        if bid is None:
            return
        block = self.blocks[bid]
        block.refs -= 1
        if block.refs == 0:
            add_into(self.totals[block.category], block.size, -1)
            del self.blocks[bid]
            self._freed = True

    def shared(self, bid: int) -> bool:
        """Whether more than one reference holds the block."""
        return self.blocks[bid].refs > 1

    def recategorize(self, bid: int, category: str) -> None:
        block = self.blocks[bid]
        add_into(self.totals[block.category], block.size, -1)
        block.category = category
        add_into(self.totals[category], block.size)

    def mark(self, phase: Phase, op_path: str, where: tuple[tuple[int, Position], ...]) -> None:
        """Record the memory now as a moment of the step."""
        point = Point(phase, op_path, where, tuple((c, dict(t)) for c, t in self.totals.items()))
        previous = self.points[-1] if self.points else None
        if previous is not None and not self._freed and previous.where == where:
            # nothing freed since the previous moment in the same repetitions: this one
            # holds all of it and more, so that one cannot be the peak
            self.points[-1] = point
        else:
            self.points.append(point)
        self._freed = False
