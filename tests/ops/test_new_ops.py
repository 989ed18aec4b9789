"""Issue #11's ops in a compiled spec (tests/specs/new_ops.mspec), measured against a
real PyTorch step: LayerNorm2d, drop_path, chunk, group_norm, clamp, relu6_, interpolate,
pad, split, sin/cos/exp, contiguous, mse_loss, and a `repeat 0` that passes its input on.
"""

from __future__ import annotations

from memspec import compile_spec
from tests.conftest import ROOT

SPEC = ROOT / "tests" / "specs" / "new_ops.mspec"


def test_every_category_matches_pytorch():
    from memspec.verify.compare import compare
    from memspec.verify.measure import measure_step

    result = compile_spec(SPEC, convention="autograd", preset="tiny")
    tables = compare(result, measure_step(result))
    assert [(t.category, r) for t in tables for r in t.rows if r.difference] == []


def test_true_peak_matches_pytorch():
    from memspec.verify.peak import compare_peak, measure_peak

    result = compile_spec(SPEC, convention="autograd", preset="tiny")
    peak = compare_peak(result, measure_peak(result, result.peak.options))
    # equal in every category but AdamW's `step` counters (4 bytes for each of the 16
    # parameter tensors), which memspec leaves out
    assert peak.measured - peak.predicted == 4 * 16
    assert [(t.name, t.bytes) for t in peak.terms] == [("AdamW step counters", 4 * 16)]
    assert [(c, m - p) for c, m, p in peak.rows if m != p] == []
    assert peak.ok


def test_repeat_zero_has_no_parameters_and_passes_its_input_on():
    result = compile_spec(SPEC, preset="tiny")
    paths = [i.path for i in result.categories["parameters"].items]
    assert not any(p.startswith("none.") for p in paths)
    assert any(p.startswith("blocks.") for p in paths)
    without = SPEC.read_text().replace("x = none(blocks(stem(images)))",
                                       "x = blocks(stem(images))")
    other = compile_spec(without, preset="tiny")
    for name in ("parameters", "activations"):
        assert result.value(result.categories[name].bytes) == other.value(
            other.categories[name].bytes)
    assert result.value(result.peak.bytes) == other.value(other.peak.bytes)
