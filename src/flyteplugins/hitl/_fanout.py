"""Many events in one process: `new_events` asks one question per item, `as_completed` takes the answers
as they come. The events share a group, so a person reviews them on one page (``/review/<group>``)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncGenerator, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeAlias, TypeVar

from . import _markdown
from ._aio import blocking
from ._errors import InvalidEventError
from .hitl import Event, _create, _new_request_id, _preset_request_id, _preset_token

T = TypeVar("T")

#: Events written at once by `new_events`.
CONCURRENCY = 16

#: An item of `new_events`: its event's details, or (prompt, details).
Item: TypeAlias = "Mapping[str, Any] | tuple[str, Mapping[str, Any] | None]"


def _split(name: str, items: Iterable[Item], prompt: str) -> list[tuple[str, Mapping[str, Any] | None]]:
    """(prompt, details) of each item, all checked before any event is written."""
    split = []
    for n, item in enumerate(items):
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            text, details = item
        elif isinstance(item, Mapping):
            text, details = prompt, item
        else:
            raise InvalidEventError(
                f"item {n} of event {name!r} must be its details (a mapping) or (prompt, details), got {item!r}"
            )
        _markdown.check_details(details)
        split.append((text, details))
    if not split:
        raise InvalidEventError(f"new_events({name!r}) needs at least one item")
    return split


def _ids(name: str, count: int) -> list[str]:
    # Numbered in the items' order: a re-run of the task finds each item's event again.
    return [_new_request_id(name) for _ in range(count)]


async def _new_events_aio(
    name: str,
    items: Iterable[Item],
    data_type: type[T],
    prompt: str = "Please provide a value",
    timeout_seconds: float = 3600,
    poll_interval_seconds: float = 5,
    **options: Any,
) -> list[Event[T]]:
    split = _split(name, items, prompt)
    ids = _ids(name, len(split))
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(request_id: str, token: str | None, text: str, details: Mapping[str, Any] | None) -> Event[T]:
        async with gate:
            _preset_request_id.set(request_id)  # this task's own context, copied into its thread
            _preset_token.set(token)

            def make() -> Event[T]:
                return _create(
                    name, data_type, "run", text, timeout_seconds, poll_interval_seconds, details=details, **options
                )

            return await asyncio.to_thread(make)

    first = await asyncio.ensure_future(one(ids[0], None, *split[0]))
    rest = zip(ids[1:], split[1:], strict=True)
    return [first, *await asyncio.gather(*(one(i, first.token, text, details) for i, (text, details) in rest))]


@blocking(_new_events_aio)
def new_events(
    name: str,
    items: Iterable[Item],
    data_type: type[T],
    prompt: str = "Please provide a value",
    timeout_seconds: float = 3600,
    poll_interval_seconds: float = 5,
    **options: Any,
) -> list[Event[T]]:
    """Create one event per item, written concurrently, all in one group (see `new_event`).

    Args:
        name: The events' name.
        items: Each item's ``details`` (a mapping shown with its question), or ``(prompt, details)``.
        data_type: The type of every answer.
        prompt: The question of the items that bring none of their own.
        timeout_seconds: How long each event waits, from its creation.
        poll_interval_seconds: As for `new_event`.
        **options: What `Event.create` takes besides (``choices``, ``default``, ``respondents``,
            ``quorum``, ``group``, ...).

    Returns:
        The events, in the items' order; `as_completed` yields their answers as they come. They share
        the first one's token, so its form link, or the group's review page with it
        (``/review/<group>?token=…``), answers them all; name ``respondents`` to let only those people
        answer, each by their identity.

    Example:
        >>> events = hitl.new_events("label-ok", [{"image": u, "label": l} for u, l in rows], data_type=bool)
        >>> for event, ok in hitl.as_completed(events):
        ...     print(event.request_id, ok)
        >>> events = await hitl.new_events.aio("label-ok", rows, data_type=bool)
    """
    split = _split(name, items, prompt)
    ids = _ids(name, len(split))

    def one(request_id: str, token: str | None, text: str, details: Mapping[str, Any] | None) -> Event[T]:
        _preset_request_id.set(request_id)
        _preset_token.set(token)
        return _create(name, data_type, "run", text, timeout_seconds, poll_interval_seconds, details=details, **options)

    # The first item's token (a re-run finds it stored) is every item's: one review link answers them all.
    first = contextvars.copy_context().run(one, ids[0], None, *split[0])
    with ThreadPoolExecutor(min(CONCURRENCY, len(split)), thread_name_prefix="hitl-new-events") as pool:
        # Each in a copy of this context: a Flyte task's context stays visible, and each its own id.
        futures = [
            pool.submit(contextvars.copy_context().run, one, request_id, first.token, text, details)
            for request_id, (text, details) in zip(ids[1:], split[1:], strict=True)
        ]
        return [first, *(f.result() for f in futures)]


async def _as_completed_aio(events: Iterable[Event[T]]) -> AsyncGenerator[tuple[Event[T], T], None]:
    events = list(events)
    order = {id(e): n for n, e in enumerate(events)}
    tasks: dict[asyncio.Future[Any], Event[T]] = {asyncio.ensure_future(e.wait.aio()): e for e in events}
    pending: set[asyncio.Future[Any]] = set(tasks)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=lambda t: order[id(tasks[t])]):
                yield tasks[task], task.result()  # a wait's error (a timeout) ends the iteration
    finally:
        for task in pending:
            task.cancel()  # each wait releases what it registered
        await asyncio.gather(*pending, return_exceptions=True)


def as_completed(events: Iterable[Event[T]]) -> Iterator[tuple[Event[T], T]]:
    """Yield ``(event, value)`` for each event as its answer comes, first answered first.

    All the events wait at once, with no thread each; an error of one wait (`EventTimeoutError` for an
    event without a default) is raised when it comes, and the other waits end. ``async for event, value
    in hitl.as_completed.aio(events)`` does the same in async code.

    Example:
        >>> events = hitl.new_events("label-ok", items, data_type=bool)
        >>> for event, ok in hitl.as_completed(events):
        ...     record(event.request_id, ok)
    """
    # The waits run on a loop of their own in its own thread, so this works in code that runs inside
    # an event loop too (a blocking call in an async Flyte task).
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="hitl-as-completed", daemon=True)
    thread.start()
    answers = _as_completed_aio(events)

    async def following() -> tuple[Event[T], T]:
        return await answers.__anext__()

    try:
        while True:
            try:
                yield asyncio.run_coroutine_threadsafe(following(), loop).result()
            except StopAsyncIteration:
                return
    finally:
        asyncio.run_coroutine_threadsafe(answers.aclose(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


as_completed.aio = _as_completed_aio  # type: ignore[attr-defined]
