"""Ctrl-C during a wait: the program ends with one line on the console, not a traceback.

A wait runs inside `interruptible`. When a KeyboardInterrupt ends it (or the cancellation that
``asyncio.run`` turns Ctrl-C into), the event's name is noted and the exception goes on unchanged,
so the program may still catch it. If nothing does, the interpreter shows it through
``sys.excepthook`` as its last act; the hook installed here shows one line per interrupted event
instead::

    [hitl] interrupted: 'approve' is still waiting; re-run to pick it up

The process still ends as a Ctrl-C does (killed by SIGINT: status 130 in a shell). Any other
exception, or a Ctrl-C outside a wait, goes to the hook that was there before.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from types import TracebackType

_Hook = Callable[[type[BaseException], BaseException, TracebackType | None], object]

_lock = threading.Lock()
_interrupted: dict[str, None] = {}  # the names of the events whose wait a Ctrl-C ended, in order
_previous_hook: _Hook | None = None  # the hook this module replaced, once it has


@contextlib.contextmanager
def interruptible(name: str) -> Iterator[None]:
    """Run one wait on the event `name`; a Ctrl-C that ends it and ends the program prints one line.

    Example:
        >>> with interruptible(event.name):
        ...     signal.wait(seconds)
    """
    global _previous_hook
    try:
        yield
    except (KeyboardInterrupt, asyncio.CancelledError):
        with _lock:
            _interrupted[name] = None
            if _previous_hook is None:
                _previous_hook, sys.excepthook = sys.excepthook, _excepthook
        raise


def _excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    with _lock:
        names = list(_interrupted) if issubclass(kind, KeyboardInterrupt) else []
        previous = _previous_hook or sys.__excepthook__
    if not names:
        previous(kind, value, tb)
        return
    with contextlib.suppress(OSError, ValueError):  # stdout closed or gone: nothing more to say
        sys.stdout.write("".join(f"[hitl] interrupted: {n!r} is still waiting; re-run to pick it up\n" for n in names))
        sys.stdout.flush()
