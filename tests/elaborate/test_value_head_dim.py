"""std attention with a value head size of its own (DeepSeek's MLA: q/k 24, v 16): the
output takes v's head size; torch's CPU flash kernel refuses it, so SDPA takes its math
path (decided at the bound sizes, assumed where they are symbolic); `--use flash` is a
located error. Every path verifies against torch to the byte."""

from __future__ import annotations

import pytest

from memspec import compile_spec
from memspec.errors import MemspecError
from tests.conftest import ROOT
from tests.elaborate.exact import assert_exact

SPEC = ROOT / "tests" / "specs" / "mla.mspec"


def op_names(result) -> list[str]:
    return [op.op for op in result.graph.ops]


@pytest.mark.parametrize("use", [(), ("math",), ("eager",)], ids=lambda u: ",".join(u) or "sdpa")
def test_value_heads_of_their_own_verify_exactly(use):
    result = compile_spec(SPEC, use=use, convention="autograd")
    assert "flash_attention" not in op_names(result)
    assert_exact(result)


def test_sdpa_takes_its_math_path_when_the_head_sizes_differ():
    ops = op_names(compile_spec(SPEC, convention="autograd"))
    assert "softmax" in ops and "flash_attention" not in ops
    # equal head sizes: the fused kernel, as before
    same = op_names(compile_spec(SPEC, set={"E": 24}, convention="autograd"))
    assert "flash_attention" in same and "softmax" not in same


def test_the_fused_kernel_refuses_value_heads_of_their_own():
    with pytest.raises(MemspecError, match="q's head size Q and v's E differ"):
        compile_spec(SPEC, use=("flash",))
