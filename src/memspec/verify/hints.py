"""What a `memspec verify` mismatch is made of, computed from both sides.

A mismatch row says only that two numbers differ. A hint names what each side holds
under that row (the tensors memspec's rules say an op saves, with their shape, dtype and
bytes, against the tensors torch's autograd saved there, and which op saved them) and
the relations between the numbers that hold exactly: the difference is a whole number of
one of those tensors (a view on one side, a copy on the other), or the two are in the
ratio of two dtypes' sizes. Nothing is guessed: a relation is printed only when it holds.
"""

from __future__ import annotations

import difflib
from fractions import Fraction

import sympy as sp

from memspec.ir.types import DType, shape_str
from memspec.result import CompileResult
from memspec.verify.compare import Row, Table
from memspec.verify.measure import SavedTensor

__all__ = ["activation_hints", "element_hints", "peak_hints"]


def _ratio(predicted: int, measured: int) -> str | None:
    """The two counts' ratio when it is that of two float dtypes' sizes (fp32 to bf16)."""
    if not predicted or not measured or predicted == measured:
        return None
    r = Fraction(measured, predicted)
    # float8 is a stored weight's type only (FP8Linear's), never one autograd saves
    floats = [d for d in DType if d.is_float and d is not DType.float8_e4m3fn]
    pairs = [
        f"{a.name} / {b.name}"
        for a in floats
        for b in floats
        if Fraction(a.itemsize, b.itemsize) == r
    ]
    if not pairs:
        return None
    return f"measured / predicted = {r}, as {', '.join(pairs)}: a dtype differs?"


def _whole(difference: int, size: int, what: str) -> str | None:
    """`difference` as a whole number of `size`-byte tensors, named by `what`."""
    if size <= 0 or difference == 0 or difference % size:
        return None
    k = abs(difference) // size
    side = "torch" if difference > 0 else "memspec"
    return f"{side} holds {k} x {what} more: a copy on one side, a view on the other?"


def activation_hints(result: CompileResult, row: Row, measured: list[SavedTensor]) -> list[str]:
    """For a mismatched activations row: memspec's saved tensors under it, torch's, and
    the relations between the difference and them."""
    subs = result.substitutions()
    lines = []
    items = [i for i in result.categories["activations"].items if (i.key or i.path) == row.name]
    sizes: list[tuple[int, str]] = []
    for item in items:
        shape = [
            int(sp.Integer(d).xreplace(subs) if isinstance(d, int) else d.xreplace(subs))
            for d in item.shape
        ]
        one = int(item.elements.xreplace(subs)) * item.dtype.itemsize
        count = int(item.multiplicity.xreplace(subs))
        what = f"[{', '.join(map(str, shape))}] {item.dtype.name} ({one:,} B)"
        lines.append(
            f"memspec: {item.path} {shape_str(item.shape)} {item.dtype.name}, "
            f"{one:,} B x {count}: {item.note or 'saved'}"
        )
        sizes.append((one, f"{item.path} {what}"))
    if not items:
        lines.append("memspec: saves nothing under this name")
    for tensor in measured:
        lines.append(f"torch:   {tensor.describe()}")
        sizes.append((tensor.bytes, f"the {tensor.describe()}"))
    if not measured:
        lines.append("torch:   saved nothing under this name (another storage instead?)")
    ratio = _ratio(row.predicted or 0, row.measured or 0)
    if ratio:  # the same tensors in another dtype, not one tensor more
        return [*lines, ratio]
    seen = set()
    for size, what in sizes:
        hint = _whole(row.difference, size, what)
        if hint and size not in seen:
            seen.add(size)
            lines.append(hint)
    return lines


def element_hints(table: Table, row: Row) -> list[str]:
    """For a mismatched parameter-like row: the ratio of the counts, and for a name only
    one side has, the nearest name the other side has."""
    lines = []
    if row.predicted is not None and row.measured is not None:
        r = Fraction(row.measured, row.predicted)
        lines.append(f"measured / predicted = {r} ({row.measured:,} / {row.predicted:,})")
    else:
        missing_side = "memspec" if row.predicted is None else "torch"
        pool = [
            r.name
            for r in table.rows
            if r is not row
            and (r.predicted is None if row.predicted is not None else r.measured is None)
        ]
        near = difflib.get_close_matches(row.name, pool, n=1, cutoff=0.5)
        text = f"{missing_side} has no {row.name}"
        if near:
            other = next(r for r in table.rows if r.name == near[0])
            count = other.measured if other.measured is not None else other.predicted
            text += f"; the nearest unmatched name is {near[0]} ({count:,})"
            if count == (row.measured if row.measured is not None else row.predicted):
                text += ", of the same size: a naming difference?"
        lines.append(text)
    return lines


def peak_hints(result: CompileResult, rows, phases: tuple[str, str]) -> list[str]:
    """For a peak mismatch: each category that differs, by how much, and whether that is
    a whole number of one of memspec's activation tensors; and, where the phases differ,
    memspec's largest moment in the tracker's phase."""
    subs = result.substitutions()
    lines = []
    tensors: dict[int, str] = {}  # one tensor's bytes -> the first activation that size
    for item in result.categories["activations"].items:
        one = int(item.elements.xreplace(subs)) * item.dtype.itemsize
        tensors.setdefault(one, f"{item.path} {shape_str(item.shape)} {item.dtype.name}")
    for category, measured, expected in rows:
        difference = measured - expected
        if not difference:
            continue
        more = "the tracker" if difference > 0 else "memspec"
        text = f"{category}: {more} holds {abs(difference):,} B more"
        # the tensors (above a scalar) the difference is 1 to 4 of, largest first
        matches = [
            f"{abs(difference) // one} x {what} ({one:,} B)"
            for one, what in sorted(tensors.items(), reverse=True)
            if one > 8 and abs(difference) % one == 0 and abs(difference) // one <= 4
        ]
        if matches:
            text += "; = " + ", or ".join(matches[:3])
        lines.append(text)
    tracker_phase, phase = phases
    if tracker_phase and tracker_phase != phase and result.peak.values:
        moments = [
            (value, c)
            for value, c in zip(result.peak.values, result.peak.candidates, strict=True)
            if c.phase.value == tracker_phase
        ]
        if moments:
            value, c = max(moments, key=lambda m: m[0])
            lines.append(
                f"the tracker peaks in {tracker_phase}, memspec in {phase}: memspec's largest "
                f"moment in {tracker_phase} is {c.label()}, {value:,} B"
            )
        else:
            lines.append(
                f"the tracker peaks in {tracker_phase}, memspec in {phase}: no moment of "
                f"memspec's in {tracker_phase} is a candidate for its peak"
            )
    return lines
