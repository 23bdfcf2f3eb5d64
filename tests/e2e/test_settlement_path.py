"""One settlement through all four services on the real stack, and the answers around it."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid

import orjson
import pytest

from tests.e2e.requests import cancel_of, contains, expected_we1, fresh, from_file, we1
from tests.integration.kafka_io import read_topic

pytestmark = pytest.mark.e2e


async def test_we1_answer_carries_every_field_of_the_expected_answer(gateway):
    answer = await gateway.call(we1())
    assert contains(answer, expected_we1()) == []


async def test_we1_is_in_the_ledger_once_with_the_answered_amounts(gateway, system):
    request = we1()
    answer = await gateway.call(request)
    rows = await system.ledger(request["msgid"])
    assert len(rows) == 1
    row, info = rows[0], answer["output"]["setlinfo"]
    assert (str(row["fund_pay_sumamt"]), str(row["psn_cash_pay"]), row["setl_id"]) == (
        info["fund_pay_sumamt"], info["psn_cash_pay"], info["setl_id"]
    )


async def test_every_demo_request_is_answered_exactly_once(gateway, demo_requests):
    requests = [from_file(path) for path in demo_requests.values()]
    futures = [await gateway.send(r) for r in requests]
    answers = await asyncio.wait_for(asyncio.gather(*futures), 30)
    await asyncio.sleep(1.0)  # time for a duplicate to show up, if there were one
    assert [a["msgid"] for a in answers] == [r["msgid"] for r in requests]
    assert all(gateway.answer_counts[r["msgid"]] == 1 for r in requests)
    refused = {a["msgid"]: a["err_code"] for a in answers if a["infcode"] != 0}
    # Request 05 (an outpatient visit without a filing) and 06 (the same person's emergency, which
    # needs none) differ only there: the refusal must be 05's.
    [five] = [r for stem, r in zip(demo_requests, requests, strict=True) if stem.startswith("05-")]
    assert refused == {five["msgid"]: "NOT_FILED"}


async def test_the_same_request_again_gets_the_stored_answer_and_settles_once(gateway, system):
    request = we1()
    first = await gateway.call(request)
    again = await gateway.call(request)
    assert again["output"] == first["output"]
    assert len(await system.ledger(request["msgid"])) == 1


async def test_a_used_msgid_with_another_payload_is_refused_as_modified(gateway, system):
    request = we1()
    await gateway.call(request)
    modified = json.loads(json.dumps(request))
    modified["input"]["data"]["feedetail"][0]["pric"] = "32.50"
    modified["input"]["data"]["feedetail"][0]["det_item_fee_sumamt"] = "32.50"
    modified["input"]["data"]["medfee_sumamt"] = "64.27"
    answer = await gateway.call(modified)
    assert (answer["infcode"], answer["err_code"]) == (-1, "MODIFIED_REQUEST")
    assert len(await system.ledger(request["msgid"])) == 1


async def test_a_request_that_is_not_json_is_answered_invalid_input_and_dead_lettered(gateway, system):
    msgid = fresh(we1())["msgid"]
    raw = ('{"infno": "2207", "msgid": "%s", "fixmedins_code": "H11010500001", "input": {"data": ' % msgid).encode()
    fut = await gateway.send_raw(raw, correlation=msgid, key="13100000000000000001")
    answer = await asyncio.wait_for(fut, 15)
    assert (answer["infcode"], answer["err_code"]) == (-1, "INVALID_INPUT")
    assert "not JSON" in answer["err_msg"]
    dead = await _dead_letters(system.settings, "settlement.requests")
    assert any(msgid.encode() in value for value, _ in dead)


async def test_requests_that_stopped_a_stage_are_answered_and_the_platform_goes_on(gateway, system):
    # Each of these stopped eligibility at every start (a review, session 34): a request nesting
    # past the 254 levels orjson writes (hashed), a malformed one whose header value is null (its
    # dead letter measured it), a malformed one with a key of megabytes (its dead letter was too
    # large for Kafka: gzip carries it in a few kilobytes).
    from aiokafka import AIOKafkaProducer

    from tests.integration.kafka_io import create_topics

    settings = system.settings
    reply_to = f"gw.poison-{uuid.uuid4().hex[:8]}"
    await create_topics(settings.kafka_bootstrap, settings.topic(reply_to), shown=True)
    deep, null_header, huge_key = (fresh(we1()) | {"reply_to": reply_to} for _ in range(3))
    deep["input"]["data"]["memo"] = "<deep>"

    def malformed(request: dict) -> bytes:
        return json.dumps(request).encode()[:-1] + b", oops}"

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, compression_type="gzip",
                                max_request_size=8 << 20)
    await producer.start()
    try:
        topic = settings.topic("settlement.requests")
        await producer.send_and_wait(topic, json.dumps(deep).encode().replace(b'"<deep>"', b"[" * 300 + b"]" * 300),
                                     key=b"P1")
        await producer.send_and_wait(topic, malformed(null_header), key=b"P1", headers=[("traceparent", None)])
        await producer.send_and_wait(topic, malformed(huge_key), key=b"k" * 2_000_000)
    finally:
        await producer.stop()

    answered = {(a := orjson.loads(r.value))["msgid"]: (a["err_code"], a["err_msg"])
                for r in await read_topic(settings.kafka_bootstrap, settings.topic(reply_to), count=3, seconds=60)}
    assert {m: code for m, (code, _) in answered.items()} == {
        r["msgid"]: "INVALID_INPUT" for r in (deep, null_header, huge_key)}
    assert "nests deeper than 64 levels" in answered[deep["msgid"]][1]
    dead = {v: h for v, h in await _dead_letters(settings, "settlement.requests")}
    (huge,) = [h for v, h in dead.items() if huge_key["msgid"].encode() in v]
    assert huge["yidi-dlq-key-truncated"] == b"2000000"
    assert (await gateway.call(fresh(we1())))["infcode"] == 0
    assert all(system.procs[s].poll() is None for s in ("eligibility", "pricing", "clearing"))

async def test_a_request_whose_header_name_is_not_utf8_is_settled(gateway, system):
    # A client writing raw bytes (librdkafka's, Go's) may send a GBK header name; aiokafka's reader
    # raised UnicodeDecodeError in getmany, and eligibility stopped at it at every start.
    from aiokafka import AIOKafkaProducer
    from aiokafka.protocol.produce import ProduceRequest
    from aiokafka.structs import TopicPartition

    from tests.integration.kafka_io import create_topics
    from tests.unit.test_records import _batch, _Gbk

    settings = system.settings
    reply_to = f"gw.gbk-{uuid.uuid4().hex[:8]}"
    await create_topics(settings.kafka_bootstrap, settings.topic(reply_to), shown=True)
    request = fresh(we1()) | {"reply_to": reply_to}
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        topic = settings.topic("settlement.requests")
        await producer.client.force_metadata_update()
        leader = producer.client.cluster.leader_for_partition(TopicPartition(topic, 0))
        batch = _batch(0, [json.dumps(request).encode()], [(_Gbk(), b"1")])  # the broker gives it its offset
        response = await producer.client.send(leader, ProduceRequest(None, -1, 30000, [(topic, [(0, batch)])]))
        assert response.topics[0][1][0][1] == 0, response  # no error: the broker takes it
    finally:
        await producer.stop()
    (answer,) = [orjson.loads(r.value) for r in await read_topic(settings.kafka_bootstrap, settings.topic(reply_to),
                                                                   count=1, seconds=60)]
    assert (answer["msgid"], answer["infcode"]) == (request["msgid"], 0)
    assert system.procs["eligibility"].poll() is None

async def test_a_bill_whose_total_is_not_the_sum_of_its_items_is_refused_with_the_reason(gateway):
    request = we1()
    request["input"]["data"]["medfee_sumamt"] = "70.00"
    answer = await gateway.call(request)
    assert answer["err_code"] == "INVALID_INPUT" and "not the sum" in answer["err_msg"]


async def test_pre_settlement_answers_the_same_numbers_and_records_nothing(gateway, system):
    request = we1()
    request["infno"] = "2206"
    answer = await gateway.call(request)
    assert answer["output"]["setlinfo"]["hifp_pay"] == "48.89"
    assert answer["output"]["setlinfo"]["setl_id"] == ""
    assert await system.ledger(request["msgid"]) == []


async def test_cancellation_is_answered_the_same_twice_and_an_unknown_one_is_not_found(gateway, system):
    settle = we1()
    settled = await gateway.call(settle)
    setl_id = settled["output"]["setlinfo"]["setl_id"]
    first = await gateway.call(cancel_of(settle, setl_id))
    second = await gateway.call(cancel_of(settle, setl_id))
    assert first["infcode"] == second["infcode"] == 0
    assert first["output"]["setlinfo"]["state"] == second["output"]["setlinfo"]["state"] == "cancelled"
    assert (await system.ledger(settle["msgid"]))[0]["state"] == "cancelled"
    unknown = await gateway.call(cancel_of(settle, "S20220701NOSUCHSETTLEMENT"))
    assert unknown["err_code"] == "NOT_FOUND"


async def test_a_visit_is_settled_once_until_its_settlement_is_cancelled(gateway, system):
    first = we1()
    settled = await gateway.call(first)
    setl_id = settled["output"]["setlinfo"]["setl_id"]
    # The same visit again under a new msgid (a gateway's retry after a time-out, say): refused.
    again = copy.deepcopy(first)
    again["msgid"] = fresh(first)["msgid"]
    refused = await gateway.call(again)
    assert (refused["infcode"], refused["err_code"]) == (-1, "ALREADY_SETTLED")
    assert setl_id in refused["err_msg"]
    assert await system.ledger(again["msgid"]) == []
    # Padded as a fixed-width column would pad it: the same visit (the contract strips codes).
    padded = copy.deepcopy(first)
    padded["msgid"] = fresh(first)["msgid"]
    padded["input"]["data"]["mdtrt_id"] += "   "
    assert (await gateway.call(padded))["err_code"] == "ALREADY_SETTLED"
    # A pre-settlement of it too: its quote would count the standing settlement (session 49).
    quote = copy.deepcopy(first)
    quote.update(msgid=fresh(first)["msgid"], infno="2206")
    quoted = await gateway.call(quote)
    assert (quoted["err_code"], setl_id in quoted["err_msg"]) == ("ALREADY_SETTLED", True)
    # Once the first settlement is cancelled, the visit may be settled anew.
    assert (await gateway.call(cancel_of(first, setl_id)))["infcode"] == 0
    anew = copy.deepcopy(first)
    anew["msgid"] = fresh(first)["msgid"]
    resettled = await gateway.call(anew)
    assert resettled["infcode"] == 0 and resettled["output"]["setlinfo"]["fund_pay_sumamt"] == "48.89"
    assert [r["state"] for r in await system.ledger(anew["msgid"])] == ["settled"]


async def test_only_the_facility_that_settled_cancels_and_only_for_that_visit(gateway, system):
    settle = we1()
    setl_id = (await gateway.call(settle))["output"]["setlinfo"]["setl_id"]
    elsewhere = cancel_of(settle, setl_id)  # by another Beijing hospital, under a msgid of its own
    elsewhere |= {"fixmedins_code": "H11010800002", "msgid": "H11010800002" + elsewhere["msgid"][12:]}
    other_visit = cancel_of(settle, setl_id)
    other_visit["input"]["data"]["mdtrt_id"] = "ANOTHER-VISIT"
    for request in (elsewhere, other_visit):
        answer = await gateway.call(request)
        assert (answer["infcode"], answer["err_code"]) == (-1, "NOT_FOUND")
    assert (await system.ledger(settle["msgid"]))[0]["state"] == "settled"
    assert (await gateway.call(cancel_of(settle, setl_id)))["output"]["setlinfo"]["state"] == "cancelled"


async def test_each_kind_of_settlement_is_undone_by_its_own_transaction(gateway, system):
    settle = we1()  # an outpatient settlement, 2207
    setl_id = (await gateway.call(settle))["output"]["setlinfo"]["setl_id"]
    as_inpatient = cancel_of(settle, setl_id) | {"infno": "2305"}
    wrong_kind = await gateway.call(as_inpatient)
    assert (wrong_kind["err_code"], wrong_kind["infno"]) == ("INVALID_INPUT", "2305")
    assert "cancel it with 2208" in wrong_kind["err_msg"]
    reversal = fresh(settle) | {"infno": "2601", "input": {"data": {
        "psn_no": settle["input"]["data"]["psn_no"], "omsgid": settle["msgid"], "oinfno": "2304"}}}
    misnamed = await gateway.call(reversal)
    assert misnamed["err_code"] == "INVALID_INPUT" and "oinfno 2207" in misnamed["err_msg"]
    assert (await system.ledger(settle["msgid"]))[0]["state"] == "settled"
    assert (await gateway.call(cancel_of(settle, setl_id)))["output"]["setlinfo"]["state"] == "cancelled"


async def test_a_settlement_sent_again_after_its_reversal_is_answered_that_it_does_not_stand(gateway, system):
    # A cashier whose answer was lost reverses the settlement (2601), then sends the settlement
    # again under its msgid. Its stored success said the funds pay 48.89 of WE1's bill, while the
    # ledger holds it reversed: the facility would have collected only the cash part.
    settle = we1()
    first = await gateway.call(settle)
    assert first["infcode"] == 0 and first["output"]["setlinfo"]["fund_pay_sumamt"] != "0.00"
    reversal = fresh(settle) | {"infno": "2601", "input": {"data": {
        "psn_no": settle["input"]["data"]["psn_no"], "omsgid": settle["msgid"], "oinfno": "2207"}}}
    assert (await gateway.call(reversal))["output"]["setlinfo"]["state"] == "reversed"
    again = await gateway.call(settle)
    assert (again["msgid"], again["infcode"], again["err_code"]) == (settle["msgid"], -1, "ALREADY_UNDONE")
    assert f"was reversed (2601) by msgid {reversal['msgid']}" in again["err_msg"]
    (row,) = await system.ledger(settle["msgid"])
    assert row["state"] == "reversed"
    # The visit (the same mdtrt_id) settles anew under a new msgid.
    anew = copy.deepcopy(settle) | {"msgid": fresh(settle)["msgid"]}
    assert anew["input"]["data"]["mdtrt_id"] == settle["input"]["data"]["mdtrt_id"]
    assert (await gateway.call(anew))["infcode"] == 0

async def test_a_bill_whose_answer_would_not_fit_in_a_message_is_refused_before_anything_is_recorded(gateway, system):
    # 2,000 lines with 64-character CJK codes: the request passes eligibility's 900 KB cap, but its
    # answer (every line priced) is over 1 MB; pricing refuses it before recording the settlement.
    request = _too_large_to_answer(we1())
    data = request["input"]["data"]
    answer = await gateway.call(request, timeout=60)
    assert (answer["infcode"], answer["err_code"]) == (-1, "INVALID_INPUT")
    assert "more than one message may carry" in answer["err_msg"]
    assert await system.ledger(request["msgid"]) == []
    # Nothing was recorded for the visit either: it settles once its bill is split.
    data["feedetail"] = data["feedetail"][:2]
    data["medfee_sumamt"] = "2.00"
    request["msgid"] = fresh(request)["msgid"]
    assert (await gateway.call(request))["infcode"] == 0


async def test_a_pre_settlement_whose_answer_would_not_fit_in_a_message_is_refused_as_the_settlement_is(gateway):
    # The same bill as a 2206: its answer was not measured, Kafka refused it, and the cashier was told
    # INTERNAL_ERROR "report it" after the batch was halved down to it (a review, session 35).
    answer = await gateway.call(_too_large_to_answer(we1() | {"infno": "2206"}), timeout=60)
    assert (answer["infcode"], answer["err_code"]) == (-1, "INVALID_INPUT")
    assert "more than one message may carry" in answer["err_msg"]


def _too_large_to_answer(request: dict) -> dict:
    """``request`` with a bill of 2,000 lines with 64-character CJK codes: the request passes
    eligibility's 900 KB cap, but its answer (every line priced) is over 1 MB."""
    data = request["input"]["data"]
    data["feedetail"] = [{"feedetl_sn": f"{'序' * 58}{i:04d}", "hilist_code": "药" * 60, "cnt": "1", "pric": "1.00",
                          "det_item_fee_sumamt": "1.00"} for i in range(2000)]
    data["medfee_sumamt"] = "2000.00"
    return request


