"""Time limits that nest: a spec that takes too long is the user's error, not a hang.

`time_limit(seconds, what)` arms a POSIX interval timer; past it the work in the block
stops with a `UsageError` saying what took too long. Limits nest (a sweep of 120 s makes
compiles of 20 s each): the innermost timer is set to whichever ends first, and the outer
one is re-armed with its remaining time when the inner block ends. Where there is no
timer (Windows) or the caller is not the main thread (signals go to the main thread
only), the block runs without one.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from memspec.errors import UsageError

__all__ = ["time_limit"]

# (monotonic deadline, the message when it passes) of each active limit, outermost first
_ACTIVE: list[tuple[float, str]] = []
# Once a deadline passes, the timer fires again this often: code that catches every
# exception (a cache's "unreadable entry", a library's fallback) may swallow the first
# UsageError, and the block must still stop.
_AGAIN = 0.05


def _expired(signum, frame) -> None:
    now = time.monotonic()
    passed = [message for deadline, message in _ACTIVE if deadline <= now + 1e-3]
    if passed:
        raise UsageError(passed[0])
    _arm()  # early (an outer limit's timer while an inner one ends): wait on


def _arm() -> None:
    """The timer set to the earliest active deadline (off when none is active)."""
    if not _ACTIVE:
        signal.setitimer(signal.ITIMER_REAL, 0)
        return
    remaining = min(deadline for deadline, _ in _ACTIVE) - time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, max(remaining, 1e-3), _AGAIN)


@contextmanager
def _alarm_blocked() -> Iterator[None]:
    """No SIGALRM while the active limits change (it waits, then is delivered)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})


@contextmanager
def time_limit(seconds: float | None, what: str) -> Iterator[None]:
    """Stop the block with a UsageError naming `what` after `seconds` (None or 0: none)."""
    usable = (
        hasattr(signal, "setitimer")
        and hasattr(signal, "pthread_sigmask")
        and hasattr(signal, "sigwait")
        and threading.current_thread() is threading.main_thread()
    )
    if not seconds or seconds <= 0 or not usable:
        yield
        return
    message = (
        f"{what} took longer than {seconds:g} s; the input is too complex (raise the time "
        "limit to wait longer: --time-limit, or time_limit= in Python)"
    )
    with _alarm_blocked():
        outermost = not _ACTIVE
        previous = signal.signal(signal.SIGALRM, _expired) if outermost else None
        _ACTIVE.append((time.monotonic() + seconds, message))
        _arm()
    try:
        yield
    finally:
        with _alarm_blocked():
            _ACTIVE.pop()
            _arm()
            if outermost:
                if signal.SIGALRM in signal.sigpending():
                    signal.sigwait({signal.SIGALRM})  # ours: not for the handler before
                signal.signal(signal.SIGALRM, previous)
