"""Unknown-name hints: the nearest names that exist, else a capped list of them."""

from __future__ import annotations

from memspec.names import MAX_LISTED, did_you_mean, name_hint


def test_nearest_names_closest_first():
    assert name_hint("d_modle", ["x", "d_model", "d_ff"]) == "; did you mean 'd_model'?"
    assert name_hint("softmx", ["softmax", "log_softmax", "silu"]) == (
        "; did you mean 'softmax' or 'log_softmax'?")


def test_nothing_close_lists_what_exists_capped():
    names = [f"name{i}" for i in range(MAX_LISTED + 4)]
    hint = name_hint("zzz", names)
    assert hint.startswith("; names in scope: name0, name1,")
    assert hint.endswith("name9 and 4 more")
    assert name_hint("zzz", ["a", "b"], "layers") == "; layers: a, b"
    assert name_hint("zzz", []) == ""


def test_did_you_mean_lists_nothing_when_nothing_is_close():
    assert did_you_mean("zzz", ["adam", "sgd"]) == ""
    assert did_you_mean("adamx", ["adam", "adamw", "sgd"]) == "; did you mean 'adam' or 'adamw'?"
