"""The summary leads with the true peak (bytes and moment when known, the Max formula of
a few moments otherwise), then the textbook sum: the number a GPU is sized by comes first.
"""

from __future__ import annotations

from memspec import compile_spec
from tests.conftest import ROOT

TOY = """
use std
dim batch_size as B
dim d_model as D
dim classes as C
model Toy {
    head = Linear(D, C)
    forward(x: [B, D], targets: int64[B]) {
        return cross_entropy(head(x), targets)
    }
}
"""


def _summary(text: str, start: str, end: str) -> str:
    return text[text.index(start): text.index(end, text.index(start))]


def test_bound_sizes_lead_with_the_peak_bytes_and_moment():
    r = compile_spec(ROOT / "specs" / "cs336_lm.mspec", preset="gpt2_xl", set=["B=1"])
    md = _summary(r.to_markdown(), "## Summary", "| category")
    peak = md.index("**True peak** of a training step")
    assert peak < md.index("**Textbook sum**")
    assert ("**31,022,473,480 bytes = 28.89 GiB (31.02 GB)**, at the moment "
            "*backward: cross\\_entropy.log\\_probs*") in md
    tex = _summary(r.to_latex(), "\\section*{Summary}", "\\begin{align*}")
    assert "\\textbf{31,022,473,480 bytes = 28.89 GiB (31.02 GB)}" in tex
    assert tex.index("\\textbf{True peak}") < tex.index("\\textbf{Textbook sum}")


def test_a_few_moments_give_the_max_formula():
    r = compile_spec(TOY)
    assert len(r.peak.candidates) == 3
    md = _summary(r.to_markdown(), "## Summary", "| category")
    assert "$\\max\\left(4 B D + 8 B + 24 C D + 4, " in md
    assert "the largest of 3 moments; which one depends on the sizes" in md
    tex = _summary(r.to_latex(), "\\section*{Summary}", "\\begin{align*}")
    assert "\\[ \\max\\left(4 B D + 8 B + 24 C D + 4, " in tex


def test_many_moments_are_counted_and_pointed_to():
    r = compile_spec(ROOT / "specs" / "cs336_lm.mspec")
    md = _summary(r.to_markdown(), "## Summary", "| category")
    assert f"the largest of {len(r.peak.candidates)} moments, which one depends" in md
    assert "\\max" not in md