async def _dead_letters(settings, topic: str) -> list[tuple[bytes, dict[str, bytes]]]:
    return [(r.value, dict(r.headers)) for r in await read_topic(settings.kafka_bootstrap, settings.topic(f"{topic}.dlq"))]


async def test_every_service_froze_what_it_held_when_it_started_and_times_its_collections(system):
    # collector.freeze() collects once (a full collection) before the stages start: timed, so tuned.
    # The full collection every 10 minutes would be counted as well: the frozen objects show the freeze.
    for service in ("filing", "eligibility", "pricing", "clearing"):
        assert system.metric(service, "yidi_gc_pause_seconds_count", generation="2") >= 1, service
        assert system.metric(service, "yidi_gc_frozen_objects") > 10_000, service  # imports alone


async def test_every_service_times_its_postgres_statements_and_eligibility_its_redis_calls(gateway, system):
    def statements(service: str, source: str) -> float:
        return system.metric(service, "yidi_db_statement_seconds_count", service=service, source=source)

    def redis_gets() -> float:
        return system.metric("eligibility", "yidi_redis_seconds_count", operation="get", outcome="ok")

    # Each stage's batch statements under the stage's name, apart from its service's feeds and samplers.
    before = {s: statements(s, s) for s in ("pricing", "clearing")}
    gets = redis_gets()
    assert (await gateway.call(fresh(we1())))["infcode"] == 0
    for service in before:  # each batch's statements, as it commits: BEGIN with its locks, reads, writes, COMMIT
        assert statements(service, service) >= before[service] + 3, service
    assert redis_gets() > gets  # the person looked up in the cache
    assert statements("filing", "other") > 0 and statements("eligibility", "other") > 0  # their migrations
    assert statements("eligibility", "refdata.persons") > 0 and statements("pricing", "refdata.policies") > 0
    assert statements("clearing", "prepayment-balances") > 0 and statements("filing", "office-overdue") > 0  # samplers


