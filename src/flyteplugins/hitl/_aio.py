"""Blocking callables with an ``.aio`` twin.

``f(...)`` blocks; ``await f.aio(...)`` runs the same blocking call in ``asyncio.to_thread``
(which copies context variables, so Flyte's task context stays visible in the worker thread),
unless a native coroutine twin was given for a call that mostly waits.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Literal, TypeVar

from typing_extensions import ParamSpec

P = ParamSpec("P")
R = TypeVar("R")


class Blocking(Generic[P, R]):
    """A blocking callable whose `.aio` runs it without blocking the event loop.

    Example:
        >>> @blocking()
        ... def add(x: int) -> int:
        ...     return x + 1
        >>> add(1)
        2
        >>> import asyncio; asyncio.run(add.aio(1))
        2
    """

    def __init__(
        self,
        func: Callable[P, R],
        aio: Callable[P, Awaitable[R]] | None = None,
        bind: Literal["instance", "class"] | None = None,
    ) -> None:
        functools.update_wrapper(self, func)
        self._func = func
        self._aio = aio
        self._bind = bind

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._func(*args, **kwargs)

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the call without blocking the event loop and return its result."""
        if self._aio is not None:
            return await self._aio(*args, **kwargs)
        return await asyncio.to_thread(self._func, *args, **kwargs)

    def __get__(self, obj: object, objtype: type | None = None) -> Any:
        if self._bind == "class":
            owner: object = objtype if objtype is not None else type(obj)
        elif self._bind == "instance" and obj is not None:
            owner = obj
        else:
            return self
        return _Bound(self, owner)

    def __repr__(self) -> str:
        return f"<blocking {getattr(self, '__qualname__', self._func)!r} with .aio>"


class _Bound:
    """A `Blocking` bound to an instance or class, as a method is: ``event.wait()``, ``event.wait.aio()``.

    Two slots, and the name and docs read from the `Blocking`: a blocking call holds its bound
    callable for as long as it waits, and 10,000 waiting threads each hold one.
    """

    __slots__ = ("_blocking", "_owner")

    def __init__(self, blocking: Blocking[..., Any], owner: object) -> None:
        self._blocking = blocking
        self._owner = owner

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._blocking._func(self._owner, *args, **kwargs)

    async def aio(self, *args: Any, **kwargs: Any) -> Any:
        """Run the call without blocking the event loop and return its result."""
        aio = self._blocking._aio
        if aio is not None:
            return await aio(self._owner, *args, **kwargs)
        return await asyncio.to_thread(self._blocking._func, self._owner, *args, **kwargs)

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        return self._blocking.__doc__

    def __getattr__(self, name: str) -> Any:
        if name in _Bound.__slots__:  # not set yet (a copy being built): no lookup through itself
            raise AttributeError(name)
        return getattr(self._blocking, name)  # __name__, __qualname__, __wrapped__, ...

    def __repr__(self) -> str:
        return f"<bound {self._blocking!r} of {self._owner!r}>"


def blocking(
    aio: Callable[..., Awaitable[Any]] | None = None, bind: Literal["instance", "class"] | None = None
) -> Callable[[Callable[P, R]], Blocking[P, R]]:
    """Decorate a blocking function so that it also has an ``.aio`` variant."""

    def wrap(func: Callable[P, R]) -> Blocking[P, R]:
        return Blocking(func, aio, bind)

    return wrap
