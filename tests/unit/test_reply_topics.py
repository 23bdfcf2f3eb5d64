"""Which answers move to their moved answers' topic, and for how long a refused reply topic is remembered
(the broker's side is tests/integration/test_reply_topics.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from aiokafka.errors import KafkaTimeoutError, TopicAuthorizationFailedError

from yidi.platform import reply_topics
from yidi.platform.kafka import Outgoing
from yidi.platform.replies import answer_fallback, reply
from yidi.platform.settings import Settings
from yidi.platform.txnv2 import TransactionAbortable

S = Settings(namespace="t1.")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Client:
    """The producer's client as ``route`` uses it: its metadata, the brokers' answers to a look-up
    (``errors``: a topic's error codes, one per look-up, the last one repeated), and the wait for a
    topic's partitions (``never``: topics whose partitions never come)."""

    def __init__(self, known: set[str], errors: dict[str, int | list[int]], never: frozenset[str] = frozenset()) -> None:
        self.cluster = SimpleNamespace(partitions_for_topic=lambda t: {0} if t in known else None)
        self.errors = {t: e if isinstance(e, list) else [e] for t, e in errors.items()}
        self.never = never
        self.looked_up: list[str] = []
        self.waited: list[str] = []

    def get_random_node(self) -> int:
        return 1

    async def send(self, node: int, request) -> SimpleNamespace:
        topic = request._topics[0]
        self.looked_up.append(topic)
        codes = self.errors.get(topic, [0])
        code = codes.pop(0) if len(codes) > 1 else codes[0]
        return SimpleNamespace(topics=[(code, topic, False, [])])

    async def _wait_on_metadata(self, topic: str) -> set[int]:
        self.waited.append(topic)
        if topic in self.never:
            await asyncio.sleep(3600)
        return {0}


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(reply_topics, "LOOK_AGAIN_SECONDS", 0.0)
    monkeypatch.setattr(reply_topics, "PARTITIONS_WAIT_SECONDS", 0.05)


def test_only_answers_on_a_gateways_own_topic_have_a_fallback():
    # Not the shared answer topic, which every gateway naming no reply topic reads: other facilities'
    # patients' answers went there (a review of session 38). Operations read the moved answers.
    assert answer_fallback(S, "t1.hospital-7.answers", "settlement.results") == "t1.platform.moved.settlement.results"
    assert answer_fallback(S, "t1.settlement.results", "settlement.results") is None
    for platform in ("t1.settlement.eligible", "t1.filing.events", "t1.clearing.alerts", "t1.settlement.requests.dlq"):
        assert answer_fallback(S, platform, "settlement.results") is None
    assert answer_fallback(S, "t1.gw", "filing.results") == "t1.platform.moved.filing.results"
    assert answer_fallback(S, "t1.platform.moved.settlement.results", "settlement.results") is None  # a platform topic
    answer = reply(S, "gw", {"msgid": "M1", "infno": "2207"}, facility="H1", request_ts_ms=0)
    assert (answer.topic, answer.fallback) == ("t1.gw", "t1.platform.moved.settlement.results")
    assert reply(S, "settlement.results", {"msgid": "M1", "infno": "2207"}, facility="H1",
                 request_ts_ms=0).fallback is None


async def test_a_refused_topic_moves_its_answers_and_only_those():
    client = Client(known={"t1.ok", "t1.settlement.eligible"},
                    errors={"t1.gone": reply_topics.UNKNOWN_TOPIC, "t1.hidden": reply_topics.TOPIC_AUTHORIZATION_FAILED})
    topics = reply_topics.ReplyTopics("s", clock=Clock())
    out = [Outgoing("t1.ok", b"1", fallback="t1.settlement.results"),
           Outgoing("t1.gone", b"2", b"H1", (("h", b"v"),), fallback="t1.settlement.results"),
           Outgoing("t1.hidden", b"3", fallback="t1.settlement.results"),
           Outgoing("t1.new", b"4", fallback="t1.settlement.results"),  # being created: error 0 or 5
           Outgoing("t1.settlement.eligible", b"5")]
    routed = await topics.route(client, out)
    assert [(o.topic, o.value, o.refused) for o in routed] == [
        ("t1.ok", b"1", None), ("t1.settlement.results", b"2", "unknown"), ("t1.settlement.results", b"3", "unauthorized"),
        ("t1.new", b"4", None), ("t1.settlement.eligible", b"5", None)]
    # Known topics cost nothing; a refusal is looked at three times before it counts.
    assert sorted(client.looked_up) == ["t1.gone"] * 3 + ["t1.hidden"] * 3 + ["t1.new"]
    assert client.waited == ["t1.new"]  # its partitions, before the producer sends to it
    moved = routed[1]
    assert moved.key == b"H1" and moved.fallback is None
    assert moved.headers == (("h", b"v"), (reply_topics.HEADER,
                                            b"t1.gone: the topic does not exist, and the broker does not create topics"))
    # Remembered: the next batch does not ask again.
    client.looked_up.clear()
    assert [o.topic for o in await topics.route(client, out[1:3])] == ["t1.settlement.results"] * 2
    assert client.looked_up == []


async def test_a_refusal_is_forgotten_after_a_while():
    clock = Clock()
    topics = reply_topics.ReplyTopics("s", clock=clock)
    topics.refuse("t1.gw", "unknown")
    clock.now += reply_topics.REMEMBERED_SECONDS - 1
    assert topics.refusal("t1.gw") == "unknown"
    clock.now += 1
    assert topics.refusal("t1.gw") is None
    client = Client(known=set(), errors={})  # created meanwhile
    routed = await topics.route(client, [Outgoing("t1.gw", b"1", fallback="t1.settlement.results")])
    assert routed[0].topic == "t1.gw" and client.looked_up == ["t1.gw"]


async def test_a_topic_unknown_for_a_moment_or_never_ready():
    # A broker whose metadata lags calls a topic just created unknown, then knows it: not refused.
    client = Client(known=set(), errors={"t1.just-made": [reply_topics.UNKNOWN_TOPIC, 0]},
                    never=frozenset({"t1.stuck"}))
    topics = reply_topics.ReplyTopics("s", clock=Clock())
    out = [Outgoing("t1.just-made", b"1", fallback="t1.settlement.results"),
           Outgoing("t1.stuck", b"2", fallback="t1.settlement.results")]  # no error, no partitions either
    routed = await topics.route(client, out)
    assert [(o.topic, o.refused) for o in routed] == [("t1.just-made", None), ("t1.settlement.results", "unavailable")]
    assert dict(routed[1].headers)[reply_topics.HEADER] == b"t1.stuck: the broker gave the topic no partitions within 0.05 s"


def test_a_write_the_broker_refuses_names_its_topics():
    topics = reply_topics.ReplyTopics("s", clock=Clock())
    out = [Outgoing(t, b"", fallback="t1.settlement.results") for t in ("t1.a", "t1.b", "t1.c")]
    out.append(Outgoing("t1.settlement.eligible", b""))
    # v1: the commit fails with the topics AddPartitionsToTxn was refused (a set).
    assert topics.learn(TopicAuthorizationFailedError({"t1.a", "t1.b"}), out)
    # v2: the refused record batch's error, carried by the abortable transaction.
    assert topics.learn(TransactionAbortable("abort", TopicAuthorizationFailedError("t1.c")), out)
    assert {t: topics.refusal(t) for t in ("t1.a", "t1.b", "t1.c")} == dict.fromkeys(("t1.a", "t1.b", "t1.c"),
                                                                                     "unauthorized")
    assert not topics.learn(KafkaTimeoutError(), out)
    assert not topics.learn(TransactionAbortable("abort"), out)
    # A platform topic the broker refuses is no answer's: nothing moves, the failure stays a failure.
    assert not topics.learn(TopicAuthorizationFailedError("t1.settlement.eligible"), out)
    assert topics.refusal("t1.settlement.eligible") is None


async def test_a_send_told_only_not_in_transaction_is_retried_with_the_transactions_error():
    """The broker refused to add a reply topic's partition while a later output waited for its
    topic's metadata: that send raises IllegalOperation ("not in transaction"). The stage takes the
    transaction's own error, learns the refused topic, and retries; before, it stopped."""
    from aiokafka.errors import IllegalOperation
    from aiokafka.producer.transaction_manager import TransactionState

    from yidi.platform.kafka import TransactionalStage

    refused = TopicAuthorizationFailedError({"t1.denied"})

    class Manager:
        state = TransactionState.ABORTABLE_ERROR

        def __init__(self) -> None:
            self._transaction_waiter = asyncio.get_running_loop().create_future()
            self._transaction_waiter.set_exception(refused)

        def is_fatal_error(self) -> bool:
            return False

    class Producer:
        def __init__(self) -> None:
            self._txn_manager = Manager()
            self.aborted = False

        async def send(self, topic, value, key=None, headers=None):
            raise IllegalOperation("Can't send messages while not in transaction")

        async def abort_transaction(self) -> None:
            self.aborted = True
            self._txn_manager.state = TransactionState.READY

    stage = TransactionalStage("t", "test", S, ["in"], "g", None)
    producer = Producer()
    out = [Outgoing("t1.denied", b"1", fallback="t1.settlement.results"), Outgoing("t1.ok", b"2", fallback="x")]
    with pytest.raises(reply_topics.ReplyTopicRefused):
        await stage._commit(producer, out, {}, "g", None)
    assert producer.aborted
    assert stage._reply_topics.refusal("t1.denied") == "unauthorized"
    # Not in an abortable error: the IllegalOperation is what it is (a bug), as before.
    producer = Producer()
    producer._txn_manager.state = TransactionState.IN_TRANSACTION
    with pytest.raises(IllegalOperation):
        await stage._commit(producer, out, {}, "g", None)


async def test_an_answer_whose_partition_has_no_leader_moves_and_the_others_stay():
    # A gateway's topic of one replica on a broker restarted or lost: the stage held its whole batch,
    # every facility's answers on its partitions, until the broker came back.
    leaders = {("t1.gw-down", 0): 1, ("t1.gw-down", 1): -1, ("t1.gw-down", 2): 2, ("t1.gw-ok", 0): 1,
               ("t1.settlement.priced", 0): -1}
    cluster = SimpleNamespace(
        partitions_for_topic=lambda t: {p for (topic, p) in leaders if topic == t} or None,
        available_partitions_for_topic=lambda t: {p for (topic, p), leader in leaders.items() if topic == t and leader != -1},
        leader_for_partition=lambda tp: leaders.get((tp.topic, tp.partition)))
    refreshed: list[float] = []

    def force_metadata_update() -> asyncio.Future:
        refreshed.append(clock.now)
        done = asyncio.get_running_loop().create_future()
        done.set_result(True)
        return done

    client = SimpleNamespace(cluster=cluster, force_metadata_update=force_metadata_update)
    clock = Clock()
    asked: list[str] = []

    def partition_of(o: Outgoing) -> int:
        asked.append(o.topic)
        return int(o.key)

    topics = reply_topics.ReplyTopics("s", clock=clock)
    out = [Outgoing("t1.gw-down", b"a", b"0", fallback="t1.platform.moved.settlement.results"),
           Outgoing("t1.gw-down", b"b", b"1", fallback="t1.platform.moved.settlement.results"),
           Outgoing("t1.gw-down", b"c", b"2", fallback="t1.platform.moved.settlement.results"),
           Outgoing("t1.gw-ok", b"d", b"0", fallback="t1.platform.moved.settlement.results"),
           Outgoing("t1.settlement.priced", b"e", b"0")]  # the platform's own: it waits, as it must
    routed = await topics.route(client, out, partition_of)
    assert [(o.topic, o.value, o.refused) for o in routed] == [
        ("t1.gw-down", b"a", None), ("t1.platform.moved.settlement.results", b"b", "no_leader"),
        ("t1.gw-down", b"c", None), ("t1.gw-ok", b"d", None), ("t1.settlement.priced", b"e", None)]
    assert dict(routed[1].headers)[reply_topics.HEADER] == \
        b"t1.gw-down: the topic's partition for this answer has no leader (its brokers are down)"
    assert asked == ["t1.gw-down"] * 3  # the partitions of answers to topics short of a leader only
    # The producer's metadata asked again (it would otherwise be in 5 minutes), not at every batch.
    assert refreshed == [100.0]
    await topics.route(client, out[:2], partition_of)
    clock.now += reply_topics.LEADERS_LOOK_AGAIN_SECONDS
    await topics.route(client, out[:2], partition_of)
    assert refreshed == [100.0, 100.0 + reply_topics.LEADERS_LOOK_AGAIN_SECONDS]
    # Not remembered: its leader back, the next batch's answer goes where it was asked.
    leaders[("t1.gw-down", 1)] = 2
    assert [o.topic for o in await topics.route(client, out[1:2], partition_of)] == ["t1.gw-down"]
    assert await topics.route(client, out[3:], partition_of) == out[3:]  # nothing short: as it came
