"""Every malformed spec in tests/errors/ gives its exact diagnostic, exit 2, no traceback.

Each `<kind>.mspec` has a `<kind>.err` holding the expected stderr (rewritten with
MEMSPEC_UPDATE_GOLDEN=1, then read before committing); the table below pins the
error class and the location, so a message edit cannot hide a moved caret.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from memspec import compile_spec, errors
from memspec.cli import main
from tests.conftest import ROOT, UPDATE

ERRORS = Path(__file__).resolve().parent / "errors"

CASES = {
    "annotation_mismatch": (errors.ShapeError, 8, 25),
    "cyclic_use_a": (errors.SpecImportError, 1, 1),
    "division_by_zero": (errors.SpecValueError, 2, 13),
    "duplicate_definition": (errors.NameResolutionError, 2, 1),
    "expect_failed": (errors.ExpectError, 8, 1),
    "huge_constant": (errors.SpecValueError, 2, 11),
    "missing_use": (errors.SpecImportError, 1, 1),
    "no_model": (errors.NameResolutionError, 1, 1),
    "rearrange_error": (errors.ShapeError, 6, 13),
    "recursive_layer": (errors.SpecValueError, 3, 5),
    "shape_mismatch": (errors.ShapeError, 8, 22),
    "syntax_error": (errors.SpecSyntaxError, 7, 5),
    "unknown_layer": (errors.NameResolutionError, 4, 5),
    "unknown_name": (errors.NameResolutionError, 7, 20),
    "unknown_name_suggestion": (errors.NameResolutionError, 5, 18),
    "unknown_op_kind": (errors.SpecValueError, 3, 5),
    "unknown_policy": (errors.UsageError, 7, 9),
    "unknown_recompute": (errors.UsageError, 7, 9),
    "recompute_unknown_call": (errors.SpecValueError, 8, 5),
    "recompute_unknown_aten": (errors.SpecValueError, 9, 5),
    "wrong_arg_count": (errors.SpecValueError, 4, 30),
    "empty": (errors.NameResolutionError, 1, 1),
    "undefined_dim_in_shape": (errors.NameResolutionError, 3, 18),
    "duplicate_member": (errors.NameResolutionError, 4, 5),
    "symbolic_power": (errors.SpecValueError, 3, 15),
    "deep_expression": (errors.SpecValueError, 2, 13),
    "unknown_dtype": (errors.ShapeError, 3, 14),
    "layer_called_directly": (errors.NameResolutionError, 5, 30),
    "not_a_tensor": (errors.ShapeError, 5, 21),
    "route_not_a_bank": (errors.SpecValueError, 6, 62),
    "unpack_needed": (errors.SpecValueError, 6, 15),
    "unknown_function": (errors.NameResolutionError, 7, 20),
    "unknown_op_argument": (errors.NameResolutionError, 7, 20),
}


def test_every_error_spec_has_a_case():
    specs = {p.stem for p in ERRORS.glob("*.mspec")} - {"cyclic_use_b"}
    assert specs == set(CASES)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_error_message_is_exact(kind, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = os.path.relpath(ERRORS / f"{kind}.mspec", ROOT)
    code = main(["compile", spec, "--format", "json"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert "Traceback" not in captured.err
    expected_path = ERRORS / f"{kind}.err"
    if UPDATE:
        expected_path.write_text(captured.err, encoding="utf-8")
    assert captured.err == expected_path.read_text(encoding="utf-8")


@pytest.mark.parametrize("kind", sorted(CASES))
def test_error_class_and_location(kind, monkeypatch):
    monkeypatch.chdir(ROOT)
    cls, line, col = CASES[kind]
    with pytest.raises(errors.MemspecError) as info:
        compile_spec(Path(os.path.relpath(ERRORS / f"{kind}.mspec", ROOT)))
    assert type(info.value) is cls
    assert (info.value.span.line, info.value.span.col) == (line, col)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "Q=4"], "memspec: error: --set Q=4: unknown symbol 'Q'"),
        (["--set", "batch_sise=4"], "did you mean 'batch_size'?"),
        (["--set", "B=-1"], "memspec: error: --set B=-1: B must be positive, got -1"),
        (["--set", "B=0"], "memspec: error: --set B=0: B must be positive, got 0"),
        (["--set", "B=2.5"], "memspec: error: --set B=2.5: B must be an integer, got '2.5'"),
        (["--set", "B"], "memspec: error: --set 'B': expected NAME=VALUE"),
        (["--preset", "nope"], "memspec: error: unknown preset 'nope' (this spec has: gpt2_xl)"),
        (["--preset", "gpt2_x"], "unknown preset 'gpt2_x'; did you mean 'gpt2_xl'?"),
        (["--convention", "corse"], "unknown convention 'corse'; did you mean 'course'?"),
        (["--set", "H=7"], "the spec assumes 2*H divides D, which fails with these values"),
    ],
)
def test_bad_command_line_values(args, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = main(["compile", "specs/cs336_lm.mspec", "--set", "D=1600", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_missing_spec_file(capsys, tmp_path):
    code = main(["compile", str(tmp_path / "absent.mspec")])
    assert code == 2
    assert "no such file" in capsys.readouterr().err


def test_binary_and_non_utf8_files(capsys, tmp_path):
    binary = tmp_path / "b.mspec"
    binary.write_bytes(b"dim a\0 as B")
    latin = tmp_path / "l.mspec"
    latin.write_bytes("dim d_mod\xe8le as D".encode("latin-1"))
    assert main(["compile", str(binary)]) == 2
    assert "binary file" in capsys.readouterr().err
    assert main(["compile", str(latin)]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_layer_nesting_limit(capsys, tmp_path):
    # 80 layers, each holding the next: deeper than MAX_INSTANCE_DEPTH (64).
    layers = "\n".join(
        f"layer L{i}(d) {{ inner = L{i + 1}(d)\n forward(x: [d]) {{ return inner(x) }} }}"
        for i in range(80)
    )
    spec = tmp_path / "deep.mspec"
    spec.write_text(
        f"dim d_model as D\n{layers}\nlayer L80(d) {{ param w: [d]\n"
        " forward(x: [d]) { return x * w } }\n"
        "model M { top = L0(D)\n forward(x: [D]) { return top(x) } }\n"
    )
    assert main(["compile", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "layers nest more than 64 deep" in err
    assert "Traceback" not in err


def test_file_size_limit(capsys, tmp_path):
    spec = tmp_path / "big.mspec"
    spec.write_text("# padding\n" * 120_000)  # 1.2 MB of comments
    assert main(["compile", str(spec)]) == 2
    assert "file too large" in capsys.readouterr().err


def test_unknown_file_in_use_is_located_in_the_user_file(capsys, tmp_path):
    spec = tmp_path / "uses.mspec"
    spec.write_text('use "missing/nowhere.mspec"\n')
    assert main(["compile", str(spec)]) == 2
    assert ":1:1: error: " in capsys.readouterr().err
