"""The command line: the JSON contract, flag equivalences, exit codes, determinism."""

from __future__ import annotations

import json

import sympy as sp

from memspec.cli import main
from tests.conftest import ROOT, run_cli

GPT2_XL = ["--set", "B=1", "--set", "V=50257", "--set", "L=1024", "--set", "N=48",
           "--set", "D=1600", "--set", "H=25"]


def _json(capsys, *args) -> dict:
    assert main(["compile", "specs/cs336_lm.mspec", "--format", "json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_contract(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    doc = _json(capsys, "--convention", "course", *GPT2_XL)
    assert list(doc) == ["model", "spec", "convention", "optimizer", "precision", "config",
                         "symbols", "categories", "total", "assumptions", "flops", "peak",
                         "values"]
    assert list(doc["categories"]) == ["parameters", "gradients", "optimizer_state",
                                       "activations", "buffers"]
    assert doc["config"] == {"recompute": "none"}
    assert doc["symbols"]["B"] == "batch_size"
    item = doc["categories"]["parameters"]["items"][2]
    assert item == {"name": "layers.attn.q_proj.weight", "shape": ["D", "D"],
                    "dtype": "float32", "elements": "D**2", "multiplicity": "N"}
    assert doc["categories"]["parameters"]["elements"] == "12*D**2*N + 2*D*N + 2*D*V + D"
    assert doc["values"]["parameters"] == {"elements": 1635537600, "bytes": 6542150400}
    total = sum(doc["values"][k]["bytes"] for k in doc["categories"])
    assert doc["values"]["total"]["bytes"] == total


def test_values_only_for_bound_categories(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    doc = _json(capsys, "--set", "D=1600", "--set", "N=48", "--set", "V=50257")
    # parameters (the trainable ones too) do not need B, L or H; activations and buffers do.
    assert set(doc["values"]) == {
        "parameters", "gradients", "optimizer_state", "trainable_parameters"}


def test_long_names_and_symbols_are_the_same(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    short = _json(capsys, "--set", "B=4", "--set", "D=64")
    long = _json(capsys, "--set", "batch_size=4", "--set", "d_model=64")
    assert short == long


def test_set_wins_over_preset(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    doc = _json(capsys, "--preset", "gpt2_xl", "--set", "N=2", "--set", "B=1")
    d, v = 1600, 50257
    assert doc["values"]["parameters"]["elements"] == 2 * v * d + 2 * (4 * d * d + 2 * d * 6400
                                                                       + 2 * d) + d


def test_expressions_parse_back_to_the_same_value(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    doc = _json(capsys)
    # sympy's str form is the contract: tools can rebuild the expression (trusted output).
    B, L, D, N, H, V = sp.symbols("B L D N H V")
    names = {"B": B, "L": L, "D": D, "N": N, "H": H, "V": V}
    expr = sp.parse_expr(doc["categories"]["activations"]["elements"], local_dict=names)
    assert sp.expand(expr - (N * (16 * B * L * D + 2 * B * H * L**2) + B * L * D
                             + 2 * B * L * V)) == 0


def test_output_file_and_formats(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "r.md"
    assert main(["compile", "specs/cs336_lm.mspec", "-o", str(out)]) == 0
    assert out.read_text().startswith("# Training memory of `TransformerLM`")


def test_reports_are_identical_across_hash_seeds():
    outputs = set()
    for seed in ("0", "1", "12345"):
        proc = run_cli("compile", "specs/cs336_lm.mspec", "--format", "md",
                       "--convention", "autograd", env={"PYTHONHASHSEED": seed})
        assert proc.returncode == 0, proc.stderr
        outputs.add(proc.stdout)
    assert len(outputs) == 1


def test_module_entry_point_exit_codes():
    ok = run_cli("compile", "specs/cs336_lm.mspec", "--format", "json")
    bad = run_cli("compile", "tests/errors/unknown_name.mspec")
    assert ok.returncode == 0 and json.loads(ok.stdout)["model"] == "TransformerLM"
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("tests/errors/unknown_name.mspec:7:20: error: unknown name")


def test_step_knobs_reach_the_peak(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    doc = _json(capsys, "--preset", "gpt2_xl", "--set", "B=1", "--first-step",
                "--no-set-to-none", "--grad-accum", "4", "--optimizer-impl", "foreach")
    assert doc["peak"]["step"] == {"first_step": True, "set_to_none": False, "grad_accum": 4,
                                   "optimizer_impl": "foreach"}
    # the first step's state is made inside step(), where the foreach temporaries of
    # every parameter join it: the step is the peak
    assert doc["peak"]["phase"] == "optimizer step: every parameter at once"
    assert doc["values"]["peak"] == int(sum(
        doc["values"][k]["bytes"] for k in ("parameters", "gradients", "optimizer_state",
                                            "buffers")) + doc["values"]["parameters"]["bytes"]
        + 2 * 1024 * 8 + 4)  # + one temporary per parameter, the batch and the loss


def test_grad_accum_must_be_positive(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["compile", "specs/cs336_lm.mspec", "--grad-accum", "0"]) == 2
    assert "--grad-accum must be at least 1" in capsys.readouterr().err
