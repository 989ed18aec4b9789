"""`--hf-config PATH`: a Hugging Face `config.json`'s fields as the spec's dims.

A spec says, in the spec language, how a config of its `model_type` sets its dims:
`hf_config "llama" { D = hidden_size, KV = default(num_key_value_heads,
num_attention_heads), require not default(tie_word_embeddings, false) }`. The bindings
are arithmetic over the config's fields, built into sympy from the parse tree (never
evaluated as Python); `default(a, b)` is b where the config has no a or a null one; a
`require` that does not hold is an error (the spec's model is not that config's). The
values are bound as a preset's are (`--set` wins), and every field no binding read is
listed in the report: nothing is dropped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import sympy as sp

from memspec.compile_cache import note_read
from memspec.errors import UsageError
from memspec.quantize import FP8_BLOCK, SKIPPED, Weights
from memspec.symbolic.bind import Bindings, check_value
from memspec.symbolic.symbols import SymbolTable
from memspec.syntax import decls as d
from memspec.syntax import nodes as n

__all__ = ["HfConfig", "HfConfigUse", "read_config", "spec_for", "weights_of"]

_ARITHMETIC = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "//": lambda a, b: sp.floor(a / b),
    "%": lambda a, b: sp.Mod(a, b),
    "**": lambda a, b: a**b,
}
_COMPARE = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


@dataclass(frozen=True)
class HfConfig:
    """A config.json's top-level fields."""

    path: str
    fields: dict

    @property
    def model_type(self) -> str | None:
        value = self.fields.get("model_type")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class HfConfigUse:
    """What a config set: its path and model type, each dim's value and the fields it
    came from, the fields the requirements read, and the fields nothing read."""

    path: str
    model_type: str
    dims: tuple[tuple[str, int, tuple[str, ...]], ...]
    checked: tuple[str, ...]
    unused: tuple[str, ...]


