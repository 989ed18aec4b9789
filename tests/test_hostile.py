"""Hostile and careless input, by class (issue 16): every case ends in the right number or
a clear refusal (exit 2, a message, a location where the input has one), never a silent
wrong answer and never a traceback. Fix the class, not the example: each case stands for
others like it."""

from __future__ import annotations

import json
import re

import pytest

from memspec.cli import main

from .conftest import ROOT

SMALL = """use std
dim batch_size as B
dim d_model as D
model M {{
    fc = Linear(D, {out})
    forward(x: [B, D], y: [B, D]) {{
        return mse_loss(fc(x), {target})
    }}
}}
"""
PLAIN = SMALL.format(out="D", target="y")


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own refusals
        code = exit_.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err
    return code, out, err


def _spec(tmp_path, text: str, name: str = "m.mspec") -> str:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return str(path)


# --- silently wrong results: names that select nothing, sizes that cannot be -----------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--use", "flsh"], "--use flsh: no fn or layer of this spec has a variant 'flsh'; "
         "did you mean 'flash'?"),
        (["--set", "B=4", "--set", "batch_size=8"], "B is already set to 4"),
        (["--convention", "corse"], "unknown convention 'corse'; did you mean 'course'?"),
        (["--precision", "fp23"], "unknown precision 'fp23'"),
    ],
)  # fmt: skip
def test_a_name_that_selects_nothing_is_refused(capsys, monkeypatch, flags, message):
    monkeypatch.chdir(ROOT)
    code, _, err = _run(capsys, ["compile", "specs/cs336_lm.mspec", "--preset", "gpt2_xl",
                                 "--no-cache", *flags])  # fmt: skip
    assert code == 2 and message in err


def test_a_misspelt_variant_in_the_train_block_is_refused_where_written(capsys, tmp_path):
    text = (ROOT / "specs/cs336_lm.mspec").read_text()
    text = text.replace("train {", "train {\n    use flsh", 1)
    assert "use flsh" in text
    spec = _spec(tmp_path, text.replace('use "', 'use "' + str(ROOT / "specs") + "/"))
    code, _, err = _run(capsys, ["compile", spec, "--no-cache"])
    assert code == 2
    assert re.search(r"m\.mspec:\d+:\d+: error: use flsh: no fn or layer", err)
    assert "did you mean 'flash'?" in err


def test_a_convention_naming_no_layer_is_refused(capsys, tmp_path):
    text = PLAIN + 'convention mine "misspelt" {\n    count output of Linaer\n}\n'
    code, _, err = _run(capsys, ["compile", _spec(tmp_path, text), "--no-cache"])
    assert code == 2
    assert "m.mspec:11:5: error: convention mine: 'Linaer' is no layer, fn or op" in err
    assert "did you mean 'Linear' or 'linear'?" in err


@pytest.mark.parametrize(
    "out, target, sets, message",
    [
        ("D - B", "narrow(y, 1, 0, D - B)", ["B=8", "D=4"],
         "fc.weight [-B + D, D]: dim 0 (-B + D) is -4 at these sizes"),
        ("D / 2", "narrow(y, 1, 0, D / 2)", ["B=2", "D=5"],
         "error: the spec assumes 2 divides D, which fails with these values (D/2 = 5/2)"),
    ],
)  # fmt: skip
def test_a_size_that_cannot_be_is_refused_with_its_location(
    capsys, tmp_path, out, target, sets, message
):
    spec = _spec(tmp_path, SMALL.format(out=out, target=target))
    argv = ["compile", spec, "--no-cache", *(a for s in sets for a in ("--set", s))]
    code, _, err = _run(capsys, argv)
    assert code == 2 and message in err
    assert re.search(r"std/layers\.mspec:\d+:\d+: error: ", err)  # the parameter's line


def test_a_negative_repeat_count_is_refused_where_written(capsys, tmp_path):
    text = PLAIN.replace("dim d_model as D\n", "dim d_model as D\ndim num_layers as N\n")
    text = text.replace("fc = Linear(D, D)", "fc = repeat N - 4 of Linear(D, D)")
    spec = _spec(tmp_path, text)
    code, _, err = _run(capsys, ["compile", spec, "--no-cache", "--set", "N=2", "--set", "B=1",
                                 "--set", "D=4"])  # fmt: skip
    assert code == 2
    assert "m.mspec:6:5: error: repeat N - 4 of fc is -2 at these sizes" in err


