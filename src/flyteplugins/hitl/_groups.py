"""Groups: the events of one fan-out, reviewed together on one page.

Every event belongs to a group. By default it is the run's name and the event's name, so every item
of a ``flyte.map`` that asks ``hitl.approve("label-ok", ...)`` lands in one group without a code
change; outside a run it is the event's name. ``group="..."`` names it instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from ._errors import InvalidEventError

#: The longest group name, in characters.
MAX_GROUP = 200


def check_group(name: str, group: object) -> str:
    """`group` as given to `new_event`, or `InvalidEventError` unless it is short printable text."""
    if not isinstance(group, str) or not group.strip() or len(group) > MAX_GROUP or not group.isprintable():
        raise InvalidEventError(
            f"group of event {name!r} must be printable text of 1 to {MAX_GROUP} characters, got {group!r}"
        )
    return group


def default_group(name: str) -> str:
    """The group of an event named `name` created here: ``<run>/<name>`` inside a Flyte run, else `name`."""
    import flyte

    tctx = flyte.ctx()
    run = tctx.action.run_name if tctx else None
    group = f"{run}/{name}" if run else name
    # An event name may hold what a group may not (a line break); such characters become spaces.
    return "".join(c if c.isprintable() else " " for c in group)[:MAX_GROUP]


def group_of(request: Mapping[str, Any]) -> str:
    """The event's group; an event stored before groups existed is a group of its own (its request id)."""
    return str(request.get("group") or request.get("request_id") or "")


class Summary(NamedTuple):
    """One group as the index and the inbox show it."""

    group: str
    waiting: int
    answered: int
    #: Seconds until the soonest deadline among the waiting items.
    soonest: float


def summarize(rows: Iterable[tuple[Mapping[str, Any], str, float]]) -> list[Summary]:
    """Per group, from (request, status, seconds left) rows: how many wait and how many are answered,
    soonest deadline first."""
    counts: dict[str, list[Any]] = {}
    for request, status, left in rows:
        entry = counts.setdefault(group_of(request), [0, 0, float("inf")])
        if status == "pending":
            entry[0] += 1
            entry[2] = min(entry[2], left)
        elif status == "completed":
            entry[1] += 1
    summaries = [Summary(g, w, a, s) for g, (w, a, s) in counts.items()]
    summaries.sort(key=lambda s: s.soonest)
    return summaries
