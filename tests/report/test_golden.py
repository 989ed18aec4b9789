"""Reports are byte-identical to reviewed golden files (MEMSPEC_UPDATE_GOLDEN=1 rewrites)."""

from __future__ import annotations

import pytest

from memspec import compile_spec
from tests.conftest import ROOT

GPT2_XL_B1 = ["B=1", "V=50257", "L=1024", "N=48", "D=1600", "H=25"]

CASES = {
    "cs336_lm.course": ("specs/cs336_lm.mspec", {"convention": "course"}),
    "cs336_lm.autograd": ("specs/cs336_lm.mspec", {"convention": "autograd"}),
    "cs336_lm.gpt2_xl_b1": ("specs/cs336_lm.mspec", {"set": GPT2_XL_B1}),
    "cs336_lm_swiglu.course": ("specs/cs336_lm_swiglu.mspec", {"convention": "course"}),
    "cs336_lm_swiglu.tinystories_b32": (
        "specs/cs336_lm_swiglu.mspec", {"preset": "tinystories", "set": ["B=32"],
                                        "convention": "autograd", "use": ["flash"]}),
    # every layer a checkpoint: the kept inputs, the recomputation's moments and FLOPs
    "cs336_lm_swiglu.gpt2_xl_b1_full": (
        "specs/cs336_lm_swiglu.mspec", {"preset": "gpt2_xl", "set": ["B=1"],
                                        "convention": "autograd", "recompute": "full"}),
    # what each rank holds under FSDP2 at 6 ranks (V, F and D split unevenly), mixed bf16
    "cs336_lm_swiglu.gpt2_xl_zero3_dp6": (
        "specs/cs336_lm_swiglu.mspec", {"preset": "gpt2_xl", "set": ["B=1"], "zero": 3,
                                        "dp": 6, "precision": "mixed_bf16"}),
    # DDP replicas, symbolic in DP: the reducer's buckets and a replica's true peak
    "cs336_lm_swiglu.ddp": ("specs/cs336_lm_swiglu.mspec", {"dp": 8}),
    # one tensor-parallel rank, symbolic in TP, sequence parallel (PyTorch's convention):
    # local shapes, the gathers and reduce-scatters, the loss under loss_parallel
    "cs336_lm_swiglu.tp_sp": (
        "specs/cs336_lm_swiglu.mspec", {"tp": "TP", "sp": True, "convention": "autograd"}),
}


def _compile(name, monkeypatch):
    spec, options = CASES[name]
    monkeypatch.chdir(ROOT)
    return compile_spec(spec, **options)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("fmt", ["md", "tex", "json"])
def test_report_matches_golden(name, fmt, golden, monkeypatch):
    result = _compile(name, monkeypatch)
    text = {"md": result.to_markdown, "tex": result.to_latex, "json": result.to_json}[fmt]()
    golden(f"{name}.{fmt}", text)
