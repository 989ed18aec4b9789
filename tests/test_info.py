"""`memspec info SPEC`: the model, dims, presets, variants, policies and expects."""

from __future__ import annotations

import json

from memspec.cli import main
from tests.conftest import ROOT


def _info(capsys, monkeypatch, *args: str) -> str:
    monkeypatch.chdir(ROOT)
    assert main(["info", *args]) == 0
    return capsys.readouterr().out


def test_text_lists_what_the_spec_offers(capsys, monkeypatch):
    text = _info(capsys, monkeypatch, "specs/cs336_lm.mspec")
    assert text.startswith("model TransformerLM (specs/cs336_lm.mspec)\n")
    assert "  B  batch_size      no default\n" in text
    assert "  F  d_ff            default 4*D\n" in text
    assert "  gpt2_xl: V = 50_257, L = 1_024, D = 1_600, N = 48, H = 25, F = 6_400\n" in text
    assert "  attention: math (by the train block); also use eager, use sdpa, use flash\n" in text
    assert "  * fp32           param float32;" in text
    assert "    mixed_bf16     param bfloat16; master float32;" in text
    assert "  * adamw             AdamW" in text  # rmsprop_momentum sets the width
    assert "    autograd  what PyTorch keeps for backward" in text
    assert "  expect params == 1_635_537_600 at gpt2_xl\n" in text


def test_use_picks_a_variant(capsys, monkeypatch):
    text = _info(capsys, monkeypatch, "specs/cs336_lm.mspec", "--use", "flash")
    assert "  attention: flash (by --use); also use math, use eager, use sdpa\n" in text


def test_json(capsys, monkeypatch):
    doc = json.loads(_info(capsys, monkeypatch, "specs/mlp.mspec", "--format", "json"))
    assert doc["model"] == "NeuralNetwork"
    assert doc["dims"][0] == {"symbol": "B", "name": "batch_size", "default": None}
    assert doc["presets"] == {"quickstart": {"I": 28, "F": 512, "C": 10, "B": 64}}
    assert doc["variants"] == []
    assert [c["name"] for c in doc["optimizers"] if c["chosen"]] == ["adamw"]
    assert doc["expects"] == ["expect params == I*I*F + F + F*F + F + F*C + C",
                              "expect params == 669_706 at quickstart"]


def test_errors_are_located(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["info", "tests/errors/unknown_layer.mspec"]) == 2
    assert "unknown layer 'Linaer'" in capsys.readouterr().err
