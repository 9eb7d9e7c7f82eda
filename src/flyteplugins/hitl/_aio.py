"""Blocking callables with an ``.aio`` twin.

``f(...)`` blocks; ``await f.aio(...)`` awaits the call's native coroutine twin when it has one, and
otherwise runs the blocking call in ``asyncio.to_thread`` (which copies context variables, so Flyte's
task context stays visible in the worker thread). Only short calls may take the thread: a call that
waits for a person gets a native twin, so that it never sits in the shared pool.

Both are typed for checkers: ``event.wait()`` is an ``int`` for an ``Event[int]``, and so is
``await event.wait.aio()``. Both show the real parameters to `inspect.signature` and `help`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Concatenate, Generic, TypeVar, cast, overload

from typing_extensions import ParamSpec, Self

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")


def _twin(
    func: Callable[..., Any], native: Callable[..., Awaitable[Any]] | None, signature: inspect.Signature, name: str
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """The ``.aio`` of `func`: `native` awaited, or `func` in a worker thread; shown with `signature`."""
    if native is None:

        async def aio(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(func, *args, **kwargs)

    else:

        async def aio(*args: Any, **kwargs: Any) -> Any:
            return await native(*args, **kwargs)

    aio.__name__, aio.__qualname__ = "aio", f"{name}.aio"
    aio.__doc__ = f"``await {name}.aio(...)``: `{name}` without blocking the event loop."
    aio.__signature__ = signature  # type: ignore[attr-defined]
    return aio


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

    aio: Callable[P, Coroutine[Any, Any, R]]

    def __init__(
        self, func: Callable[P, R], aio: Callable[P, Awaitable[R]] | None = None, name: str | None = None
    ) -> None:
        functools.update_wrapper(self, func)
        self._func = func
        self.__qualname__ = name or func.__qualname__
        self.aio = _twin(func, aio, inspect.signature(func), self.__qualname__)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._func(*args, **kwargs)

    def __get__(self, obj: object, objtype: type | None = None) -> Self:
        # A class attribute (`Event.create`) stays this callable, as a staticmethod would; and being a
        # descriptor makes `help()` document it as a function, with its signature.
        return self

    def __repr__(self) -> str:
        return f"<blocking {self.__qualname__!r} with .aio>"


class BlockingMethod(Generic[S, P, R]):
    """A method with an ``.aio`` twin, bound to its instance as a method is: ``event.wait()``,
    ``await event.wait.aio()``. Read from the class, it is the plain function of the instance:
    ``Event.wait(event)``, ``await Event.wait.aio(event)``.

    Example:
        >>> class Counter:
        ...     def _next(self) -> int: ...
        ...     async def _next_aio(self) -> int: ...
        ...     next = BlockingMethod(_next, _next_aio)
    """

    aio: Callable[Concatenate[S, P], Coroutine[Any, Any, R]]

    def __init__(
        self, func: Callable[Concatenate[S, P], R], aio: Callable[Concatenate[S, P], Awaitable[R]] | None = None
    ) -> None:
        functools.update_wrapper(cast(Any, self), func)
        self._func = func
        self._aio = aio
        self.aio = _twin(func, aio, inspect.signature(func), func.__qualname__)

    def __set_name__(self, owner: type, name: str) -> None:
        self.__name__, self.__qualname__ = name, f"{owner.__qualname__}.{name}"
        self.aio = _twin(self._func, self._aio, inspect.signature(self._func), self.__qualname__)

    def __call__(self, obj: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._func(obj, *args, **kwargs)

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Self: ...
    @overload
    def __get__(self, obj: S, objtype: type | None = None) -> Blocking[P, R]: ...
    def __get__(self, obj: S | None, objtype: type | None = None) -> Blocking[P, R] | Self:
        if obj is None:
            return self
        native = None if self._aio is None else functools.partial(self._aio, obj)
        bound: Blocking[P, R] = Blocking(cast(Any, functools.partial(self._func, obj)), native, self.__qualname__)
        bound.__name__, bound.__doc__ = self.__name__, self.__doc__  # type: ignore[attr-defined]
        return bound

    def __repr__(self) -> str:
        return f"<blocking method {self.__qualname__!r} with .aio>"


def blocking(aio: Callable[..., Awaitable[Any]] | None = None) -> Callable[[Callable[P, R]], Blocking[P, R]]:
    """Decorate a blocking function so that it also has an ``.aio`` variant (`aio`, if given, is its
    native coroutine twin, called with the same arguments)."""

    def wrap(func: Callable[P, R]) -> Blocking[P, R]:
        return Blocking(func, aio)

    return wrap
