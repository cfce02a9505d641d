"""What an exception wraps. requests and urllib3 hide the reason a connection failed (the
socket's ConnectionRefusedError, the TLS library's verify error) under layers of their own
exceptions, linked in four ways; the fetch and the alert channels both dig for it."""

from __future__ import annotations

from collections import deque
from typing import TypeVar

MAX_CAUSES = 20
E = TypeVar("E", bound=BaseException)


def causes(exc: BaseException, limit: int = MAX_CAUSES) -> list[BaseException]:
    """``exc`` and what it wraps, nearest first (breadth first): urllib3's ``reason``,
    exceptions among ``args``, ``__cause__``, ``__context__``. Each exception once (a chain
    can loop), and at most ``limit`` of them, which also bounds the depth."""
    found: list[BaseException] = []
    seen: set[int] = set()  # ids stay unique: ``found`` keeps every one alive
    todo = deque([exc])
    while todo and len(found) < limit:
        current = todo.popleft()
        if id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        linked = (getattr(current, "reason", None), *current.args, current.__cause__,
                  current.__context__)
        todo.extend(e for e in linked if isinstance(e, BaseException))
    return found


def find_cause(exc: BaseException, kind: type[E]) -> E | None:
    """The nearest exception of ``kind`` in ``causes(exc)``."""
    return next((e for e in causes(exc) if isinstance(e, kind)), None)