def test_solve_never_answers_a_negative_value(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = ["solve", "specs/cs336_lm.mspec", "--preset", "gpt2_xl", "--for", "B",
            "--budget", "1GB", "--objective", "sum"]  # fmt: skip
    code, out, _ = _run(capsys, argv)
    assert code == 0
    assert out.splitlines()[1] == "even B = 1 needs more than 1,000,000,000 bytes"
    assert "largest B =" not in out


# --- tracebacks: every error path of the command line is exit 2 with a message ---------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["-o", "/tmp"], "-o /tmp: cannot write it (Is a directory)"),
        (["-o", "/dev/full"], "-o /dev/full: cannot write it (No space left on device)"),
        (["-o", "/no/such/folder/r.md"], "cannot write it (No such file or directory)"),
        (["--set", "B=²"], "B must be an integer, got '²'"),
        (["--set", "B=--5"], "B must be an integer, got '--5'"),
        (["--set", "B=1e400"], "B must be an integer, got '1e400'"),
        (["--time-limit", "nan"], "expected a finite number of seconds, got 'nan'"),
        (["--time-limit", "forever"], "expected a number of seconds, got 'forever'"),
        (["--peak-flops", "1e12", "--steps", "10" + "0" * 30], "0 < --steps <= 1e+15"),
        (["--peak-flops", "nan", "--steps", "10", "--format", "json"], "a finite --peak-flops"),
        (["--peak-flops", "inf", "--steps", "10"], "a finite --peak-flops"),
    ],
)  # fmt: skip
def test_bad_command_lines_are_clear_errors(capsys, monkeypatch, flags, message):
    monkeypatch.chdir(ROOT)
    code, out, err = _run(capsys, ["compile", "specs/cs336_lm.mspec", "--preset", "gpt2_xl",
                                   "--set", "B=1", "--no-cache", *flags])  # fmt: skip
    assert code == 2 and message in err and out == ""


def test_a_budget_beyond_any_size_is_a_clear_answer(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = ["solve", "specs/cs336_lm.mspec", "--preset", "gpt2_xl", "--for", "B",
            "--budget", "9" * 40 + "GB"]  # fmt: skip
    code, _, err = _run(capsys, argv)
    assert code == 2 and "every B up to 1e+15, larger than any model size, fits" in err


def test_defaults_that_refer_to_each_other_are_refused(capsys, tmp_path):
    text = PLAIN.replace("dim batch_size as B\ndim d_model as D\n",
                         "dim batch_size as B = D\ndim d_model as D = 2 * B\n")  # fmt: skip
    code, _, err = _run(capsys, ["compile", _spec(tmp_path, text), "--no-cache"])
    assert code == 2
    assert "m.mspec:2:1: error: the default of B (D) refers back to B" in err


# --- output: nothing that is not JSON in JSON ----------------------------------------------


def test_json_has_no_nan_or_infinity(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = ["compile", "specs/cs336_lm.mspec", "--preset", "gpt2_xl", "--set", "B=1",
            "--peak-flops", "989e12", "--steps", "1000", "--format", "json",
            "--no-cache"]  # fmt: skip
    code, out, _ = _run(capsys, argv)
    assert code == 0
    json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))


# --- unlocated: every error where the input has it ------------------------------------------


@pytest.mark.parametrize("newline", ["\r", "\r\n"])
def test_errors_are_located_whatever_the_line_ends(capsys, tmp_path, newline):
    text = PLAIN.replace("return mse_loss(fc(x), y)", "return mse_loss(fc(x), y) +")
    spec = _spec(tmp_path, text.replace("\n", newline))
    code, _, err = _run(capsys, ["compile", spec, "--no-cache"])
    assert code == 2
    head, line, caret = err.splitlines()[:3]
    assert head.startswith(f"{spec}:8:5: error: unexpected '}}'")
    assert line == "    }" and caret == "    ^"
