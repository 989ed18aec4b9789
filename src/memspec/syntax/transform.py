"""Grammar rules -> AST: one `ToAst` method per grammar alias, and nothing else.

The parser calls a rule's method as it reduces the rule (`syntax/grammar.py`), with the
rule's position (`meta`) and its kept children, already built. Numbers stay AST nodes
with spans; `symbolic/build.py` turns them into sympy objects. A rule without a method
raises on first use, so a grammar change cannot go unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass

from lark import Token

from memspec.errors import SpecValueError
from memspec.source import SourceFile, Span
from memspec.syntax import decls as d
from memspec.syntax import nodes as n

__all__ = ["MAX_LITERAL_DIGITS", "ToAst"]

MAX_LITERAL_DIGITS = 400  # far beyond any model size; Python refuses ints over 4300 digits


def _binary_rule(op: str):
    """The ToAst method for a binary operator alias."""

    def rule(self, meta, children):
        left, right = children
        return n.ExprBinary(op, left, right, span=self.span(meta))

    return rule


@dataclass(frozen=True, slots=True)
class _Require:
    """An hf_config block's `require CONDITION`, until the block collects it."""

    value: n.Expr


def _unquote(token: Token) -> str:
    return str(token)[1:-1]


class ToAst:
    """Builds `nodes.Module` rule by rule, attaching spans from `meta`. The parser builds
    bottom-up, so a long chain such as `a + b + ... + z` cannot exhaust the stack."""

    def __init__(self, source: SourceFile):
        self.source = source

    def span(self, meta) -> Span | None:
        if getattr(meta, "empty", True):
            return None
        return Span(self.source, meta.line, meta.column, meta.end_line, meta.end_column)

    def token_span(self, token: Token) -> Span:
        return Span(self.source, token.line, token.column, token.end_line, token.end_column)

    # Module and declarations ---------------------------------------------------------------

    def start(self, meta, children):
        return d.Module(tuple(children), span=self.span(meta))

    def dotted_name(self, meta, names):
        return ".".join(str(x) for x in names)

    def decl_use_lib(self, meta, children):
        return d.DeclUse(library=children[0], span=self.span(meta))

    def decl_use_file(self, meta, children):
        return d.DeclUse(path=_unquote(children[0]), span=self.span(meta))

    def decl_dim(self, meta, children):
        name, symbol, default = children
        return d.DeclDim(str(name), str(symbol or name), default, span=self.span(meta))

    def decl_let(self, meta, children):
        return d.DeclLet(str(children[0]), children[1], span=self.span(meta))

    def params(self, meta, children):
        return tuple(children)

    def param_def(self, meta, children):
        return d.Param(
            str(children[0]), children[1] if len(children) > 1 else None, span=self.span(meta)
        )

    def decl_layer(self, meta, children):
        name, params, *body = children
        return d.DeclLayer(str(name), params or (), tuple(body), span=self.span(meta))

    def decl_model(self, meta, children):
        name, *body = children
        return d.DeclLayer(str(name), (), tuple(body), is_model=True, span=self.span(meta))

    def decl_fn(self, meta, children):
        name, params, returns, body = children
        return d.DeclFn(str(name), params or (), returns, body, span=self.span(meta))

    def bindings(self, meta, children):
        return tuple(children)

    def binding(self, meta, children):
        return (str(children[0]), children[1], self.token_span(children[0]))

    def decl_preset(self, meta, children):
        return d.DeclPreset(str(children[0]), children[1] or (), span=self.span(meta))

    def decl_assume(self, meta, children):
        if isinstance(children[0], n.ExprString):
            return d.DeclAssume(children[0].value, span=self.span(meta))
        return d.DeclAssumeSize(children[0], span=self.span(meta))

    def decl_hf_config(self, meta, children):
        types = tuple(_unquote(c) for c in children if isinstance(c, Token))
        bindings = tuple(c for c in children if isinstance(c, tuple))
        requires = tuple(c.value for c in children if isinstance(c, _Require))
        return d.DeclHfConfig(types, bindings, requires, span=self.span(meta))

    def hf_require(self, meta, children):
        return _Require(children[0])

    def decl_expect(self, meta, children):
        quantity, value, preset = children
        return d.DeclExpect(
            str(quantity), value, str(preset) if preset else None, span=self.span(meta)
        )

    def decl_train(self, meta, children):
        settings = tuple(c for c in children if c[0] != "use")
        variants = tuple(v for c in children if c[0] == "use" for v in c[1])
        return d.DeclTrain(settings, variants, span=self.span(meta))

    def train_setting(self, meta, children):
        return (str(children[0]), str(children[1]), self.span(meta))

    def train_use(self, meta, children):
        return ("use", tuple(str(c) for c in children), self.span(meta))

    def decl_precision(self, meta, children):
        name, *rest = children
        description = _unquote(rest.pop(0)) if rest and isinstance(rest[0], Token) else ""
        scalers = tuple(r for r in rest if isinstance(r, d.DeclScaler))
        rest = [r for r in rest if not isinstance(r, d.DeclScaler)]
        return d.DeclPrecision(
            str(name),
            tuple(r for r in rest if len(r) == 3),
            span=self.span(meta),
            description=description,
            casts=tuple(r for r in rest if len(r) == 4),
            scalers=scalers,
        )

    def precision_rule(self, meta, children):
        return (str(children[0]), str(children[1]), self.span(meta))

    def precision_cast(self, meta, children):
        word, dtype, *ops = children
        return (str(word), str(dtype), tuple(str(o) for o in ops), self.span(meta))

    def precision_scaler(self, meta, children):
        cls, args = children
        return d.DeclScaler(cls, args or (), span=self.span(meta))

    def decl_optimizer(self, meta, children):
        name, *rest = children
        description = _unquote(rest.pop(0)) if rest and isinstance(rest[0], Token) else ""

        def items(kind: str) -> tuple:
            return tuple(item[1:] for item in rest if item[0] == kind)

        return d.DeclOptimizer(
            str(name),
            description,
            items("state"),
            items("temp"),
            items("flops"),
            items("torch"),
            items("params"),
            items("else"),
            span=self.span(meta),
            made=items("state at"),
        )

    def optimizer_state_at(self, meta, children):
        return ("state at", str(children[0]), self.span(meta))

    def optimizer_state(self, meta, children):
        name, shape, dtype, cond, flag = children
        flag = str(flag) if flag is not None else None
        return ("state", str(name), shape, dtype, cond, flag, self.span(meta))

    def optimizer_temp(self, meta, children):
        impl, count, shape, dtype, cond, life, until = children
        life = "kept" if life is None else " ".join(str(t) for t in (life, until) if t)
        return ("temp", str(impl), self._int(count), shape, dtype, cond, life, self.span(meta))

    def shape_like(self, meta, children):
        target, dims = children
        return ("like", str(target), dims or ())

    def shape_scalar(self, meta, children):
        return ("scalar",)

    def shape_blocks(self, meta, children):
        return ("blocks", self._int(children[0]), str(children[1]))

    def shape_gram(self, meta, children):
        return ("gram", str(children[0]))

    def shape_fixed(self, meta, children):
        return ("fixed", self._int(children[0]))

    def opt_dims(self, meta, children):
        return tuple(int(str(c)) for c in children)

    def opt_as(self, meta, children):
        return str(children[0]) if children and children[0] is not None else None

    def opt_if(self, meta, children):
        if not children or children[0] is None:
            return None
        quantity, op, number = children
        return (str(quantity), str(op), self._int(number))

    def optimizer_params(self, meta, children):
        quantity, op, number = children
        return ("params", (str(quantity), str(op), self._int(number)), self.span(meta))

    def optimizer_else(self, meta, children):
        return ("else", str(children[0]), self.span(meta))

    def optimizer_flops(self, meta, children):
        count, unit = children
        return ("flops", self._int(count), str(unit), self.span(meta))

    def optimizer_torch(self, meta, children):
        impl, cls, args = children
        impl = str(impl) if impl is not None else None
        return ("torch", impl, cls, args or (), self.span(meta))

    def torch_class(self, meta, children):
        *module, name = children
        if name is None:  # no colon: a torch.optim class, or the last dotted part
            *module, name = module
        path = ".".join(str(m) for m in module)
        return f"{path}:{name}" if path else str(name)

    def torch_args(self, meta, children):
        return tuple(children)

    def torch_arg(self, meta, children):
        return (str(children[0]), children[1])

    def torch_float(self, meta, children):
        return float(str(children[0]).replace("_", ""))

    def torch_int(self, meta, children):
        return self._int(children[0])

    def torch_name(self, meta, children):
        return str(children[0])  # true/false, checked where the declaration is read

    def torch_tuple(self, meta, children):
        return tuple(children)

    def decl_convention(self, meta, children):
        name, *rest = children
        description = _unquote(rest.pop(0)) if rest and isinstance(rest[0], Token) else ""
        return d.DeclConvention(str(name), description, tuple(rest), span=self.span(meta))

    def decl_recompute(self, meta, children):
        name, *rest = children
        description = _unquote(rest.pop(0)) if rest and isinstance(rest[0], Token) else ""
        return d.DeclRecompute(str(name), description, tuple(rest), span=self.span(meta))

    def decl_tp_plan(self, meta, children):
        layer, *styles = children
        return d.DeclTpPlan(str(layer), tuple(styles), span=self.span(meta))

    def tp_style(self, meta, children):
        member, style = children
        return (str(member), str(style), None, self.span(meta))

    def tp_style_replicated(self, meta, children):
        member, style = children
        return (str(member), str(style), "replicated", self.span(meta))

    def recompute_repeats(self, meta, children):
        return ("repeat", (), self.span(meta))

    def recompute_calls(self, meta, children):
        return ("call", tuple(str(c) for c in children), self.span(meta))

    def recompute_save(self, meta, children):
        return ("save", tuple(str(c) for c in children), self.span(meta))

    def convention_count(self, meta, children):
        names, kinds = children[1]
        return (str(children[0]), names, kinds, self.span(meta))

    def names_all(self, meta, children):
        return ((), ())

    def names_some(self, meta, children):
        return (tuple(str(c) for c in children), ())

    def names_kinds(self, meta, children):
        return ((), tuple(str(c) for c in children))

    # Layers ------------------------------------------------------------------------------

    def layer_let(self, meta, children):
        return d.LayerLet(str(children[0]), children[1], span=self.span(meta))

    def layer_sub(self, meta, children):
        name, layer, args = children
        return d.LayerSub(str(name), str(layer), args or (), span=self.span(meta))

    def layer_repeat(self, meta, children):
        name, count, index, checkpoint, layer, args = children
        return d.LayerSub(
            str(name),
            str(layer),
            args or (),
            count=count,
            index=str(index) if index else None,
            checkpoint=checkpoint is not None,
            span=self.span(meta),
        )

    def checkpoint_mark(self, meta, children):
        return True

    def layer_param(self, meta, children):
        return d.LayerParam(str(children[0]), children[1], span=self.span(meta))

    def layer_param_frozen(self, meta, children):
        return d.LayerParam(str(children[0]), children[1], frozen=True, span=self.span(meta))

    def layer_buffer(self, meta, children):
        return d.LayerBuffer(str(children[0]), children[1], span=self.span(meta))

    def layer_forward(self, meta, children):
        params, returns, body = children
        return d.LayerForward(params or (), returns, body, span=self.span(meta))

    def layer_generate(self, meta, children):
        params, returns, body = children
        return d.LayerForward(params or (), returns, body, span=self.span(meta), generate=True)

    def layer_if(self, meta, children):
        condition, *then, orelse = children  # maybe_placeholders: `orelse` is None if absent
        return d.LayerIf(condition, tuple(then), tuple(orelse or ()), span=self.span(meta))

    def layer_else(self, meta, children):
        return list(children)

    def sig_params(self, meta, children):
        return tuple(children)

    def sig_param(self, meta, children):
        name, type_, default = children
        return n.SigParam(str(name), type_, default, span=self.span(meta))

    def body_single(self, meta, children):
        return n.Body((("", children[0]),), span=self.span(meta))

    def body_variants(self, meta, children):
        return n.Body(tuple(children), span=self.span(meta))

    def variant(self, meta, children):
        return (str(children[0]), children[1])

    def block(self, meta, children):
        return tuple(children)

    def stmt_assign(self, meta, children):
        target, value, annotation = children
        return n.StmtAssign(str(target), value, annotation, span=self.span(meta))

    def stmt_unpack(self, meta, children):
        *targets, value = children
        return n.StmtUnpack(tuple(str(t) for t in targets), value, span=self.span(meta))

    def stmt_return(self, meta, children):
        value, annotation = children
        return n.StmtReturn(value, annotation, span=self.span(meta))

    def stmt_return_tuple(self, meta, children):
        first, last = children[0].span, children[-1].span
        span = (
            first
            and last
            and Span(first.source, first.line, first.col, last.end_line, last.end_col)
        )
        values = n.ExprTuple(tuple(children), span=span)
        return n.StmtReturn(values, span=self.span(meta))

    def stmt_if(self, meta, children):
        condition, then, orelse = children
        return n.StmtIf(condition, then, orelse or (), span=self.span(meta))

    # Shapes ------------------------------------------------------------------------------

    def type_tensor(self, meta, children):
        dtype, dims = children
        return n.TypeTensor(str(dtype) if dtype else None, dims or (), span=self.span(meta))

    def shape_items(self, meta, children):
        return tuple(children)

    def shape_dim(self, meta, children):
        return children[0]

    def shape_ellipsis(self, meta, children):
        return None

    # Expressions -------------------------------------------------------------------------

    # One rule per binary operator alias (`expr_add` -> "+"), all built alike.
    expr_add = _binary_rule("+")
    expr_sub = _binary_rule("-")
    expr_mul = _binary_rule("*")
    expr_div = _binary_rule("/")
    expr_floordiv = _binary_rule("//")
    expr_mod = _binary_rule("%")
    expr_pow = _binary_rule("**")
    expr_and = _binary_rule("and")
    expr_or = _binary_rule("or")

    def expr_compare(self, meta, children):
        left, op, right = children
        return n.ExprBinary(str(op), left, right, span=self.span(meta))

    def expr_neg(self, meta, children):
        return n.ExprUnary("-", children[0], span=self.span(meta))

    def expr_not(self, meta, children):
        return n.ExprUnary("not", children[0], span=self.span(meta))

    def expr_call(self, meta, children):
        callee, args = children
        return n.ExprCall(callee, args or (), span=self.span(meta))

    def expr_attr(self, meta, children):
        return n.ExprAttr(children[0], str(children[1]), span=self.span(meta))

    def expr_index(self, meta, children):
        return n.ExprIndex(children[0], children[1], span=self.span(meta))

    def expr_list(self, meta, children):
        items = tuple(c for c in children if c is not None)  # `[]` gives one None
        return n.ExprList(items, span=self.span(meta))

    def expr_int(self, meta, children):
        return n.ExprInt(self._int(children[0]), span=self.span(meta))

    def _int(self, token: Token) -> int:
        digits = str(token).replace("_", "")
        if len(digits) > MAX_LITERAL_DIGITS:
            raise SpecValueError(
                f"number literal too long (over {MAX_LITERAL_DIGITS} digits)",
                self.token_span(token),
            )
        return int(digits)

    def expr_float(self, meta, children):
        text = str(children[0]).replace("_", "")
        exponent = text.lower().partition("e")[2]
        # 1e999999999 is short to write and has a billion digits: its exponent is limited
        # as an integer literal's digits are
        if len(text) > MAX_LITERAL_DIGITS or abs(int(exponent or "0")) > MAX_LITERAL_DIGITS:
            raise SpecValueError(
                f"number literal too large or too small (beyond 1e{MAX_LITERAL_DIGITS})",
                self.span(meta),
            )
        return n.ExprFloat(text, span=self.span(meta))

    def expr_string(self, meta, children):
        return n.ExprString(_unquote(children[0]), span=self.span(meta))

    def expr_true(self, meta, children):
        return n.ExprBool(True, span=self.span(meta))

    def expr_false(self, meta, children):
        return n.ExprBool(False, span=self.span(meta))

    def expr_name(self, meta, children):
        return n.ExprName(str(children[0]), span=self.span(meta))

    def args(self, meta, children):
        return tuple(children)

    def arg_positional(self, meta, children):
        return n.Arg(children[0], span=self.span(meta))

    def arg_keyword(self, meta, children):
        return n.Arg(children[1], name=str(children[0]), span=self.span(meta))
