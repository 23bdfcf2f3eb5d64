"""Which answers move to their shared topic, and for how long a refused reply topic is remembered
(the broker's side is tests/integration/test_reply_topics.py)."""

from __future__ import annotations

from types import SimpleNamespace

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
    """The producer's client as ``route`` uses it: its metadata, and the brokers' answers to a look-up."""

    def __init__(self, known: set[str], errors: dict[str, int]) -> None:
        self.cluster = SimpleNamespace(partitions_for_topic=lambda t: {0} if t in known else None)
        self.errors = errors
        self.looked_up: list[str] = []

    def get_random_node(self) -> int:
        return 1

    async def send(self, node: int, request) -> SimpleNamespace:
        topic = request._topics[0]
        self.looked_up.append(topic)
        return SimpleNamespace(topics=[(self.errors.get(topic, 0), topic, False, [])])


def test_only_answers_on_a_gateways_own_topic_have_a_fallback():
    assert answer_fallback(S, "t1.hospital-7.answers", "settlement.results") == "t1.settlement.results"
    assert answer_fallback(S, "t1.settlement.results", "settlement.results") is None
    for platform in ("t1.settlement.eligible", "t1.filing.events", "t1.clearing.alerts", "t1.settlement.requests.dlq"):
        assert answer_fallback(S, platform, "settlement.results") is None
    assert answer_fallback(S, "t1.gw", "filing.results") == "t1.filing.results"
    answer = reply(S, "gw", {"msgid": "M1", "infno": "2207"}, facility="H1", request_ts_ms=0)
    assert (answer.topic, answer.fallback) == ("t1.gw", "t1.settlement.results")
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
    assert sorted(client.looked_up) == ["t1.gone", "t1.hidden", "t1.new"]  # known topics cost nothing
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
