"""Ctrl-C during a wait: the program ends with one line per event on the console, not a traceback.

A wait runs inside `interruptible`. When a Ctrl-C ends the program while it waits (in this thread,
through the cancellation that ``asyncio.run`` turns Ctrl-C into, or in another thread, as a Flyte
local run waits), the interpreter shows the KeyboardInterrupt through ``sys.excepthook`` as its last
act; the hook installed here settles each such event instead and says so in one line::

    [hitl] interrupted: 'approve' is withdrawn; it takes no more answers
    [hitl] interrupted: 'approve' is still waiting; re-run to pick it up

The first where nothing can come back for the event (the wait's `withdraw` stores the outcome that
says so), the second where a re-run re-attaches to it. The exception still goes on unchanged, so the
program may catch it, and the process still ends as a Ctrl-C does (killed by SIGINT: status 130 in a
shell). Any other exception, a cancellation that is not a Ctrl-C (an ``asyncio.wait_for`` timeout), or
a Ctrl-C outside a wait, goes to the hook that was there before.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from types import TracebackType

_Hook = Callable[[type[BaseException], BaseException, TracebackType | None], object]
#: An interrupted wait: its event's name, and what withdraws the event (None: a re-run re-attaches).
_Entry = tuple[str, Callable[[], str] | None]

_lock = threading.Lock()
_running: dict[int, _Entry] = {}  # the waits in progress, in any thread
_previous_hook: _Hook | None = None  # the hook this module replaced, once it has
_MARK = "_hitl_interrupted"  # the waits an exception ended, kept on the exception itself


@contextlib.contextmanager
def interruptible(name: str, withdraw: Callable[[], str] | None = None) -> Iterator[None]:
    """Run one wait on the event `name`; a Ctrl-C that ends the program during it prints one line
    (`withdraw`'s, when given: it withdraws the event and says so).

    Example:
        >>> with interruptible(event.name):
        ...     signal.wait(seconds)
    """
    global _previous_hook
    entry: _Entry = (name, withdraw)
    with _lock:
        _running[id(entry)] = entry
        if _previous_hook is None:
            _previous_hook, sys.excepthook = sys.excepthook, _excepthook
    try:
        yield
    except (KeyboardInterrupt, asyncio.CancelledError) as e:
        # Whether a cancellation was a Ctrl-C shows only at the end: asyncio.run raises the
        # KeyboardInterrupt from this very CancelledError.
        e.__dict__.setdefault(_MARK, []).append(entry)
        raise
    finally:
        with _lock:
            del _running[id(entry)]


def _ended_by(error: BaseException | None) -> list[_Entry]:
    """The waits that `error`, or the exception it was raised from, ended."""
    seen: list[_Entry] = []
    while error is not None and len(seen) < 1000:
        seen.extend(getattr(error, _MARK, ()))
        error = error.__context__
    return seen


def _excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    with _lock:
        entries = [*_ended_by(value), *_running.values()] if issubclass(kind, KeyboardInterrupt) else []
        previous = _previous_hook or sys.__excepthook__
    if not entries:
        previous(kind, value, tb)
        return
    lines = []
    for name, withdraw in entries:
        line = withdraw() if withdraw is not None else f"{name!r} is still waiting; re-run to pick it up"
        lines.append(f"[hitl] interrupted: {line}\n")
    with contextlib.suppress(OSError, ValueError):  # stdout closed or gone: nothing more to say
        sys.stdout.write("".join(lines))
        sys.stdout.flush()
