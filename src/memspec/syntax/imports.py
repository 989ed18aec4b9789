"""Loads a spec and everything it `use`s into one `Program` of named definitions.

`use std` loads every file of the packaged standard library, `use std.NAME` one of them,
`use "path.mspec"` a file relative to the spec that says it. Each file is loaded once; a
`use` that comes back to a file still being loaded is a cycle and an error.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from memspec.compile_cache import note_read
from memspec.errors import NameResolutionError, SpecImportError, UsageError
from memspec.resources import std_dir
from memspec.source import SourceFile, Span, newlines
from memspec.syntax import decls as d
from memspec.syntax.parse import parse

__all__ = ["MAX_FILE_BYTES", "Program", "load_program", "read_source", "with_dim"]

MAX_FILE_BYTES = 1_000_000  # a model spec is a page or two; larger input is refused


@dataclass
class Program:
    """All definitions visible to the model, by kind and name, in load order."""

    entry: SourceFile
    dims: dict[str, d.DeclDim] = field(default_factory=dict)
    lets: dict[str, d.DeclLet] = field(default_factory=dict)
    layers: dict[str, d.DeclLayer] = field(default_factory=dict)
    fns: dict[str, d.DeclFn] = field(default_factory=dict)
    presets: dict[str, d.DeclPreset] = field(default_factory=dict)
    precisions: dict[str, d.DeclPrecision] = field(default_factory=dict)
    optimizers: dict[str, d.DeclOptimizer] = field(default_factory=dict)
    conventions: dict[str, d.DeclConvention] = field(default_factory=dict)
    recomputes: dict[str, d.DeclRecompute] = field(default_factory=dict)
    tp_plans: dict[str, d.DeclTpPlan] = field(default_factory=dict)  # by layer
    models: list[d.DeclLayer] = field(default_factory=list)
    expects: list[d.DeclExpect] = field(default_factory=list)
    assumes: list[d.DeclAssume] = field(default_factory=list)
    size_facts: list[d.DeclAssumeSize] = field(default_factory=list)  # from every file
    trains: list[d.DeclTrain] = field(default_factory=list)
    hf_configs: list[d.DeclHfConfig] = field(default_factory=list)  # the entry file's

    def top_level_names(self) -> dict[str, Span | None]:
        names: dict[str, Span | None] = {}
        for table in (self.dims, self.lets, self.layers, self.fns):
            names.update({k: v.span for k, v in table.items()})
        for dim in self.dims.values():
            names.setdefault(dim.symbol, dim.span)
        return names


def read_source(path: Path, display: str, span: Span | None = None) -> SourceFile:
    """Read a spec file as UTF-8 text, refusing missing, huge, binary or non-UTF-8 input."""
    try:
        if path.is_dir():
            raise SpecImportError(f"{display}: is a directory, not a spec file", span)
        if path.exists() and not path.is_file():
            # Devices and pipes could block or never end (/dev/zero).
            raise SpecImportError(f"{display}: not a regular file", span)
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise SpecImportError(f"{display}: no such file", span) from None
    except OSError as err:
        raise SpecImportError(f"{display}: cannot read: {err.strerror}", span) from None
    if len(data) > MAX_FILE_BYTES:
        raise SpecImportError(f"{display}: file too large (over {MAX_FILE_BYTES} bytes)", span)
    if b"\0" in data:
        raise SpecImportError(f"{display}: binary file, not a spec", span)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecImportError(f"{display}: not UTF-8 text (byte {err.start})", span) from None
    note_read(path, data)
    return SourceFile(display, newlines(text))


_TABLES = {
    d.DeclDim: "dims",
    d.DeclLet: "lets",
    d.DeclFn: "fns",
    d.DeclPreset: "presets",
    d.DeclPrecision: "precisions",
    d.DeclOptimizer: "optimizers",
    d.DeclConvention: "conventions",
    d.DeclRecompute: "recomputes",
    d.DeclTpPlan: "tp_plans",
}


class _Loader:
    def __init__(self, program: Program):
        self.program = program
        self.loaded: set[Path] = set()
        self.stack: list[Path] = []

    def load(self, source: SourceFile, path: Path | None, is_entry: bool) -> None:
        module = parse(source.text, source)
        if path is not None:
            self.stack.append(path)
        for decl in module.decls:
            if isinstance(decl, d.DeclUse):
                self.use(decl, path, source.name)
            else:
                self.define(decl, is_entry)
        if path is not None:
            self.stack.pop()
            self.loaded.add(path)

    def use(self, decl: d.DeclUse, current: Path | None, current_name: str) -> None:
        for path, display in self.resolve(decl, current, current_name):
            if path in self.stack:
                chain = " -> ".join(p.name for p in [*self.stack, path])
                raise SpecImportError(f"cyclic use: {chain}", decl.span)
            if path not in self.loaded:
                self.load(read_source(path, display, decl.span), path, is_entry=False)

    def resolve(
        self, decl: d.DeclUse, current: Path | None, current_name: str
    ) -> list[tuple[Path, str]]:
        if decl.path is not None:
            base = current.parent if current else Path.cwd()
            # Report the file as the user would name it: relative to the spec that uses it.
            display = os.path.normpath(os.path.join(os.path.dirname(current_name), decl.path))
            try:
                path = (base / decl.path).resolve()
            except (OSError, RuntimeError) as err:  # a loop of symbolic links
                reason = getattr(err, "strerror", None) or str(err)
                message = f"{display}: cannot resolve it: {reason}"
                raise SpecImportError(message, decl.span) from None
            return [(path, display)]
        library, _, member = (decl.library or "").partition(".")
        if library != "std":
            raise SpecImportError(
                f"unknown library {library!r}; the bundled one is 'std'", decl.span
            )
        root = std_dir()
        if member:
            path = root / f"{member.replace('.', '/')}.mspec"
            if not path.is_file():
                raise SpecImportError(f"std has no module {member!r}", decl.span)
            return [(path.resolve(), f"std/{member}.mspec")]
        return [(p.resolve(), f"std/{p.name}") for p in sorted(root.glob("*.mspec"))]

    def define(self, decl: d.Decl, is_entry: bool) -> None:
        program = self.program
        if isinstance(decl, d.DeclLayer):
            if decl.is_model:
                if is_entry:
                    program.models.append(decl)
                return
            self.check_new(decl.name, decl.span)
            program.layers[decl.name] = decl
        elif isinstance(decl, d.DeclExpect):
            if is_entry:
                program.expects.append(decl)
        elif isinstance(decl, d.DeclAssume):
            if is_entry:
                program.assumes.append(decl)
        elif isinstance(decl, d.DeclAssumeSize):
            program.size_facts.append(decl)
        elif isinstance(decl, d.DeclTrain):
            if is_entry:
                program.trains.append(decl)
        elif isinstance(decl, d.DeclHfConfig):
            if is_entry:
                program.hf_configs.append(decl)
        else:
            table = getattr(program, _TABLES[type(decl)])
            if isinstance(decl, (d.DeclDim, d.DeclLet, d.DeclFn)):
                self.check_new(decl.name, decl.span)
                if isinstance(decl, d.DeclDim) and decl.symbol != decl.name:
                    self.check_new(decl.symbol, decl.span)
            elif decl.name in table:
                first = table[decl.name].span
                raise NameResolutionError(f"{decl.name!r} is defined twice", decl.span).with_note(
                    "first defined here", first
                )
            table[decl.name] = decl

    def check_new(self, name: str, span: Span | None) -> None:
        names = self.program.top_level_names()
        if name in names:
            raise NameResolutionError(f"{name!r} is defined twice", span).with_note(
                "first defined here", names[name]
            )


PRELUDE = "train"  # std/train.mspec: the policies every spec can name without `use`


def load_program(source: SourceFile, path: Path | None, extras: tuple[str, ...] = ()) -> Program:
    """Parse `source` and everything it uses; `path` anchors relative `use`s.

    The standard policies (precisions, optimizers, conventions) are loaded first, so a
    spec without `use std` can still say `train { optimizer sgd }`. `extras` are std
    modules loaded after it, unless it uses them itself: the layers a command-line flag
    puts into the model (`peft.lora` for --lora, `bitsandbytes.linear4bit` for
    --weights), which `use std` leaves out.
    """
    program = Program(entry=source)
    loader = _Loader(program)
    prelude = (std_dir() / f"{PRELUDE}.mspec").resolve()
    loader.load(read_source(prelude, f"std/{PRELUDE}.mspec"), prelude, is_entry=False)
    loader.load(source, path.resolve() if path else None, is_entry=True)
    for member in extras:
        extra = (std_dir() / f"{member.replace('.', '/')}.mspec").resolve()
        if extra not in loader.loaded:
            display = f"std/{member.replace('.', '/')}.mspec"
            loader.load(read_source(extra, display), extra, is_entry=False)
    return program


def with_dim(program: Program, name: str, symbol: str, role: str) -> Program:
    """The program with a dim a flag declares (`data_parallel_degree as DP`), after its
    own; `role` says what the flag names by it, for the error if the spec took it."""
    names = program.top_level_names()
    if symbol in names or name in names:
        raise UsageError(
            f"the spec declares {symbol}, which {role}", names.get(symbol) or names.get(name)
        )
    dim = d.DeclDim(name, symbol)
    return dataclasses.replace(program, dims={**program.dims, dim.name: dim})
