"""Gauges read from a database on a period, shown only while the reads succeed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

MIN_TIMEOUT_S = 5.0


async def show_every(seconds: float, read: Callable[[float], Awaitable[T]], show: Callable[[T | None], None],
                     log: logging.Logger, failed: str) -> None:
    """Every ``seconds``: ``show(await read(timeout))``. A read that fails or takes longer than
    ``seconds`` (at least 5 s) shows nothing (``show(None)``: the caller takes its series out), so
    no value older than about two periods is shown; it is logged once (``failed``, with the error)
    until a read succeeds. A sample missed is not a failure of the service."""
    failing = False
    timeout = max(MIN_TIMEOUT_S, seconds)
    while True:
        try:
            async with asyncio.timeout(timeout):  # whatever ``read`` does with it
                found = await read(timeout)
            show(found)
            failing = False
        except Exception as exc:  # noqa: BLE001 - a cancellation is a BaseException and passes
            show(None)
            if not failing:
                log.warning("%s: %r", failed, exc)
            failing = True
        await asyncio.sleep(seconds)
