"""Waiting in tests for something a real server does."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def until(condition: Callable[[], bool | Awaitable[bool]], timeout: float = 60.0, poll: float = 0.01) -> None:
    """Return once ``condition()`` holds (it may be a coroutine function); fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout

    async def holds() -> bool:
        result = condition()
        return bool(await result) if inspect.isawaitable(result) else bool(result)

    while not await holds():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(poll)
