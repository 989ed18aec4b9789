"""`--lora R`: LoRA adapters injected as PEFT injects them (`get_peft_model`).

Each targeted `Linear` of the spec is instantiated as std's `LoraLinear` instead
(specs/std/peft/lora.mspec), with the Linear's own arguments and the adapter's: the Linear
becomes its `base_layer`, beside `lora_A.default` [r, in] and `lora_B.default` [out, r].
Every parameter whose name lacks `lora_` is frozen (PEFT's `bias="none"`).

Targets are PEFT's `target_modules`, over module names with `*` for each repetition
index (`model.layers.*.self_attn.q_proj`): a plain name matches a module of that name
or ending in `.name` (`q_proj`), a glob (`*`, `?`, `[`) the whole name, and
`all-linear` every Linear but the output layer, which PEFT leaves out as the model's
`get_output_embeddings()` (a Linear named `lm_head` here).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from memspec.errors import UsageError
from memspec.names import did_you_mean

__all__ = [
    "ADAPTER_A",
    "ALL_LINEAR",
    "LINEAR",
    "LORA_LAYER",
    "Lora",
    "LoraTargets",
    "is_adapter",
    "parse_targets",
]

ALL_LINEAR = "all-linear"
LINEAR = "Linear"  # the layer LoRA wraps (torch.nn.Linear)
LORA_LAYER = "LoraLinear"  # what it becomes
OUTPUT_LAYER = "lm_head"  # PEFT's all-linear leaves the output embeddings alone
ADAPTER_A = ".lora_A.default.weight"  # one per wrapped Linear
DEFAULT_ALPHA = 8  # LoraConfig's defaults
DEFAULT_TARGETS = (ALL_LINEAR,)


def parse_targets(text: str) -> tuple[str, ...]:
    """`q_proj,v_proj` -> ("q_proj", "v_proj"); `all-linear` alone or not at all."""
    targets = tuple(t.strip() for t in text.split(",") if t.strip())
    if not targets:
        raise UsageError("--lora-targets names no module (e.g. q_proj,v_proj or all-linear)")
    if ALL_LINEAR in targets and len(targets) > 1:
        raise UsageError(f"--lora-targets {ALL_LINEAR} already targets every Linear layer")
    return targets


@dataclass(frozen=True, slots=True)
class Lora:
    """A LoRA adapter's settings (peft.LoraConfig)."""

    r: int
    alpha: int | float = DEFAULT_ALPHA
    dropout: float = 0.0
    targets: tuple[str, ...] = DEFAULT_TARGETS

    def __post_init__(self) -> None:
        if self.r < 1:
            raise UsageError(f"--lora rank must be at least 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise UsageError(f"--lora-dropout is a probability below 1, got {self.dropout}")

    def describe(self) -> str:
        targets = ", ".join(self.targets)
        if self.targets == (ALL_LINEAR,):
            targets = "every Linear but the output layer (all-linear)"
        return (
            f"r = {self.r}, lora_alpha = {self.alpha} (scaling {self.alpha / self.r:g}), "
            f"lora_dropout = {self.dropout:g}, on {targets}; float32 adapters "
            "(PEFT's autocast_adapter_dtype), every other parameter frozen"
        )


@dataclass
class LoraTargets:
    """Which Linear layers the targets pick, and which targets picked nothing."""

    lora: Lora
    hits: dict[str, int] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)  # every Linear's module name seen
    wrapped: int = 0  # Linear instances wrapped (a repeat's counts once)

    def __post_init__(self) -> None:
        self.hits = dict.fromkeys(self.lora.targets, 0)

    def targeted(self, name: str) -> bool:
        """Whether the Linear named `name` (generic: `*` per repetition) gets adapters."""
        self.names.append(name)
        matched = [t for t in self.lora.targets if _matches(t, name)]
        for target in matched:
            self.hits[target] += 1
        self.wrapped += bool(matched)
        return bool(matched)

    def check(self) -> None:
        """A target that picks no Linear is a mistake: say so, with near names."""
        for target, hits in self.hits.items():
            if hits:
                continue
            if target == ALL_LINEAR:
                raise UsageError("--lora-targets all-linear: the model has no Linear layer")
            leaves = sorted({n.rsplit(".", 1)[-1] for n in self.names})
            near = did_you_mean(target, [*leaves, *sorted(set(self.names))])
            raise UsageError(
                f"--lora-targets {target!r} matches no Linear layer (a target is a module "
                f"name or its last part, as PEFT's target_modules: q_proj; or a glob over "
                f"names with * for each repetition: model.layers.*.mlp.*){near}"
            )


def is_adapter(path: str) -> bool:
    """Whether a parameter is one of the adapters' (PEFT trains those whose name has
    `lora_`; its mark_only_lora_as_trainable)."""
    return "lora_" in path


def _matches(target: str, name: str) -> bool:
    if target == ALL_LINEAR:
        return name.rsplit(".", 1)[-1] != OUTPUT_LAYER
    if any(c in target for c in "*?["):
        return fnmatch.fnmatchcase(name, target)
    return name == target or name.endswith("." + target)
