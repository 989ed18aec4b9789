"""IR invariants, checked by tests after every elaboration (torch.fx's Graph.lint)."""

from __future__ import annotations

from memspec.ir.graph import Graph
from memspec.ir.types import Role

__all__ = ["verify"]


def verify(graph: Graph) -> None:
    """Raise AssertionError naming the first broken invariant of `graph`."""
    for i, v in enumerate(graph.values):
        assert v.id == i, f"value {v.path} has id {v.id} at position {i}"
        base = graph.values[v.storage]
        assert base.storage == base.id, f"{v.path} views {base.path}, itself a view"
        assert v.region is None or 0 <= v.region < len(graph.regions), f"{v.path}: bad region"
        if v.role is not Role.ACTIVATION:
            assert v.storage == v.id, f"{v.role.value} {v.path} cannot be a view"
    produced: set[int] = set()
    defined = {v.id for v in graph.values if v.role is not Role.ACTIVATION}
    for op in graph.ops:
        for vid in op.inputs:
            assert vid in defined, f"op {op.path} reads value {vid} before it is defined"
        for vid in op.outputs:
            assert vid not in produced, f"value {vid} is produced twice"
            produced.add(vid)
            defined.add(vid)
    activations = {v.id for v in graph.values if v.role is Role.ACTIVATION}
    assert activations == produced, "every activation comes from exactly one op"
    for r in graph.regions:
        assert r.parent is None or r.parent < r.id, f"region {r.path} nests in a later region"
    paths = [v.path for v in graph.values]
    assert len(paths) == len(set(paths)), "value paths are unique"
