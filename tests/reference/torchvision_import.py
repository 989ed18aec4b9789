"""torchvision beside the CPU build of torch, for the reference tests only.

The registry's torchvision 0.28.0 wheel (the release that pins torch 2.13.0) is built for
CUDA: its C extension (`torchvision/_C.so`) needs `libtorch_cuda.so` and does not load
beside the CPU torch. `import torchvision` then stops in `torchvision/_meta_registrations.py`,
whose `@torch.library.register_fake("torchvision::nms")` (and `qnms`) needs the op schemas
that `_C.so` would have defined. The models (ViT, ResNet) are pure Python and never call
those ops, so where the extension does not load, the two schemas are defined here with no
kernel and torchvision imports; a call of `torchvision.ops.nms` would still fail, as it
should. Where the extension loads (a CPU or matching CUDA build), nothing is defined.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

# Kept at module level: a torch.library.Library's definitions live as long as the object.
_SCHEMAS: list[torch.library.Library] = []


def import_torchvision() -> ModuleType:
    """torchvision, importable whether or not its C extension loads."""
    if "torchvision" not in sys.modules and not _extension_loads():
        for op in ("nms", "qnms"):
            if not _defined(op):
                library = torch.library.Library("torchvision", "FRAGMENT")
                library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                _SCHEMAS.append(library)
    return importlib.import_module("torchvision")


def _defined(op: str) -> bool:
    """Whether `torchvision::op` has a schema (an import hook may have defined it)."""
    try:
        getattr(torch.ops.torchvision, op)
    except (AttributeError, RuntimeError):
        return False
    return True


def _extension_loads() -> bool:
    """Whether torchvision's `_C` extension loads (then it defines its ops itself)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    for library in Path(spec.origin).parent.glob("_C.*"):
        try:
            torch.ops.load_library(str(library))
        except OSError:
            return False
        return True
    return False
