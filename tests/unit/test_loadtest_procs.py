"""The load tools' process settings: ``--env`` pairs, what is not passed on, and the protocol the logs name."""

from __future__ import annotations

import argparse
import sys

import pytest

from loadtest.procs import (Processes, child_settings, env_pair, instances, not_passed_on, transaction_versions,
                            with_database)
from loadtest.report import settings_line
from yidi.platform.settings import Settings


def test_env_pairs_split_at_the_first_equals_sign():
    assert env_pair("YIDI_KAFKA_TRANSACTIONS=auto") == ("YIDI_KAFKA_TRANSACTIONS", "auto")
    assert env_pair("LOADTEST_PRODUCER_OPTIONS={\"a\": \"b=c\"}") == ("LOADTEST_PRODUCER_OPTIONS", '{"a": "b=c"}')
    assert env_pair("YIDI_BATCH_LINGER_MS=") == ("YIDI_BATCH_LINGER_MS", "")
    assert env_pair("YIDI_LOG_LEVEL=DEBUG") == ("YIDI_LOG_LEVEL", "DEBUG")
    # A name the services do not know would be ignored by them: the run would measure the defaults.
    for bad in ("YIDI_X", "=1", "", "YIDI_X=1", "YIDI_KAFKA_EARLY_OFFSETS=false", "YIDI_NAMESPACE=live.",
                "YIDI_DATABASE_URL=postgresql://x/yidi", "YIDI_KAFKA_BOOTSTRAP=k:1", "YIDI_METRICS_PORT=9102"):
        with pytest.raises(argparse.ArgumentTypeError):
            env_pair(bad)


