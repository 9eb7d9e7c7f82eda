"""Blocking callables with an ``.aio`` twin (`_aio`), and methods bound to their instance as methods are."""

from __future__ import annotations

import asyncio
import copy
import inspect
import pydoc
import threading
from collections.abc import Callable
from typing import Any

import pytest

import flyteplugins.hitl as hitl
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
    assert bound.__name__ == "add" and bound.__qualname__ == "Counter.add"
    assert copy.copy(bound)(1)[0] == 3
    assert "Counter.add" in repr(bound)
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


def test_a_method_read_from_its_class_is_callable_with_the_instance_and_has_aio() -> None:
    assert callable(Counter.add_native) and Counter.add_native(Counter(1), 1)[0] == 2
    assert asyncio.run(Counter.add_native.aio(Counter(1), 1)) == (1002, "native")
    assert asyncio.run(Counter.add.aio(Counter(1), 1))[0] == 2
    assert callable(hitl.Event.wait) and callable(hitl.Event.wait.aio)
    assert inspect.iscoroutinefunction(hitl.Event.wait.aio)


def _parameters(call: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(call).parameters)


PUBLIC = {
    "new_event": hitl.new_event,
    "approve": hitl.approve,
    "Event.create": hitl.Event.create,
    "submit": hitl.submit,
}


@pytest.mark.parametrize("name", list(PUBLIC))
def test_every_public_callable_and_its_aio_show_the_real_parameters(name: str) -> None:
    call = PUBLIC[name]
    parameters = _parameters(call)
    assert "args" not in parameters and "kwargs" not in parameters, parameters
    assert _parameters(call.aio) == parameters
    assert parameters[0] in ("name", "target")
    assert f"{parameters[0]}: " in pydoc.render_doc(call), "help() shows the signature"


def test_the_wait_shows_its_parameters_on_the_class_and_bound() -> None:
    assert _parameters(hitl.Event.wait) == ["self"] and _parameters(hitl.Event.wait.aio) == ["self"]
    assert _parameters(Counter(1).add) == ["n"] and _parameters(Counter(1).add.aio) == ["n"]
    assert _parameters(Counter.add) == ["self", "n"]