async def test_refmsg_time_is_when_the_request_reached_the_platform_not_the_gateways_clock(gateway):
    # A gateway whose clock runs an hour behind (or whose outbox sends an hour late) stamps its
    # record an hour ago; settlement.requests takes the broker's time instead (LogAppendTime).
    import time
    from datetime import datetime, timedelta

    from yidi.client.gateway import request_key
    from yidi.domain.codes import BUSINESS_TZ

    request = fresh(we1())
    before = datetime.now(BUSINESS_TZ) - timedelta(seconds=5)
    fut = await gateway.send_raw(json.dumps(request).encode(), correlation=request["msgid"], key=request_key(request, "msgid"),
                                 timestamp_ms=int(time.time() * 1000) - 3_600_000)
    answer = await asyncio.wait_for(fut, 15)
    received = datetime.strptime(answer["refmsg_time"], "%Y%m%d%H%M%S%f").replace(tzinfo=BUSINESS_TZ)
    assert answer["infcode"] == 0 and before <= received <= datetime.now(BUSINESS_TZ), answer["refmsg_time"]


async def test_each_reference_feed_shows_its_lag_and_is_caught_up(gateway, system):
    """yidi_feed_lag_records of every feed, from the running services: a series per feed (a
    missing one reads 0 through system.metric, so the exposition is read here), at 0 once applied."""
    import re
    import urllib.request

    from tests.integration.waiting import until

    feeds = {"eligibility": ["refdata.persons", "refdata.facilities", "platform.region-status"],
             "pricing": ["refdata.policies", "refdata.catalogue"]}  # prepayment-status: under the refuse policy only

    def series(service: str) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{system.ports[service]}/metrics", timeout=2) as r:
            text = r.read().decode()
        return {m[1]: float(m[2]) for m in re.finditer(r'^yidi_feed_lag_records\{feed="([^"]+)"\} (\S+)$', text, re.M)}

    await until(lambda: all(set(names) <= set(series(service)) for service, names in feeds.items()), timeout=30, poll=0.5)
    await until(lambda: all(series(service)[name] == 0 for service, names in feeds.items() for name in names),
                timeout=30, poll=0.5)
    # The gauge reads 0 too for a feed with no consumer or no partition: the broker's view as well,
    # each group's committed offsets at the end of what its topic holds.
    from yidi.platform.lag import caught_up
    from yidi.refdata.loader import consumers_to_wait_for

    settings = system.settings
    pairs = [(g, t) for g, t in consumers_to_wait_for(settings.namespace) if "-feed-" in g]
    assert len(pairs) >= sum(len(names) for names in feeds.values()), pairs
    for group, topic in pairs:
        await until(lambda g=group, t=topic: caught_up(settings.kafka_bootstrap, g, t), timeout=30, poll=0.5)


