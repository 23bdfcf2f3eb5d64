"""Answers whose reply topic the broker refuses for good go to their kind's moved answers' topic.

A gateway names the topic its answers go to (``reply_to``). ``gateway_reply_topic`` keeps the
platform's own and Kafka's internal topics out, but only the broker knows whether a legal name can
be written: on a broker that does not create topics (``auto.create.topics.enable=false``, the
usual production setting) a name nobody created does not exist, and with ACLs the platform's
principal may not be allowed to write it. A stage that kept such an answer in its batch would
retry the batch forever (a missing topic costs the producer's whole request timeout per try),
holding its partitions for every facility on them. So before a batch's transaction publishes, each
answer's topic that the producer's metadata does not know is looked up (``settle``); a topic the
broker refuses (it does not exist, may not be written, is not a valid name, or shows no partitions
within ``PARTITIONS_WAIT_SECONDS``) is remembered for ``REMEMBERED_SECONDS``, and the answers to it
are published on the moved answers' topic of their kind of request instead (``Outgoing.fallback``:
``platform.moved.settlement.results``, ``platform.moved.filing.results``,
``platform.moved.clearing.results``; operations read them: on the shared answer topics, which every
gateway naming no reply topic reads, they gave other facilities their patients' answers), with the
header ``yidi-reply-to-refused`` naming the topic and the reason. A topic the metadata shows but
whose writes the broker refuses (ACLs that allow Describe but not Write) fails the transaction: the
stage learns the topic from the error, aborts (ending the transaction at the coordinator, under v1
too: ``txnv2.TransactionManagerV1``), and the batch's retry takes the moved answers' topic. Every request is still answered once, and the
ledger is unchanged.

A topic the broker takes, but whose partition for an answer has no leader (every broker holding a
replica of it down: a gateway's topic of one replica, on a broker restarted or lost), would hold
the batch as long: such an answer is moved too (``no_leader``), batch by batch, while the
producer's metadata shows no leader (asked again every few seconds meanwhile), and not remembered.
The platform's own topics are not moved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError, UnknownTopicOrPartitionError
from aiokafka.protocol.metadata import MetadataRequest

from yidi.platform.errors import TransientError

if TYPE_CHECKING:
    from yidi.platform.kafka import Outgoing  # kafka.py imports this module for its stages

log = logging.getLogger(__name__)


class ReplyTopicRefused(TransientError):
    """A batch's transaction failed on a reply topic the broker would not let the platform write: it is
    retried at once, and the retry publishes those answers on their moved answers' topic."""


HEADER = "yidi-reply-to-refused"
# How long a refused topic keeps its answers on the moved answers' topic before the broker is asked again
# (the topic may have been created, or the platform granted Write, meanwhile).
REMEMBERED_SECONDS = 60.0

# While an answer's partition has no leader, how often the producer's metadata is asked again (it is
# otherwise refreshed every 5 minutes: answers went on moving that long after the broker was back).
LEADERS_LOOK_AGAIN_SECONDS = 5.0

# How sure a refusal must be, and how long a topic that is neither refused nor ready is waited for.
LOOKS, LOOK_AGAIN_SECONDS = 3, 0.5
PARTITIONS_WAIT_SECONDS = 5.0

# Metadata errors that no retry of the batch changes, by Kafka error code.
UNKNOWN_TOPIC, INVALID_TOPIC, TOPIC_AUTHORIZATION_FAILED = 3, 17, 29
_REASONS = {
    UNKNOWN_TOPIC: "unknown",
    INVALID_TOPIC: "invalid",
    TOPIC_AUTHORIZATION_FAILED: "unauthorized",
}
_EXPLAINED = {
    "unknown": "the topic does not exist, and the broker does not create topics",
    "invalid": "the broker says it is not a valid topic name",
    "unauthorized": "the broker does not let the platform write to it",
    "unavailable": "the broker gave the topic no partitions within {wait:g} s",
    "too_large": "the answer is larger than the topic takes (its max.message.bytes)",
    "no_leader": "the topic's partition for this answer has no leader (its brokers are down)",
}


