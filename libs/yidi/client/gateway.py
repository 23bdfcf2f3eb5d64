"""Send requests to Yidi over Kafka and wait for their answers, correlated by ``msgid``.

FastStream's ``broker.request()`` does not work against a real broker, so the client does what
a gateway does: it reads its reply topic (committed answers only) from the moment it starts,
publishes requests keyed by ``psn_no``, and matches each answer to its request by ``msgid``
(``reqid`` for filing results).

    async with GatewayClient("127.0.0.1:19092") as gw:
        answer = await gw.call(request_dict)
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from yidi.contracts.envelope import DEFAULT_REPLY_TO

log = logging.getLogger(__name__)


class GatewayTimeout(TimeoutError):
    """No answer came within the time allowed."""


class MalformedAnswer(ValueError):
    """The answer to a request could not be read: not JSON, or JSON that is not an object. The
    request's id was found in its bytes; ``raw`` holds them (a platform fault to report, with them)."""

    def __init__(self, message: str, raw: bytes) -> None:
        super().__init__(message)
        self.raw = raw


class PublishTimeout(TimeoutError):
    """Kafka did not acknowledge a request within the client's ``send_timeout``. The request may
    still be written later (the producer goes on trying): send it again under the same msgid, and
    the platform answers it from what it did the first time."""


class ReaderStopped(RuntimeError):
    """The client's reader of its reply topic failed (a Kafka error): no answer can reach the
    requests waiting, nor any sent after. The reader's own exception is the ``__cause__``."""


STOP_SECONDS = 10.0  # what stop() waits for its producer to hand over what it still holds