async def test_every_service_shows_when_it_last_had_an_answer_from_kafka(system):
    """yidi_kafka_reached_timestamp_seconds (YidiKafkaUnreachable) from the running services: every
    one's stages and feeds sample their lag every 5 s, so each has had the broker's answer lately."""
    import time

    from tests.integration.waiting import until

    def ages() -> dict[str, float]:
        return {s: time.time() - system.metric(s, "yidi_kafka_reached_timestamp_seconds")
                for s in ("filing", "eligibility", "pricing", "clearing")}

    await until(lambda: all(age < 15 for age in ages().values()), timeout=30, poll=0.5)


async def test_every_services_event_loop_beats_each_second(system):
    import time

    for service in ("filing", "eligibility", "pricing", "clearing"):
        assert time.time() - system.metric(service, "yidi_event_loop_heartbeat_timestamp_seconds") < 5, service
        assert system.metric(service, "yidi_event_loop_lag_seconds_count") >= 1, service


async def test_every_service_checks_every_ten_seconds_that_its_database_did_not_go_back(system):
    # What YidiProgressCheckFailing watches: each check that ran moves the gauge, traffic or not.
    from tests.integration.waiting import until

    services = ("filing", "eligibility", "pricing", "clearing")
    before = {s: system.metric(s, "yidi_progress_checked_timestamp_seconds") for s in services}
    await until(lambda: all(system.metric(s, "yidi_progress_checked_timestamp_seconds") > before[s] for s in services),
                timeout=30, poll=0.5)


