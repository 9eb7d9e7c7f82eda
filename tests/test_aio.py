"""Blocking callables with an ``.aio`` twin (`_aio`), bound to instances and classes as methods are."""

from __future__ import annotations

import asyncio
import copy
import threading

from flyteplugins.hitl._aio import Blocking, blocking


class Counter:
    def __init__(self, start: int) -> None:
        self.start = start

    def _add(self, n: int) -> tuple[int, str]:
        return self.start + n, threading.current_thread().name

    async def _add_aio(self, n: int) -> tuple[int, str]:
        return self.start + n + 1000, "native"

    def _make(cls, start: int) -> Counter:
        return cls(start)

    add = Blocking(_add, bind="instance")
    add_native = Blocking(_add, _add_aio, bind="instance")
    make = Blocking(_make, bind="class")


def test_a_bound_call_blocks_in_the_caller_and_aio_runs_in_a_worker_thread() -> None:
    counter = Counter(10)
    assert counter.add(5) == (15, threading.current_thread().name)
    value, thread = asyncio.run(counter.add.aio(5))
    assert value == 15 and thread != threading.current_thread().name


def test_a_native_twin_is_awaited_with_the_instance() -> None:
    assert Counter(1).add_native(1)[0] == 2
    assert asyncio.run(Counter(1).add_native.aio(1)) == (1002, "native")


def test_class_binding_passes_the_class_from_the_class_and_from_an_instance() -> None:
    assert Counter.make(3).start == 3
    assert Counter(0).make(4).start == 4
    assert asyncio.run(Counter.make.aio(5)).start == 5


def test_bound_callables_keep_the_name_and_survive_a_copy() -> None:
    bound = Counter(2).add
    assert bound.__name__ == "_add" and bound.__qualname__ == "Counter._add"
    assert copy.copy(bound)(1)[0] == 3
    assert "Counter._add" in repr(bound)
    assert Counter.add is Counter.__dict__["add"], "an instance-bound callable read from its class stays unbound"


def test_the_decorator_makes_a_plain_function_blocking() -> None:
    @blocking()
    def double(x: int) -> int:
        return 2 * x

    assert double(4) == 8
    assert asyncio.run(double.aio(4)) == 8
