"""Builds the LALR parser from the packaged grammar, once per process, and parses text
straight into the AST.

lark can build a parse tree with positions (`propagate_positions`) that a transformer then
walks; for a file of 15,000 layers that tree, its positions and the walk took two thirds
of the parse. Here each rule's reduction calls its `ToAst` method at once (as lark's
inline transformers do), and the position is worked out in the same step, from the
rule's whole match: its first and last token, keywords and punctuation included, or the
positions of the rules it reduced. Those are the spans lark's `propagate_positions` gives
(a parenthesized operand's span includes its parentheses where its parent's starts).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator

from lark import Lark, Token, Tree
from lark.parse_tree_builder import ExpandSingleChild, ParseTreeBuilder
from lark.parsers.lalr_analysis import Shift

from memspec.resources import grammar_path
from memspec.source import SourceFile
from memspec.syntax.cache import grammar_cache
from memspec.syntax.decls import Module
from memspec.syntax.transform import ToAst

__all__ = ["parse_module", "parser"]


class Meta:
    """Where a rule's match lies, as lark's tree meta says it (1-based, end-exclusive)."""

    __slots__ = ("column", "end_column", "end_line", "line")
    empty = False

    def __init__(self, line: int, column: int, end_line: int, end_column: int):
        self.line, self.column, self.end_line, self.end_column = line, column, end_line, end_column


class _NoMeta:
    """The position of a rule that matched nothing (an empty file, an absent option)."""

    __slots__ = ()
    empty = True


_NO_META = _NoMeta()


class _Built:
    """A reduced rule on lark's value stack: what its method built, and where it lies."""

    __slots__ = ("meta", "value")

    def __init__(self, value: object, meta: Meta | _NoMeta):
        self.value, self.meta = value, meta


_current = threading.local()  # the ToAst of the parse under way in this thread


def _edge(children) -> Token | Meta | None:
    """The position of the first of `children` that has one (a token, a non-empty rule)."""
    for child in children:
        if type(child) is Token:
            return child
        if not child.meta.empty:
            return child.meta
    return None


def _where(children: list) -> Meta | _NoMeta:
    first = _edge(children)
    if first is None:
        return _NO_META
    last = _edge(reversed(children))
    return Meta(first.line, first.column, last.end_line, last.end_column)


def _values(children: list) -> list:
    """What a reduction's children hold: tokens as they are, rules as they were built."""
    return [c if type(c) is Token else c.value for c in children]


def _callback(name: str, kept: Callable[[list], list], expand1: bool) -> Callable[[list], _Built]:
    """The reduction of one rule: its kept children handed to `ToAst.<name>`, or, for an
    inlined rule (`_item`, `?expr` with one child), the children handed up."""
    if name.startswith("_"):  # inlined into the rule that uses it (lark expands .children)

        def inline(children: list) -> _Built:
            return _Built(Tree(name, kept(_values(children))), _where(children))

        return inline
    method = getattr(ToAst, name, None)

    def build(children: list) -> _Built:
        meta = _where(children)
        values = kept(_values(children))
        if expand1 and len(values) == 1:
            return _Built(values[0], meta)
        if method is None:
            raise NotImplementedError(f"grammar rule {name!r} has no ToAst handler")
        return _Built(method(_current.ast, meta, values), meta)

    return build


