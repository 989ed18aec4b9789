"""Shared checks of the language-feature tests: a spec against its own lowering, to the byte,
and a misuse as the CLI prints it (`file:line:col: error:`, the line, a caret, exit 2)."""

from __future__ import annotations

from memspec import compile_spec
from memspec.cli import main
from memspec.verify.compare import compare
from memspec.verify.measure import measure_step
from memspec.verify.peak import compare_peak, measure_peak


def step_counters(result) -> int:
    """Bytes of AdamW's `step` tensors: one float32 scalar per trained parameter tensor
    (a frozen one has no gradient, so the optimizer never steps it)."""
    items = [i for i in result.categories["parameters"].items if not i.note.startswith("frozen")]
    return 4 * sum(result.value(i.multiplicity) for i in items)


def assert_exact(result) -> None:
    """Every row of the step and the true peak equal PyTorch's, byte for byte."""
    tables = compare(result, measure_step(result))
    assert [(t.category, r.name) for t in tables for r in t.rows if r.difference] == []
    assert all(t.predicted == t.measured for t in tables)
    peak = compare_peak(result, measure_peak(result, result.peak.options))
    terms = {t.name: t.bytes for t in peak.terms}
    assert terms in ({}, {"AdamW step counters": step_counters(result)})
    assert peak.expected == peak.measured
    assert all(measured == expected for _, measured, expected in peak.rows)


def compile_text(text: str, **kwargs):
    return compile_spec(text, **kwargs)


def cli_error(tmp_path, text: str, capsys) -> str:
    """The CLI's stderr for a spec that must fail with a located error and exit 2."""
    path = tmp_path / "spec.mspec"
    path.write_text(text, encoding="utf-8")
    code = main(["compile", str(path), "--format", "json"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    return err.replace(str(path), "spec.mspec")