def test_instances_name_a_service_and_a_count_from_1_to_6():
    assert instances("pricing=2") == {"pricing": 2}
    assert instances("pricing=2,clearing=3") == {"pricing": 2, "clearing": 3}
    for bad in ("pricing", "pricing=0", "pricing=7", "pricing=x", "gateway=2", "pricing=2,", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            instances(bad)


def test_the_shells_yidi_settings_are_named_unless_they_reach_the_processes_as_the_stack_measured():
    environ = {"YIDI_BATCH_LINGER_MS": "15", "YIDI_KAFKA_BOOTSTRAP": "k:1", "YIDI_NAMESPACE": "x.",
               "YIDI_DATABASE_URL": "postgresql://d", "PATH": "/bin", "YIDI_KAFKA_TRANSACTIONS": "auto",
               "YIDI_LOG_LEVEL": "DEBUG"}
    assert not_passed_on(environ) == ["YIDI_BATCH_LINGER_MS", "YIDI_KAFKA_TRANSACTIONS", "YIDI_LOG_LEVEL",
                                      "YIDI_NAMESPACE"]


def test_a_childs_environment_has_the_given_settings_and_none_of_the_shells(monkeypatch, tmp_path):
    monkeypatch.setenv("YIDI_BATCH_LINGER_MS", "15")
    monkeypatch.setenv("YIDI_KAFKA_TRANSACTIONS", "auto")
    procs = Processes(Settings(namespace="b1.", kafka_bootstrap="k:9"), tmp_path)
    procs.ports["pricing"] = 9999
    env = procs._env("pricing", {"YIDI_KAFKA_TRANSACTIONS": "v1"})
    assert env["YIDI_KAFKA_TRANSACTIONS"] == "v1"
    assert "YIDI_BATCH_LINGER_MS" not in env
    assert (env["YIDI_NAMESPACE"], env["YIDI_KAFKA_BOOTSTRAP"], env["YIDI_METRICS_PORT"]) == ("b1.", "k:9", "9999")


def test_the_protocol_each_stage_logged_is_read_back_the_last_start_winning(tmp_path):
    (tmp_path / "eligibility.log").write_bytes(
        b"2026-12-04 04:20:01,862 eligibility INFO yidi.platform.kafka: stage eligibility: Kafka transactions v1\n"
        b"... stage eligibility-filings: Kafka transactions v1\n")
    (tmp_path / "pricing.log").write_bytes(
        b"x stage pricing: Kafka transactions v1\nrestarted\nx stage pricing: Kafka transactions v2\n")
    (tmp_path / "filing.log").write_bytes(b"nothing about transactions\n")
    assert transaction_versions(tmp_path) == {"eligibility": 1, "eligibility-filings": 1, "pricing": 2}


def test_the_settings_line_says_what_was_given_and_what_the_stages_spoke():
    assert settings_line({}) == "code defaults; Kafka transactions not logged"
    report = {"env": {"YIDI_KAFKA_TRANSACTIONS": "auto", "YIDI_BATCH_LINGER_MS": "5"},
              "kafka_transactions": {"eligibility": 2, "pricing": 2, "ref-eligible": 1}}
    assert settings_line(report) == ("`YIDI_BATCH_LINGER_MS=5`, `YIDI_KAFKA_TRANSACTIONS=auto`; "
                                     "Kafka transactions v1 (1 stage), v2 (2 stages)")
    report["postgres"] = {"server_version": "15.18", "random_page_cost": "1.1"}
    assert settings_line(report).endswith("v2 (2 stages); Postgres random_page_cost 1.1")


def test_a_database_url_is_pointed_at_another_database_keeping_the_rest():
    assert with_database("postgresql://yidi@127.0.0.1:15432/yidi", "yidi_bench_b1") == \
        "postgresql://yidi@127.0.0.1:15432/yidi_bench_b1"
    assert with_database("postgresql://u:p@db:5432/yidi?sslmode=require", "x") == "postgresql://u:p@db:5432/x?sslmode=require"


def test_a_reused_folder_reads_only_this_runs_processes_from_where_their_logs_stood(tmp_path):
    (tmp_path / "pricing.log").write_bytes(b"x stage pricing: Kafka transactions v2\n")
    (tmp_path / "clearing.log").write_bytes(b"x stage clearing: Kafka transactions v2\n")
    (tmp_path / "ref-priced.log").write_bytes(b"x stage ref-priced: Kafka transactions v2\n")  # an earlier probe's
    procs = Processes(Settings(), tmp_path)
    procs.ports |= {"pricing": 1, "clearing": 2}
    procs._spawn("pricing", [sys.executable, "-c", "print('x stage pricing: Kafka transactions v1')"], None)
    procs._spawn("clearing", [sys.executable, "-c", "print('failed before its stage started')"], None)
    for p in procs.procs.values():
        p.wait(10)
    assert procs.log_starts == {"pricing": 39, "clearing": 40}
    assert transaction_versions(tmp_path, procs.log_starts) == {"pricing": 1}
    assert transaction_versions(tmp_path) == {"clearing": 2, "pricing": 1, "ref-priced": 2}


def test_work_a_load_tool_does_in_process_runs_on_what_its_children_get(monkeypatch):
    monkeypatch.setenv("YIDI_DB_POOL_SIZE", "9")
    monkeypatch.setenv("YIDI_CACHE_TTL_SECONDS", "1")
    run = Settings().model_copy(update={"namespace": "b1.", "database_url": "postgresql://u@h:1/yidi_bench_x"})
    s = child_settings(run, {"YIDI_DB_POOL_SIZE": "2"})
    assert (s.db_pool_size, s.cache_ttl_seconds) == (2, Settings.model_fields["cache_ttl_seconds"].default)
    assert (s.namespace, s.database_url) == ("b1.", "postgresql://u@h:1/yidi_bench_x")


async def test_a_trees_memory_counts_the_pages_its_processes_share_once():
    # Postgres' backends map the same shared buffers: their RSS summed counted them once per
    # backend. Here a parent and its forked child share 200 MiB (copy on write): about 200, not 400.
    import asyncio
    import subprocess
    import time

    from loadtest.observe import ProcessSampler

    code = ("import os, time\nx = bytearray(200 * 2**20)\nfor i in range(0, len(x), 4096): x[i] = 1\n"
            "os.fork()\nos.write(1, b'ready\\n')\ntime.sleep(60)\n")  # one write each: lines do not interleave
    tree = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(2):
            assert tree.stdout is not None and tree.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        sampler = ProcessSampler({"shared": tree.pid}, tree={"shared"}, interval=0.05)
        sampler.start()
        await asyncio.sleep(0.3)
        resources = await sampler.stop()
        assert resources["shared"]["processes_seen"] == 2
        assert 150 < resources["shared"]["rss_max_mib"] < 300, resources
    finally:
        import psutil

        for child in psutil.Process(tree.pid).children():
            child.kill()
        tree.kill()
        tree.wait()
        if tree.stdout is not None:
            tree.stdout.close()


def test_a_free_port_is_below_the_kernels_ephemeral_range_and_free():
    # A port the kernel handed out for binding to 0 is one it may hand to an outgoing connection
    # next (the load tool's, Kafka's): a bench's eligibility failed "Address already in use" on
    # one (session 47). Ports are drawn below ip_local_port_range, and skipped while taken.
    import socket

    from loadtest.procs import _ephemeral_low, free_port

    ports = {free_port() for _ in range(20)}
    assert all(20000 <= p < _ephemeral_low() for p in ports), ports
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        assert free_port(taken, taken) != taken  # the only candidate is taken: any the kernel gives
