"""Blocking callables with an ``.aio`` twin (`_aio`), and methods bound to their instance as methods are."""

from __future__ import annotations

import asyncio
import copy
import threading

from flyteplugins.hitl._aio import Blocking, BlockingMethod, blocking


class Counter:
    def __init__(self, start: int) -> None:
        self.start = start

    def _add(self, n: int) -> tuple[int, str]:
        return self.start + n, threading.current_thread().name

    async def _add_aio(self, n: int) -> tuple[int, str]:
        return self.start + n + 1000, "native"

    add = BlockingMethod(_add)
    add_native = BlockingMethod(_add, _add_aio)


def test_a_bound_call_blocks_in_the_caller_and_aio_runs_in_a_worker_thread() -> None:
    counter = Counter(10)
    assert counter.add(5) == (15, threading.current_thread().name)
    value, thread = asyncio.run(counter.add.aio(5))
    assert value == 15 and thread != threading.current_thread().name


def test_a_native_twin_is_awaited_with_the_instance() -> None:
    assert Counter(1).add_native(1)[0] == 2
    assert asyncio.run(Counter(1).add_native.aio(1)) == (1002, "native")


def test_bound_callables_keep_the_name_and_survive_a_copy() -> None:
    bound = Counter(2).add
    assert bound.__name__ == "_add" and bound.__qualname__ == "Counter._add"
    assert copy.copy(bound)(1)[0] == 3
    assert "Counter._add" in repr(bound)
    assert Counter.add is Counter.__dict__["add"], "a method read from its class stays unbound"


def test_the_decorator_makes_a_plain_function_blocking() -> None:
    @blocking()
    def double(x: int) -> int:
        return 2 * x

    assert double(4) == 8
    assert asyncio.run(double.aio(4)) == 8
    assert isinstance(double, Blocking)


def test_the_decorator_takes_a_native_twin() -> None:
    async def triple_aio(x: int) -> int:
        return -3 * x  # tells the twin apart from the blocking call

    @blocking(triple_aio)
    def triple(x: int) -> int:
        return 3 * x

    assert triple(2) == 6
    assert asyncio.run(triple.aio(2)) == -6
