"""Consuming a reference feed with FastStream: validate, apply, dead-letter what cannot apply.

Feeds are applied at least once (upserts are idempotent): offsets are committed after the
record is in Postgres (``NACK_ON_ERROR``); a database that is away is retried after a pause; a
record that does not validate is dead-lettered with the reason and never retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from faststream import AckPolicy
from faststream.kafka import KafkaMessage
from pydantic import BaseModel, ValidationError

from yidi.platform import metrics
from yidi.platform.errors import PermanentError, TransientError
from yidi.platform.jsonwire import loads
from yidi.platform.service import Service
from yidi.platform.topics import dlq, feed_group

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


def feed(
    service: Service,
    topic: str,
    model: type[M],
    apply: Callable[[M], Awaitable[Any]],
    *,
    name: str | None = None,
) -> None:
    """Subscribe ``apply`` to ``topic``; ``apply`` gets a validated ``model``."""
    feed_name = name or topic
    full_topic = service.topic(topic)

    async def consume(msg: KafkaMessage) -> None:
        body = msg.body
        try:
            record = model.model_validate(loads(body))
            await apply(record)
        except (ValidationError, ValueError, PermanentError) as exc:
            metrics.REFDATA_RECORDS.labels(feed_name, "refused").inc()
            metrics.DEAD_LETTERS.labels(full_topic).inc()
            log.warning("%s: record refused: %s", feed_name, exc)
            raw = msg.raw_message
            await service.broker.publish(
                body, dlq(full_topic), key=raw.key,  # type: ignore[union-attr]
                headers={
                    "yidi-dlq-reason": str(exc)[:2000],
                    "yidi-dlq-source": f"{raw.topic}/{raw.partition}/{raw.offset}",  # type: ignore[union-attr]
                },
            )
            return
        except TransientError:
            await asyncio.sleep(1.0)  # then NACK: the record is read again
            raise
        except Exception:
            # A bug: keep the record (NACK) but do not spin on it; the log says what broke.
            log.exception("%s: unexpected failure applying a record", feed_name)
            await asyncio.sleep(5.0)
            raise
        metrics.REFDATA_RECORDS.labels(feed_name, "applied").inc()

    service.broker.subscriber(
        full_topic,
        group_id=service.settings.group(feed_group(service.name, topic)),
        ack_policy=AckPolicy.NACK_ON_ERROR,
        auto_offset_reset="earliest",
        # Some feeds are written in transactions (clearing.prepayment-status): never apply an aborted one.
        isolation_level="read_committed",
        no_reply=True,
    )(consume)