class _AstLark(Lark):
    """lark's LALR parser whose reductions build memspec's AST (see the module's doc)."""

    def build(self, text: str) -> object:
        """The start rule's value, by lark's own LALR loop over its parse table and its
        contextual lexer's scanners, less their bookkeeping: each rule's size and
        callback looked up once, a one-rule reduction (`?sum: product`, ten per operand)
        only a change of state, tokens made in one loop. That loop and lark's lexer
        were two thirds of a large file's parse. Text this loop refuses is parsed again
        by lark's own loop, which raises its own error where this one stopped."""
        try:
            return self._build(text)
        except _Refused:
            return self.parse(text)
        except AttributeError:
            # a lark whose internals this loop reads differently (it reads 1.2 and 1.3):
            # its own loop, slower, with the same callbacks (a test fails on it in CI)
            return self.parse(text)

    def _build(self, text: str) -> object:
        interactive = self.parse_interactive(text)
        state = interactive.parser_state
        states, end_state = state.parse_conf.states, state.parse_conf.end_state
        stack, values = state.state_stack, state.value_stack
        reductions, units = self._reductions, self._units
        # what lark's scanners match on (a TextSlice in lark 1.3, the str before)
        scanned = interactive.lexer_thread.state.text
        for token in self._tokens(text, scanned, stack):
            while True:
                action, arg = states[stack[-1]].get(token.type, _NO_ACTION)
                if action is Shift and token.type != _END:
                    stack.append(arg)
                    values.append(token)
                    break
                if action is None or action is Shift:
                    raise _Refused
                size, callback, origin = reductions[arg]
                if callback is None:
                    # a run of one-rule reductions pops and pushes one state each: where
                    # it ends depends on the state under it, its own and the token only
                    key = (stack[-2], stack[-1], token.type)
                    if key not in units:
                        units[key] = self._after_units(states, *key)
                    stack[-1] = units[key]
                    continue
                children = values[-size:] if size else []
                if size:
                    del stack[-size:]
                    del values[-size:]
                values.append(callback(children))
                stack.append(states[stack[-1]][origin][1])
                if token.type == _END and stack[-1] == end_state:
                    return values[-1]
        raise _Refused

    def _after_units(self, states: dict, below: int, top: int, kind: str) -> int:
        """The state a run of one-rule reductions reaches from `top` over `below`."""
        while True:
            action, arg = states[top].get(kind, _NO_ACTION)
            if action is None or action is Shift or self._reductions[arg][1] is not None:
                return top
            top = states[below][self._reductions[arg][2]][1]

    def _tokens(self, text: str, scanned: object, stack: list) -> Iterator[Token]:
        """The contextual lexer's tokens: at each position the scanner of the parser's
        state (`stack[-1]`, read as each token is asked for), as lark's `next_token`
        makes them (line and column counted alike, NAME's keyword callback applied)."""
        lexers = self.parser.lexer.lexers
        pos, line, line_start, size = 0, 1, 0, len(text)
        last = None
        while pos < size:
            lexer = lexers[stack[-1]]
            found = lexer.match(scanned, pos)
            if not found:
                raise _Refused
            value, kind = found
            start, start_line, column = pos, line, pos - line_start + 1
            if kind in lexer.newline_types:
                newlines = value.count("\n")
                if newlines:
                    line += newlines
                    line_start = pos + value.rindex("\n") + 1
            pos += len(value)
            if kind in lexer.ignore_types:
                continue
            token = Token(kind, value, start, start_line, column, line, pos - line_start + 1, pos)
            if kind in lexer.callback:
                token = lexer.callback[kind](token)
            last = token
            yield token
        yield Token.new_borrow_pos(_END, "", last) if last else Token(_END, "", 0, 1, 1)

    def _prepare_callbacks(self) -> None:
        # lark's own child filters (which children a rule keeps, None for an absent
        # `[...]`, inlined `_rules` spliced in); memspec's methods and positions instead of
        # its tree nodes
        builder = ParseTreeBuilder(self.rules, Tree, False, False, self.options.maybe_placeholders)
        self._callbacks = {}
        self._reductions: dict[object, tuple[int, Callable | None, str]] = {}
        self._units: dict[tuple[int, int, str], int] = {}  # (under, state, token) -> state
        for rule, chain in builder.rule_builders:
            keep: Callable[[list], list] = _identity
            for wrapper in chain:
                if wrapper is not ExpandSingleChild:  # done by _callback, on the values
                    keep = wrapper(keep)
            name = rule.alias or rule.options.template_source or rule.origin.name
            expand1 = rule.options.expand1 and not rule.alias
            (only, *more) = rule.expansion or (None,)
            if expand1 and not more and not only.is_term and not only.name.startswith("_"):
                # `?sum: product`: one rule's result handed up as it is; an expression
                # passes ten of these, most of the parse's reductions
                self._callbacks[rule] = _first
                self._reductions[rule] = (1, None, rule.origin.name)
            else:
                self._callbacks[rule] = _callback(name, keep, expand1)
                self._reductions[rule] = (
                    len(rule.expansion),
                    self._callbacks[rule],
                    rule.origin.name,
                )


class _Refused(Exception):
    """Text the fast loop does not parse (a syntax error): lark's own loop reports it."""


_NO_ACTION = (None, None)
_END = "$END"  # lark's end-of-input terminal


def _identity(children: list) -> list:
    return children


def _first(children: list) -> _Built:
    return children[0]


@functools.cache
def parser(strict: bool = False) -> Lark:
    """The memspec parser. `strict=True` (tests only) fails on any grammar conflict."""
    path = grammar_path()
    return _AstLark(
        path.read_text(encoding="utf-8"),
        parser="lalr",
        maybe_placeholders=True,
        # lark's cache is keyed on the grammar text and options (in the user cache dir:
        # syntax/cache.py); strict mode needs none.
        cache=False if strict else grammar_cache(),
        strict=strict,
    )


def parse_module(text: str, source: SourceFile) -> Module:
    """The AST of `text`; lark's exceptions (syntax errors) and memspec's (a literal too
    long) propagate."""
    _current.ast = ToAst(source)
    try:
        return parser().build(text).value
    finally:
        _current.ast = None