async def test_every_service_asks_postgres_and_eligibility_redis_every_few_seconds_with_no_traffic(system):
    # Nothing is sent here: the gauges move by the probes alone (pricing has no sampler of its own).
    def reached() -> dict[str, float]:
        return {s: system.metric(s, "yidi_db_reached_timestamp_seconds") for s in ("filing", "eligibility", "pricing", "clearing")} \
            | {"redis": system.metric("eligibility", "yidi_redis_reached_timestamp_seconds")}

    from tests.integration.waiting import until

    before = reached()
    assert all(before.values()), before
    await until(lambda: all(now > before[s] for s, now in reached().items()), timeout=30, poll=0.5)  # probes: each 5 s
    # Filing, eligibility and clearing query their pools on their own every second too (their
    # samplers and sweep), which moves the same gauge: each service's probe is seen in Postgres.
    import asyncpg

    async def every_service_probing() -> bool:
        conn = await asyncpg.connect(system.settings.database_url)
        try:
            rows = await conn.fetch("SELECT application_name FROM pg_stat_activity WHERE datname = current_database() "
                                    "AND application_name LIKE 'yidi-%-probe@%'")
        finally:
            await conn.close()
        return {r["application_name"].split("-")[1] for r in rows} == {"filing", "eligibility", "pricing", "clearing"}

    # Under until: a probe reconnects within 5 s of a Postgres restart (an earlier e2e test's).
    await until(every_service_probing, timeout=30, poll=0.5)