class GatewayClient:
    def __init__(
        self,
        bootstrap: str = "127.0.0.1:19092",
        *,
        reply_to: str = DEFAULT_REPLY_TO,
        request_topic: str = "settlement.requests",
        namespace: str = "",
        correlate_by: str = "msgid",
        on_answer: Callable[[dict[str, Any], int], None] | None = None,
        compression_type: str | None = None,
        send_timeout: float = 30.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.reply_to = reply_to
        self.request_topic = f"{namespace}{request_topic}"
        self.reply_topic = f"{namespace}{reply_to}"
        self.correlate_by = correlate_by
        self.on_answer = on_answer
        self.compression_type = compression_type  # gzip, lz4, snappy or zstd: the platform reads them all
        # How long a publish may wait for Kafka's acknowledgement: the idempotent producer never
        # gives up on its own (a broker away would hold send() and call() for ever).
        self.send_timeout = send_timeout
        self.answer_counts: Counter[str] = Counter()
        self._waiting: dict[str, list[asyncio.Future[dict[str, Any]]]] = defaultdict(list)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._reader_error: BaseException | None = None

    async def __aenter__(self) -> GatewayClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        # Idempotent: a publish retried across a broker restart (or a lost acknowledgement) is
        # written once, so the request is not answered twice.
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=0,
                                          enable_idempotence=True, compression_type=self.compression_type)
        await self._producer.start()
        partitions = await self._producer.partitions_for(self.reply_topic)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_max_wait_ms=50,
        )
        await self._consumer.start()
        tps = [TopicPartition(self.reply_topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, so no answer to a request sent next is missed
            await self._consumer.position(tp)
        self._reader = asyncio.create_task(self._read())

    async def stop(self) -> None:
        """Stop reading and publishing. The consumer and the producer are stopped whatever happened
        to the reader (its failure was logged, and said to whoever waited, when it happened)."""
        try:
            if self._reader:
                self._reader.cancel()
                try:
                    await self._reader
                except asyncio.CancelledError:
                    pass
                except Exception:  # noqa: BLE001 - _read records its own failures; this is belt and braces
                    log.exception("the reader of %s had failed", self.reply_topic)
        finally:
            try:
                if self._consumer:
                    await self._consumer.stop()
            finally:
                if self._producer:
                    await self._stop_producer(self._producer)

    @staticmethod
    async def _stop_producer(producer: AIOKafkaProducer) -> None:
        """Stop ``producer``, giving up after ``STOP_SECONDS`` on what Kafka has not acknowledged:
        the idempotent producer would wait for ever to deliver it to a broker that is away."""
        stopping = asyncio.ensure_future(producer.stop())
        done, _ = await asyncio.wait([stopping], timeout=STOP_SECONDS)
        if not done:
            # Its sender cancelled and its connections closed, the requests in flight fail at once
            # and producer.stop() ends (aiokafka 0.14: the sender's routine awaits them when cancelled).
            sender = producer._sender
            if sender.sender_task is not None:
                sender.sender_task.cancel()
            await producer.client.close()
            done, _ = await asyncio.wait([stopping], timeout=STOP_SECONDS)
        if done:
            stopping.result()

    async def _read(self) -> None:
        """Read answers until cancelled. If reading fails (a Kafka error), every request waiting,
        and every one sent after, fails with ``ReaderStopped``: they would only time out."""
        assert self._consumer is not None
        try:
            while True:
                batch = await self._consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        self._on_record(record.value, record.timestamp)
        except Exception as exc:  # noqa: BLE001 - said to every caller, as ReaderStopped
            log.exception("reading answers on %s failed; no answer can be matched any more", self.reply_topic)
            self._reader_error = exc
            waiting, self._waiting = self._waiting, defaultdict(list)
            for futs in waiting.values():
                for fut in futs:
                    if not fut.done():
                        fut.set_exception(self._stopped())

    def _on_record(self, value: bytes | None, timestamp: int) -> None:
        if value is None:  # a tombstone: orjson.loads(None) raised, and ended the reader (a review, session 37)
            log.warning("a record with no value (a tombstone) on %s: not an answer", self.reply_topic)
            return
        try:
            answer = orjson.loads(value)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):  # JSON that is not an object ended the reader once
            self._on_unreadable(value)
            return
        key = str(answer.get(self.correlate_by, ""))
        self.answer_counts[key] += 1
        if self.on_answer:
            try:
                self.on_answer(answer, timestamp)
            except Exception:  # noqa: BLE001 - the caller's callback: its failure is not the answer's
                # It ended the reader: this answer's request, and every later one, timed out
                # (a review, session 36).
                log.exception("on_answer failed on the answer to %s %s", self.correlate_by, key)
        for fut in self._waiting.pop(key, []):
            if not fut.done():
                fut.set_result(answer)

    def _on_unreadable(self, value: bytes) -> None:
        """An answer that cannot be read fails the request whose id its bytes hold, at once: dropped
        (as it was), the request only timed out, and the caller was told to look for stopped services
        (left in session 36)."""
        found = re.search(rb'"%s"\s*:\s*"([^"\\]{1,256})"' % re.escape(self.correlate_by.encode()), value)
        key = found.group(1).decode(errors="replace") if found else None
        shown = value[:200].decode(errors="replace")
        log.warning("an answer on %s that is not a JSON object (%d bytes%s): %r", self.reply_topic, len(value),
                    f", {self.correlate_by} {key}" if key else f", no {self.correlate_by} found", shown)
        if key is None:
            return
        self.answer_counts[key] += 1
        for fut in self._waiting.pop(key, []):
            if not fut.done():
                fut.set_exception(MalformedAnswer(
                    f"the answer to {self.correlate_by} {key} on {self.reply_topic} is not a JSON object: {shown!r}",
                    value))

    def _stopped(self) -> ReaderStopped:
        error = ReaderStopped(f"the client stopped reading answers on {self.reply_topic}: "
                              f"{type(self._reader_error).__name__}: {self._reader_error}")
        error.__cause__ = self._reader_error
        return error

    def _register(self, correlation: str) -> asyncio.Future[dict[str, Any]]:
        """A future for the answer to ``correlation``; none if the reader has failed."""
        if self._reader_error is not None:
            raise self._stopped()
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[correlation].append(fut)
        return fut

    def forget(self, correlation: str, fut: asyncio.Future[dict[str, Any]]) -> None:
        """Stop waiting for ``fut`` (an answer given up on): a late answer finds nothing to resolve."""
        waiting = self._waiting.get(correlation)
        if waiting is None:
            return
        if fut in waiting:
            waiting.remove(fut)
        if not waiting:
            del self._waiting[correlation]

    async def send(self, request: dict[str, Any], *, key: str | None = None) -> asyncio.Future[dict[str, Any]]:
        """Publish ``request``; the returned future resolves with its answer.

        A settlement request (correlated by msgid) is answered on the topic its ``reply_to`` names:
        one without it is sent naming this client's ``reply_to``. One naming a topic is sent as it
        is (a reply_to the platform refuses is answered on the shared topic)."""
        assert self._producer is not None, "start the client first"
        correlation = str(request[self.correlate_by])
        if self.correlate_by == "msgid":
            # The client read its reply topic but did not name it: the platform answered on
            # settlement.results and the call timed out (a review, session 36).
            if request.get("reply_to") in (None, ""):  # both mean settlement.results to the platform
                request = request | {"reply_to": self.reply_to}
        fut = self._register(correlation)
        if key is None:
            key = request_key(request, self.correlate_by)
        await self._publish(orjson.dumps(request), correlation, fut, key=key.encode() if key else None)
        return fut

    async def send_raw(self, value: bytes, *, correlation: str, key: str | None = None,
                       timestamp_ms: int | None = None) -> asyncio.Future[dict[str, Any]]:
        """Publish bytes as they are (a malformed request, say) and wait for the answer to
        ``correlation``. ``timestamp_ms``: the record's time, when the request was asked for
        earlier than it is published (a gateway's outbox sent late); by default, now."""
        assert self._producer is not None, "start the client first"
        fut = self._register(correlation)
        await self._publish(value, correlation, fut, key=key.encode() if key else None, timestamp_ms=timestamp_ms)
        return fut

    async def _publish(self, value: bytes, correlation: str, fut: asyncio.Future[dict[str, Any]], *,
                       key: bytes | None, timestamp_ms: int | None = None) -> None:
        """Publish ``value`` and wait for Kafka's acknowledgement, at most ``send_timeout`` seconds."""
        assert self._producer is not None
        producer = self._producer

        async def acknowledged() -> None:
            sent = await producer.send(self.request_topic, value, key=key, timestamp_ms=timestamp_ms)
            await asyncio.shield(sent)  # a timeout leaves the record to the producer, not half-cancelled

        try:
            await asyncio.wait_for(acknowledged(), self.send_timeout)
        except BaseException as exc:
            # Any failure, not only a timeout: its future stayed waiting for ever (a review, session 36).
            self.forget(correlation, fut)
            if not isinstance(exc, TimeoutError):
                raise
            raise PublishTimeout(
                f"Kafka did not acknowledge {self.correlate_by} {correlation} on {self.request_topic} within "
                f"{self.send_timeout:.0f}s; it may still be written: send it again under the same "
                f"{self.correlate_by} once Kafka answers") from exc

    async def call(self, request: dict[str, Any], *, timeout: float = 15.0) -> dict[str, Any]:
        """Send ``request`` and return its answer."""
        fut = await self.send(request)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError as exc:
            named = request.get("reply_to")
            hint = (f"the request names reply_to {named!r}, which this client does not read (it reads "
                    f"{self.reply_to!r}): the answer may be there, or on the shared topic if the platform refused "
                    "that name" if isinstance(named, str) and named not in ("", self.reply_to)
                    else "are the services running?")
            raise GatewayTimeout(
                f"no answer to {self.correlate_by} {request.get(self.correlate_by)} within {timeout:.0f}s "
                f"on {self.reply_topic}; {hint}"
            ) from exc
        finally:
            # A timed-out call's cancelled future stayed in _waiting for ever (a review, session 36).
            self.forget(str(request[self.correlate_by]), fut)


def request_key(request: dict[str, Any], correlate_by: str = "msgid") -> str | None:
    """The Kafka key docs/topics.md gives a request: ``psn_no`` (a settlement's in ``input.data``, a
    filing's at the top); a clearing request, which names no person, its ``reqid``; else none."""
    data = request.get("input", {}).get("data", {}) if isinstance(request.get("input"), dict) else {}
    psn_no = data.get("psn_no") if isinstance(data, dict) else None
    key = psn_no or request.get("psn_no") or (request.get("reqid") if correlate_by == "reqid" else None)
    return str(key) if key else None
