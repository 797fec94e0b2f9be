"""Waiting for an :class:`asyncio.Event` with a timeout, safely on Python 3.11.

Used by the broker's group clock and partition mover and by the client's consumer, each in a
task that another may cancel. Neither obvious tool is safe there on 3.11:
``asyncio.wait_for(event.wait(), t)`` can swallow a cancellation that arrives just as the
event is set (the task then never stops), and ``asyncio.timeout(t)`` can leave a cancellation
pending after its block when the timer fires just as the event is set (the task then dies at
its next await). :func:`wait_event` uses :func:`asyncio.wait`, which cancels nothing on
timeout: an outside cancellation is delivered, and only that one.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds have passed; whether it is set."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=max(0.0, timeout))
    finally:
        waiter.cancel()
    return event.is_set()
