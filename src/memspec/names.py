"""What an "unknown name" error suggests: the nearest names that exist, else what does.

The nearest are found as Python's own NameError suggestions are (difflib's ratio, the
closest first); when none is close, the names that exist are listed, the most local
first and capped, so a message never runs to hundreds of names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["did_you_mean", "name_hint", "nearest"]

MAX_NEAREST = 3
MAX_LISTED = 10


def nearest(name: str, candidates: Iterable[str]) -> list[str]:
    """Up to MAX_NEAREST names of `candidates` close to `name`, the closest first."""
    return difflib.get_close_matches(name, list(dict.fromkeys(candidates)), n=MAX_NEAREST)


def _quoted_list(names: list[str], last: str) -> str:
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} {last} {quoted[-1]}"


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`; did you mean 'a' or 'b'?` with the nearest candidates; empty when none is close
    (for messages that list every candidate themselves)."""
    close = nearest(name, [c for c in candidates if c != name])
    return f"; did you mean {_quoted_list(close, 'or')}?" if close else ""


def name_hint(name: str, candidates: Iterable[str], listing: str = "names in scope") -> str:
    """`; did you mean 'a' or 'b'?`, or, when nothing is close, `; <listing>: a, b, ...`
    (candidates in the order given, the first MAX_LISTED); empty without candidates."""
    names = [c for c in dict.fromkeys(candidates) if c != name]
    if close := did_you_mean(name, names):
        return close
    if not names:
        return ""
    shown = ", ".join(names[:MAX_LISTED])
    more = len(names) - MAX_LISTED
    return f"; {listing}: {shown}" + (f" and {more} more" if more > 0 else "")
