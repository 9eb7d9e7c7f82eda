"""Blocking callables with an ``.aio`` twin.

``f(...)`` blocks; ``await f.aio(...)`` awaits the call's native coroutine twin when it has one, and
otherwise runs the blocking call in ``asyncio.to_thread`` (which copies context variables, so Flyte's
task context stays visible in the worker thread). Only short calls may take the thread: a call that
waits for a person gets a native twin, so that it never sits in the shared pool.

Both are typed for checkers: ``event.wait()`` is an ``int`` for an ``Event[int]``, and so is
``await event.wait.aio()``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, Generic, TypeVar, cast, overload

from typing_extensions import ParamSpec, Self

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


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

    def __init__(self, func: Callable[P, R], aio: Callable[P, Awaitable[R]] | None = None) -> None:
        functools.update_wrapper(self, func)
        self._func = func
        self._aio = aio

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._func(*args, **kwargs)

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the call without blocking the event loop and return its result."""
        if self._aio is not None:
            return await self._aio(*args, **kwargs)
        return await asyncio.to_thread(self._func, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<blocking {getattr(self, '__qualname__', self._func)!r} with .aio>"


class BlockingMethod(Generic[S, P, R]):
    """A method with an ``.aio`` twin, bound to its instance as a method is: ``event.wait()``,
    ``await event.wait.aio()``. Read from the class, it stays unbound.

    Example:
        >>> class Counter:
        ...     def _next(self) -> int: ...
        ...     async def _next_aio(self) -> int: ...
        ...     next = BlockingMethod(_next, _next_aio)
    """

    def __init__(
        self, func: Callable[Concatenate[S, P], R], aio: Callable[Concatenate[S, P], Awaitable[R]] | None = None
    ) -> None:
        functools.update_wrapper(cast(Any, self), func)  # a descriptor, not a callable: only the names
        self._func = func
        self._aio = aio

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Self: ...
    @overload
    def __get__(self, obj: S, objtype: type | None = None) -> _Bound[P, R]: ...
    def __get__(self, obj: S | None, objtype: type | None = None) -> _Bound[P, R] | Self:
        if obj is None:
            return self
        return _Bound(self, obj)

    def __repr__(self) -> str:
        return f"<blocking method {getattr(self, '__qualname__', self._func)!r} with .aio>"


class _Bound(Generic[P, R]):
    """A `BlockingMethod` bound to an instance. Two slots; the name and docs are read from the method."""

    __slots__ = ("_method", "_owner")

    def __init__(self, method: BlockingMethod[Any, P, R], owner: object) -> None:
        self._method = method
        self._owner = owner

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._method._func(self._owner, *args, **kwargs)

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the call without blocking the event loop and return its result."""
        aio = self._method._aio
        if aio is not None:
            return await aio(self._owner, *args, **kwargs)
        return await asyncio.to_thread(self._method._func, self._owner, *args, **kwargs)

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        return self._method.__doc__

    def __getattr__(self, name: str) -> Any:
        if name in _Bound.__slots__:  # not set yet (a copy being built): no lookup through itself
            raise AttributeError(name)
        return getattr(self._method, name)  # __name__, __qualname__, __wrapped__, ...

    def __repr__(self) -> str:
        return f"<bound {self._method!r} of {self._owner!r}>"


def blocking(aio: Callable[..., Awaitable[Any]] | None = None) -> Callable[[Callable[P, R]], Blocking[P, R]]:
    """Decorate a blocking function so that it also has an ``.aio`` variant (`aio`, if given, is its
    native coroutine twin, called with the same arguments)."""

    def wrap(func: Callable[P, R]) -> Blocking[P, R]:
        return Blocking(func, aio)

    return wrap