def _explain(reason: str) -> str:
    return _EXPLAINED.get(reason, reason).format(wait=PARTITIONS_WAIT_SECONDS)


class ReplyTopics:
    """What one stage knows of the reply topics the broker refuses (see the module's doc)."""

    def __init__(self, stage: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.stage = stage
        self._clock = clock
        self._refused: dict[str, tuple[float, str]] = {}  # topic -> (remembered until, reason)
        self._told: dict[str, float] = {}  # topic with a partition without a leader -> logged again after
        self._leaders_asked_after = 0.0  # clock time after which the producer's metadata may be asked again

    def refusal(self, topic: str) -> str | None:
        """Why the broker refuses ``topic``, while that is remembered."""
        found = self._refused.get(topic)
        if found is None:
            return None
        until, reason = found
        if self._clock() >= until:
            del self._refused[topic]
            return None
        return reason

    def refuse(self, topic: str, reason: str) -> None:
        if self.refusal(topic) is None:
            log.warning("stage %s: answers to %s go to their moved answers' topic for %.0fs: %s", self.stage, topic,
                        REMEMBERED_SECONDS, _explain(reason))
        self._refused[topic] = (self._clock() + REMEMBERED_SECONDS, reason)

    def learn(self, exc: BaseException, outgoing: list[Outgoing]) -> bool:
        """Remember the answer topics of ``outgoing`` that a failed transaction names as refused (the
        broker refused writes to a topic its metadata shows); True when ``exc`` named one. A platform
        topic refused is not an answer topic: that failure stays what it is (retried, and alerted)."""
        found: BaseException | None = exc
        for _ in range(10):  # the error, or the refused batch's error it carries (txnv2), or its cause
            if found is None or isinstance(found, TopicAuthorizationFailedError):
                break
            found = getattr(found, "refused", None) or found.__cause__
        if not isinstance(found, TopicAuthorizationFailedError):
            return False
        answer_topics = {o.topic for o in outgoing if is_answer(o)}
        topics = [t for t in _named_topics(found.args) if t in answer_topics]
        for topic in topics:
            self.refuse(topic, "unauthorized")
        return bool(topics)

    async def route(self, client: Any, outgoing: list[Outgoing],
                    partition_of: Callable[[Outgoing], int] | None = None) -> list[Outgoing]:
        """``outgoing`` with every answer whose topic the broker refuses moved to its fallback, and,
        given ``partition_of`` (the partition the producer will write an output to), every answer
        whose partition has no leader as the producer's metadata shows it now (its brokers down: a
        gateway's topic of one replica, on a broker restarted or lost). The stage would otherwise
        wait for that partition, its whole batch with it, every facility's answers on its
        partitions, until the broker came back; so only this answer waits, on the moved answers'
        topic. Not remembered: the next batch looks again, and while a topic is short of a leader the
        producer's metadata is asked again every ``LEADERS_LOOK_AGAIN_SECONDS``, so that answers go
        back to the gateway's topic within seconds of its broker's return."""
        unknown = sorted({o.topic for o in outgoing
                          if is_answer(o) and client.cluster.partitions_for_topic(o.topic) is None
                          and self.refusal(o.topic) is None})
        for topic, reason in zip(unknown, await asyncio.gather(*(settle(client, t) for t in unknown)), strict=True):
            if reason is not None:
                self.refuse(topic, reason)
        short = set() if partition_of is None else _short_of_leaders(client.cluster, outgoing)
        if short and self._clock() >= self._leaders_asked_after:
            # In the background: the next batches see a leader back within seconds.
            self._leaders_asked_after = self._clock() + LEADERS_LOOK_AGAIN_SECONDS
            client.force_metadata_update().add_done_callback(_retrieved)
        if not self._refused and not short:
            return outgoing
        routed = []
        for o in outgoing:
            reason = self.refusal(o.topic) if is_answer(o) else None
            if reason is None and o.topic in short and partition_of is not None \
                    and client.cluster.leader_for_partition(TopicPartition(o.topic, partition_of(o))) in (None, -1):
                reason = "no_leader"
                self._tell_leaderless(o.topic)
            routed.append(o if reason is None else moved(o, reason))
        return routed

    def _tell_leaderless(self, topic: str) -> None:
        """Logged once a minute per topic, as a refusal is."""
        if self._clock() >= self._told.get(topic, 0.0):
            self._told[topic] = self._clock() + REMEMBERED_SECONDS
            log.warning("stage %s: answers to %s on a partition without a leader go to their moved answers' topic",
                        self.stage, topic)


def is_answer(o: Outgoing) -> bool:
    """An answer on a gateway's own reply topic: one with a moved answers' topic to go to instead."""
    return bool(o.fallback) and o.topic != o.fallback


def _retrieved(future: asyncio.Future[Any]) -> None:
    """A metadata refresh nobody waits for: its failure is the next refresh's to meet, not a log line."""
    if not future.cancelled():
        future.exception()


def _short_of_leaders(cluster: Any, outgoing: list[Outgoing]) -> set[str]:
    """The answer topics of ``outgoing`` of which a partition has no leader (one look at the
    producer's metadata per topic: the answers' own partitions are worked out only for these)."""
    short = set()
    for topic in {o.topic for o in outgoing if is_answer(o)}:
        partitions = cluster.partitions_for_topic(topic)
        if partitions and len(cluster.available_partitions_for_topic(topic) or ()) < len(partitions):
            short.add(topic)
    return short


def moved(o: Outgoing, reason: str) -> Outgoing:
    """An answer moved to its moved answers' topic (``o.fallback``), the header saying from where and why."""
    assert o.fallback is not None
    return replace(o, topic=o.fallback, fallback=None, refused=reason,
                   headers=(*o.headers, (HEADER, f"{o.topic}: {_explain(reason)}".encode())))


def to_moved_topic(outgoing: list[Outgoing], reason: str) -> list[Outgoing]:
    """``outgoing`` with every answer on a gateway's reply topic moved to its moved answers' topic."""
    return [moved(o, reason) if is_answer(o) else o for o in outgoing]


async def settle(client: Any, topic: str) -> str | None:
    """Why the broker refuses ``topic`` for good, once sure of it; None once its partitions are known
    to the producer. A broker whose metadata lags (a topic created a moment ago) may call it unknown
    for a moment: a refusal counts only when ``LOOKS`` look-ups ``LOOK_AGAIN_SECONDS`` apart all say
    so. A topic the broker neither refuses nor shows partitions of (being created, or an error a
    retry may change) is waited for ``PARTITIONS_WAIT_SECONDS``, not the producer's whole request
    timeout (40 s, on every retry of the batch)."""
    for look in range(LOOKS):
        if look:
            await asyncio.sleep(LOOK_AGAIN_SECONDS)
        reason = await look_up(client, topic)
        if reason is None:
            break
    else:
        return reason
    try:
        await asyncio.wait_for(client._wait_on_metadata(topic), PARTITIONS_WAIT_SECONDS)
    except (asyncio.TimeoutError, UnknownTopicOrPartitionError):
        return "unavailable"
    except TopicAuthorizationFailedError:
        return "unauthorized"
    return None


async def look_up(client: Any, topic: str) -> str | None:
    """Why the broker refuses ``topic`` for good ("unknown", "unauthorized", "invalid"), or None: it
    exists, or is being created (a broker that creates topics does so on this look-up, as on a
    first write), or the broker gave an error a retry may change (the write then meets it)."""
    node = client.get_random_node()
    if node is None:
        raise TransientError("no broker known to look up a reply topic")
    try:
        answer = await client.send(node, MetadataRequest([topic]))
    except KafkaError as exc:
        raise TransientError(f"looking up reply topic {topic}: {exc!r}") from exc
    for error_code, name, *_ in answer.topics:
        if name == topic:
            return _REASONS.get(error_code)
    return None


def _named_topics(args: Iterable[Any]) -> list[str]:
    """The topics a TopicAuthorizationFailedError names (aiokafka gives one, or a set of them)."""
    topics: list[str] = []
    for arg in args:
        if isinstance(arg, str):
            topics.append(arg)
        elif isinstance(arg, (set, frozenset, list, tuple)):
            topics.extend(t for t in arg if isinstance(t, str))
    return topics