def read_config(path: str | Path) -> HfConfig:
    """The config.json at `path` (a local file: memspec never downloads one)."""
    try:
        data = Path(path).read_bytes()
        text = data.decode("utf-8")
    except OSError as err:
        raise UsageError(f"--hf-config {path}: cannot read it ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise UsageError(f"--hf-config {path}: not UTF-8 text (byte {err.start})") from None
    note_read(Path(path), data)
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(
            f"--hf-config {path}:{err.lineno}:{err.colno}: not JSON ({err.msg})"
        ) from None
    if not isinstance(fields, dict):
        raise UsageError(f"--hf-config {path}: a config.json is a JSON object")
    return HfConfig(str(path), fields)


def _number(value: object, node: n.Expr) -> sp.Expr:
    if isinstance(value, bool) or not isinstance(value, sp.Expr):
        raise UsageError("a number is needed here, not a truth value", node.span)
    return value


def _bool(value: object, node: n.Expr) -> bool:
    if not isinstance(value, bool):
        raise UsageError("a truth value is needed here, not a number", node.span)
    return value


class _Missing(Exception):
    def __init__(self, field: str):
        super().__init__(field)
        self.field = field


class _Reader:
    """Evaluates an hf_config expression over the config's fields, noting what it read."""

    def __init__(self, config: HfConfig):
        self.config = config
        self.read: list[str] = []

    def value(self, node: n.Expr) -> object:
        if isinstance(node, n.ExprInt):
            return sp.Integer(node.value)
        if isinstance(node, n.ExprFloat):
            return sp.Rational(node.text)
        if isinstance(node, n.ExprBool):
            return node.value
        if isinstance(node, n.ExprName):
            return self.field(node)
        if isinstance(node, n.ExprUnary):
            operand = self.value(node.operand)
            if node.op == "not":
                return not _bool(operand, node)
            return -_number(operand, node)
        if isinstance(node, n.ExprBinary):
            if node.op in ("and", "or"):
                left = _bool(self.value(node.left), node)
                if (node.op == "and") != left:  # short-circuit as Python does
                    return left
                return _bool(self.value(node.right), node)
            left, right = self.value(node.left), self.value(node.right)
            if node.op in _COMPARE:
                return bool(_COMPARE[node.op](left, right))
            if node.op in _ARITHMETIC:
                return _ARITHMETIC[node.op](_number(left, node.left), _number(right, node.right))
        if (
            isinstance(node, n.ExprCall)
            and isinstance(node.callee, n.ExprName)
            and node.callee.name == "default"
            and len(node.args) == 2
        ):
            try:
                return self.value(node.args[0].value)
            except _Missing:
                return self.value(node.args[1].value)
        raise UsageError(
            "an hf_config binding is arithmetic, comparisons and default(field, value) "
            "over the config's fields",
            getattr(node, "span", None),
        )

    def field(self, node: n.ExprName) -> object:
        fields = self.config.fields
        if fields.get(node.name) is None:
            raise _Missing(node.name)
        self.read.append(node.name)
        value = fields[node.name]
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return sp.Integer(value)
        if isinstance(value, float):
            return sp.Rational(repr(value))
        raise UsageError(
            f"--hf-config {self.config.path}: field {node.name!r} is {json.dumps(value)}, "
            "not a number",
            node.span,
        )


def mapping_for(configs: list[d.DeclHfConfig], config: HfConfig, spec: str) -> d.DeclHfConfig:
    """The spec's hf_config block for the config's model_type."""
    model_type = config.model_type
    if model_type is None:
        raise UsageError(f"--hf-config {config.path}: no model_type field")
    for decl in configs:
        if model_type in decl.model_types:
            return decl
    declared = sorted({t for decl in configs for t in decl.model_types})
    raise UsageError(
        f"--hf-config {config.path}: model_type {model_type!r} is not one {spec} reads"
        + (f" (it reads {', '.join(declared)})" if declared else " (it has no hf_config block)")
    )


def config_bindings(
    configs: list[d.DeclHfConfig],
    table: SymbolTable,
    config: HfConfig,
    spec: str,
    model: str | None = None,
) -> tuple[Bindings, HfConfigUse]:
    """The dims' values the config gives, and what it set (for the report). `model`: the
    spec's model's name, which the config's `architectures` must list where it has them
    (a LlamaForSequenceClassification is a llama model_type with another head)."""
    decl = mapping_for(configs, config, spec)
    bindings: Bindings = {}
    dims = []
    read: set[str] = {"model_type", "quantization_config"}  # the latter by weights_of
    checked: list[str] = []
    if _check_architectures(config, spec, model):
        read.add("architectures")
        checked.append("architectures")
    for require in decl.requires:
        reader = _Reader(config)
        try:
            holds = _bool(reader.value(require), require)
        except _Missing as missing:
            raise UsageError(
                f"--hf-config {config.path}: no field {missing.field!r}, which this "
                "requirement reads",
                getattr(require, "span", None),
            ) from None
        read.update(reader.read)
        checked += reader.read
        if not holds:
            raise UsageError(
                f"--hf-config {config.path}: this config is not {spec}'s model (a "
                "requirement does not hold)",
                getattr(require, "span", None),
            )
    for key, expr, span in decl.bindings:
        dim = table.lookup(key)
        if dim is None:
            raise UsageError(f"hf_config: {key!r} is not a dim", span)
        reader = _Reader(config)
        try:
            value = reader.value(expr)
        except _Missing as missing:
            raise UsageError(
                f"--hf-config {config.path}: no field {missing.field!r}, which {key} needs",
                span,
            ) from None
        value = check_value(key, _number(value, expr), span, "hf_config")
        bindings[dim.symbol] = value
        read.update(reader.read)
        dims.append((key, int(value), tuple(dict.fromkeys(reader.read))))
    unused = tuple(sorted(k for k in config.fields if k not in read))
    model_type = config.model_type or ""
    return bindings, HfConfigUse(
        config.path, model_type, tuple(dims), tuple(dict.fromkeys(checked)), unused
    )


def _check_architectures(config: HfConfig, spec: str, model: str | None) -> bool:
    """Whether the config's `architectures` were checked (they list the spec's model)."""
    architectures = config.fields.get("architectures")
    if architectures is None or model is None:
        return False
    if not (isinstance(architectures, list) and all(isinstance(a, str) for a in architectures)):
        raise UsageError(f"--hf-config {config.path}: architectures is a list of class names")
    if model not in architectures:
        raise UsageError(
            f"--hf-config {config.path}: architectures {', '.join(architectures) or '(none)'} "
            f"do not include {model}, the model {spec} declares: the same model_type with "
            "other heads or layers is not this spec's model"
        )
    return True


def spec_for(config: HfConfig) -> Path:
    """The bundled spec whose hf_config block reads the config's model_type (`memspec
    compile --hf-config PATH` without a spec)."""
    from memspec.resources import zoo_dir
    from memspec.syntax.imports import read_source
    from memspec.syntax.parse import parse

    model_type = config.model_type
    if model_type is None:
        raise UsageError(f"--hf-config {config.path}: no model_type field")
    found, known = [], set()
    for path in sorted(zoo_dir().glob("*.mspec")):
        source = read_source(path, path.name)
        module = parse(source.text, source)
        for decl in module.decls:
            if isinstance(decl, d.DeclHfConfig):
                known.update(decl.model_types)
                if model_type in decl.model_types:
                    found.append(path)
    if not found:
        raise UsageError(
            f"--hf-config {config.path}: no bundled spec reads model_type {model_type!r} "
            f"(they read {', '.join(sorted(known))}); name a spec that declares "
            "`hf_config` for it"
        )
    return found[0]


def weights_of(config: HfConfig) -> Weights | None:
    """The `--weights` a config's `quantization_config` stands for (None without one):
    transformers' FineGrainedFP8Config (quant_method fp8, blocks of 128, dynamic
    activation scales) or BitsAndBytesConfig (4-bit nf4/fp4, 8-bit). Any other method, or
    settings memspec does not model, is refused: its weights are not the config's dtype."""
    settings = config.fields.get("quantization_config")
    if settings is None:
        return None
    where = f"--hf-config {config.path}: quantization_config"
    if not isinstance(settings, dict):
        raise UsageError(f"{where} is not a JSON object")
    method = settings.get("quant_method")
    skip = settings.get("modules_to_not_convert") or settings.get("llm_int8_skip_modules")
    if skip is not None and not (
        isinstance(skip, list) and all(isinstance(s, str) and s for s in skip)
    ):
        raise UsageError(f"{where}: modules_to_not_convert is a list of module names")
    kept = tuple(skip) if skip else SKIPPED

    def weights(fmt: str, **options) -> Weights:
        try:  # Weights' own refusals (a format or dtype it does not know), named here
            return Weights(fmt, skip=kept, **options)
        except UsageError as err:
            raise UsageError(f"{where}: {err}") from None

    if method == "fp8":
        block = settings.get("weight_block_size", [FP8_BLOCK, FP8_BLOCK])
        scheme = settings.get("activation_scheme", "dynamic")
        if block != [FP8_BLOCK, FP8_BLOCK] or scheme != "dynamic":
            raise UsageError(
                f"{where}: FP8 with weight_block_size {block!r} and activation_scheme "
                f"{scheme!r} is not modelled (memspec's fp8 is [{FP8_BLOCK}, {FP8_BLOCK}] "
                "blocks with dynamic activation scales, FineGrainedFP8Config's defaults)"
            )
        return weights("fp8")
    if method == "bitsandbytes":
        if settings.get("load_in_8bit"):
            return weights("int8")
        if settings.get("load_in_4bit"):
            # BitsAndBytesConfig's defaults where a field is missing or null
            compute = settings.get("bnb_4bit_compute_dtype") or "float32"
            return weights(
                str(settings.get("bnb_4bit_quant_type") or "fp4"),
                compute=str(compute).removeprefix("torch."),
                double_quant=bool(settings.get("bnb_4bit_use_double_quant", False)),
            )
        raise UsageError(f"{where}: bitsandbytes with neither load_in_4bit nor load_in_8bit")
    raise UsageError(
        f"{where}: quant_method {method!r} is not modelled (memspec models fp8, as "
        "FineGrainedFP8Config stores it, and bitsandbytes' 4-bit and 8-bit); its weights are "
        "not the model's dtype, so no answer is given for them"
    )
