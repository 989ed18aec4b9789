"""The grammar has no conflicts, and text becomes the AST it should."""

from __future__ import annotations

import sympy as sp

from memspec.symbolic.build import number
from memspec.syntax import decls as d
from memspec.syntax import nodes as n
from memspec.syntax.grammar import parser
from memspec.syntax.parse import parse


def test_grammar_builds_in_strict_mode():
    # strict=True raises on any shift/reduce conflict or regex collision.
    assert parser(strict=True) is not None


def test_dim_let_and_arithmetic():
    module = parse("dim d_ff as F = 4 * D\nlet eps = 1e-5\ndim vocab_size")
    assert module.decls == (
        d.DeclDim("d_ff", "F", n.ExprBinary("*", n.ExprInt(4), n.ExprName("D"))),
        d.DeclLet("eps", n.ExprFloat("1e-5")),
        d.DeclDim("vocab_size", "vocab_size"),
    )
    assert number("1e-5") == sp.Rational(1, 100_000)  # exact, never a float


def test_precedence_and_underscored_integers():
    (decl,) = parse("let x = 50_257 - 2 * 3 ** 2 // 4").decls
    assert decl.value == n.ExprBinary(
        "-",
        n.ExprInt(50257),
        n.ExprBinary("//", n.ExprBinary("*", n.ExprInt(2), n.ExprBinary(
            "**", n.ExprInt(3), n.ExprInt(2))), n.ExprInt(4)),
    )


def test_layer_with_repeat_param_forward_and_variants():
    module = parse("""
    layer Block(d, h = 2) {
        let k = d / h
        param w: [d, k]
        sub = repeat 3 of Inner(d)
        forward(x: [..., d]) -> [..., d] { y = x : [..., d]; return y }
    }
    fn f(a: [s]) variant one { return a } variant two { return a }
    train { precision fp32; optimizer adamw; use flash }
    """)
    layer, fn, train = module.decls
    assert [type(s).__name__ for s in layer.body] == [
        "LayerLet", "LayerParam", "LayerSub", "LayerForward"]
    assert layer.body[2].count == n.ExprInt(3)
    assert layer.body[3].params[0].type == n.TypeTensor(None, (None, n.ExprName("d")))
    assert [name for name, _ in fn.body.variants] == ["one", "two"]
    assert train.variants == ("flash",)


def test_spans_point_at_the_source():
    (decl,) = parse("\n\n   dim batch_size as B").decls
    assert (decl.span.line, decl.span.col) == (3, 4)


def _text(span) -> str:
    lines = span.source.text.splitlines()
    if span.line == span.end_line:
        return lines[span.line - 1][span.col - 1 : span.end_col - 1]
    return "\n".join(
        [lines[span.line - 1][span.col - 1 :], *lines[span.line : span.end_line - 1],
         lines[span.end_line - 1][: span.end_col - 1]])


def test_a_rule_spans_its_keywords_and_punctuation():
    """Spans cover a rule's whole match, first token to last, keywords and brackets
    included (as lark's propagate_positions gives them); a parenthesized operand's own
    span is inside its parentheses, its parent's starts at them."""
    (layer,) = parse("layer A(d) {\n  s = repeat N of B(d, (1 + d) * 2)\n}").decls
    assert _text(layer.span) == "layer A(d) {\n  s = repeat N of B(d, (1 + d) * 2)\n}"
    (sub,) = layer.body
    assert _text(sub.span) == "s = repeat N of B(d, (1 + d) * 2)"
    product = sub.args[1].value
    assert _text(product.span) == "(1 + d) * 2"
    assert _text(product.left.span) == "1 + d"
    (fn,) = parse("fn f(x: [a, b]) -> [a] { return g(x)[0] : [a] }").decls
    (ret,) = fn.body.variants[0][1]
    assert _text(ret.span) == "return g(x)[0] : [a]"
    assert _text(ret.value.span) == "g(x)[0]"
    assert _text(ret.value.base.span) == "g(x)"
    assert _text(fn.params[0].type.span) == "[a, b]"
    assert parse("").span is None and parse("# nothing\n").span is None


def test_unpacking_assignment():
    (fn,) = parse("fn f(p: [t, e]) { w, i = topk(p, 2); return w }").decls
    unpack, _ = fn.body.variants[0][1]
    assert unpack == n.StmtUnpack(
        ("w", "i"), n.ExprCall(n.ExprName("topk"), (n.Arg(n.ExprName("p")), n.Arg(n.ExprInt(2))))
    )


def test_valid_text_never_needs_lark_s_own_loop(monkeypatch):
    """memspec's copy of lark's LALR loop (syntax/grammar.py) parses every bundled spec
    itself: lark's loop, kept for the errors, is not called (a lark release that changed
    what the copy reads would fail here, not fall back unnoticed)."""
    from memspec.source import SourceFile
    from memspec.syntax.grammar import _AstLark, parse_module
    from tests.conftest import ROOT

    def refuse(*args, **kwargs):
        raise AssertionError("lark's own loop was used")

    monkeypatch.setattr(_AstLark, "parse", refuse)
    files = sorted((ROOT / "specs").rglob("*.mspec"))
    assert len(files) > 20
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert parse_module(text, SourceFile(str(path), text)).decls


def test_syntax_errors_are_lark_s_own():
    """Text the loop refuses is parsed again by lark, whose error says where and what."""
    from memspec.errors import SpecSyntaxError

    for text, where in [("dim a as", (1, 9)), ("layer A( {", (1, 10)), ("let x = 1 $", (1, 11)),
                        ("model M { y = repeat of X() }", (1, 25))]:
        try:
            parse(text)
        except SpecSyntaxError as err:
            assert (err.span.line, err.span.col) == where, (text, err.span)
        else:
            raise AssertionError(f"{text!r} parsed")
