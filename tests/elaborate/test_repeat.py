"""`repeat N` is one region: the graph's size does not grow with the count."""

from __future__ import annotations

from memspec import compile_spec
from memspec.ir.verify import verify
from tests.conftest import SPECS

TEXT = (SPECS / "cs336_lm.mspec").read_text()


def _graph(count: str):
    text = TEXT.replace("repeat N of Block", f"repeat {count} of Block")
    text = text.replace("expect params", "# expect params")
    r = compile_spec(text)
    verify(r.graph)
    return r


def test_graph_size_is_independent_of_the_repeat_count():
    small, large, symbolic = _graph("2"), _graph("2000"), _graph("N")
    sizes = {(len(r.graph.values), len(r.graph.ops)) for r in (small, large, symbolic)}
    assert len(sizes) == 1
    assert [r.count for r in large.graph.regions] == [2000]
    params = large.categories["parameters"]
    assert next(i.multiplicity for i in params.items if i.path.startswith("layers.")) == 2000


def test_state_dict_names():
    r = compile_spec(SPECS / "cs336_lm_swiglu.mspec")
    names = [i.path for i in r.categories["parameters"].items]
    assert names == [
        "token_embeddings.weight",
        "layers.ln1.weight",
        "layers.attn.q_proj.weight",
        "layers.attn.k_proj.weight",
        "layers.attn.v_proj.weight",
        "layers.attn.output_proj.weight",
        "layers.ln2.weight",
        "layers.ffn.w1.weight",
        "layers.ffn.w2.weight",
        "layers.ffn.w3.weight",
        "ln_final.weight",
        "lm_head.weight",
    ]
    assert [i.path for i in r.categories["buffers"].items] == [
        "layers.attn.rope.cos", "layers.attn.rope.sin"]
