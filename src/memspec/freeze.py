"""`--freeze PATTERN`: parameters matched by name get requires_grad=False.

A pattern is a glob (`fnmatch`, case-sensitive) over state_dict names, as people write
them for PEFT and for `param.requires_grad_(False)` loops: `model.embed_tokens.weight`,
`model.layers.*.mlp.*`, `*norm*`. A repeat is one region of the IR, so a name is matched
with `*` for each repetition index (`model.layers.*.self_attn.q_proj.weight`): a pattern
picks every repetition of a repeated layer or none of them. A frozen parameter is
counted in the parameters (model.parameters() holds it), has no gradient and no
optimizer state, and an op whose only input needing a gradient is frozen saves nothing,
as autograd records no node for it. Behind a frozen embedding a repeat's first
repetition runs apart (`Elaborator.check_gradients`): its input needs no gradient.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

from memspec.errors import UsageError
from memspec.names import did_you_mean

__all__ = ["Freezer", "generic_name"]

_SLICE = re.compile(r"\[[^\]]*\]$")  # a split repeat's `layers[1::2]`


def generic_name(path: str, region_paths: Iterable[str]) -> str:
    """`layers.attn.w` inside the repeat `layers` -> `layers.*.attn.w`: the state_dict
    name with `*` for each repetition index (outermost region first)."""
    parts = path.split(".")
    for inserted, region in enumerate(region_paths):
        depth = len(region.split(".")) + inserted  # each earlier `*` shifts it by one
        parts[depth - 1] = _SLICE.sub("", parts[depth - 1])
        parts.insert(depth, "*")
    return ".".join(parts)


class Freezer:
    """Which parameters the patterns freeze, and which patterns froze nothing."""

    def __init__(self, patterns: tuple[str, ...]):
        self.patterns = patterns
        self.hits = dict.fromkeys(patterns, 0)
        self.names: list[str] = []

    def frozen(self, name: str) -> bool:
        self.names.append(name)
        matched = [p for p in self.patterns if fnmatch.fnmatchcase(name, p)]
        for pattern in matched:
            self.hits[pattern] += 1
        return bool(matched)

    def check(self) -> None:
        """A pattern that matches no parameter is a mistake: say so, with near names."""
        for pattern, hits in self.hits.items():
            if hits == 0:
                names = sorted(set(self.names))
                # an index written where the name has `*` (layers.0): the whole repeat
                every = re.sub(r"(?<=\.)\d+(?=\.|$)", "*", pattern)
                if every != pattern and any(fnmatch.fnmatchcase(n, every) for n in names):
                    raise UsageError(
                        f"--freeze {pattern!r} names one repetition of a repeat, which memspec "
                        f"models as one region: freeze all of them ({every!r}) or none"
                    )
                near = did_you_mean(pattern, names)
                raise UsageError(
                    f"--freeze {pattern!r} matches no parameter (names are state_dict keys "
                    f"with * for each repetition of a repeat: model.layers.*.mlp.*){near}"
                )
