"""Run a stage process (a service or a reference hop) with a per-batch and per-request time trace.

    python -m loadtest.traced OUT.jsonl services.pricing
    python -m loadtest.traced OUT.jsonl loadtest.reference_pipeline --stage eligible

Nothing in the platform changes: this wraps ``TransactionalStage`` and aiokafka's client from the
outside before running the module as ``__main__``, and writes one JSON line per event (wall-clock
milliseconds, comparable with Kafka record timestamps and across processes):

- ``{"ev": "batch", "stage", "poll", "got", "n", "ts": [record timestamps], "h0", "h1", "c0",
  "send", "off0", "off1", "end0", "end1"}``: getmany called / returned, handler, commit steps;
- ``{"ev": "req", "who", "api", "t0", "t1", "err"}``: each request a stage's clients send to Kafka
  (``who`` = stage name + producer/consumer), with the error code of transactional responses.

``loadtest.hops`` reads these files and splits each answer's latency per hop.
"""

from __future__ import annotations

import atexit
import os
import runpy
import sys
import time
from typing import Any

import orjson

NOW = lambda: time.time() * 1000.0  # noqa: E731


class Trace:
    def __init__(self, path: str) -> None:
        self.f = open(path, "ab")  # noqa: SIM115
        self.buf: list[bytes] = []
        atexit.register(self.flush)

    def emit(self, event: dict[str, Any]) -> None:
        self.buf.append(orjson.dumps(event) + b"\n")
        if len(self.buf) >= 200:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.f.write(b"".join(self.buf))
            self.f.flush()
            self.buf.clear()


def install(path: str) -> Trace:
    from aiokafka.client import AIOKafkaClient, ConnectionGroup

    from yidi.platform import kafka as yk

    trace = Trace(os.devnull if path == "-" else path)
    # A/B runs: LOADTEST_KAFKA_SOURCE=<file> replaces yidi.platform.kafka by that version of it
    # (e.g. ``git show HEAD:libs/yidi/platform/kafka.py``) before the service imports it.
    other = os.environ.get("LOADTEST_KAFKA_SOURCE")
    if other:
        import aiokafka.producer.sender as aks

        aks.BACKOFF_OVERRIDE = 0.02
        exec(compile(open(other).read(), other, "exec"), yk.__dict__)  # noqa: S102
    if path == "-":  # only the source override, no trace
        return trace
    owners: dict[int, str] = {}

    orig_send = AIOKafkaClient.send

    async def send(self: Any, node_id: Any, request: Any, *, group: Any = ConnectionGroup.DEFAULT) -> Any:
        who = owners.get(id(self))
        if who is None:
            return await orig_send(self, node_id, request, group=group)
        t0 = NOW()
        resp = await orig_send(self, node_id, request, group=group)
        api = type(request).__name__
        err = getattr(resp, "error_code", None)
        if err is None and api.startswith(("AddPartitionsToTxn", "TxnOffsetCommit")):
            errs = getattr(resp, "errors", None) or []
            codes = {c for _, parts in errs for _, c in parts}
            err = max(codes) if codes else None
        if api.startswith("Fetch"):
            # only fetches that returned data, and how long they were parked
            try:
                n = sum(len(p[-1] or b"") for _, parts in resp.topics for p in parts)
            except Exception:  # noqa: BLE001 - a trace, not a check
                n = -1
            trace.emit({"ev": "fetch", "who": who, "t0": t0, "t1": NOW(), "bytes": n})
            return resp
        trace.emit({"ev": "req", "who": who, "api": api, "t0": t0, "t1": NOW(), "err": err})
        return resp

    AIOKafkaClient.send = send  # type: ignore[method-assign]

    _trace_postgres(trace)

    Stage = yk.TransactionalStage
    orig_start = Stage.start
    orig_commit = Stage._commit

    async def start(self: Any) -> None:
        state: dict[str, Any] = {"last": {}, "commit": {}, "handled": []}
        self._trace_state = state
        handler = self.handler

        async def traced_handler(records: list[Any]) -> Any:
            d = state["last"]
            if not d or d.get("h0"):  # a retry: a batch of its own
                d = {"got": NOW(), "poll": NOW(), "ts": [r.timestamp_ms for r in records]}
            state["handled"].append(d)
            d["h0"] = NOW()
            try:
                return await handler(records)
            finally:
                d["h1"] = NOW()

        self.handler = traced_handler
        await orig_start(self)
        owners[id(self._producer.client)] = f"{self.name}/producer"
        owners[id(self._consumer._client)] = f"{self.name}/consumer"
        consumer, producer = self._consumer, self._producer
        getmany = consumer.getmany

        async def traced_getmany(*args: Any, **kwargs: Any) -> Any:
            t0 = NOW()
            batch = await getmany(*args, **kwargs)
            if batch:
                state["last"] = {"poll": t0, "got": NOW(),
                                 "ts": [r.timestamp for recs in batch.values() for r in recs]}
            return batch

        consumer.getmany = traced_getmany
        sot = producer.send_offsets_to_transaction
        ct = producer.commit_transaction

        async def traced_sot(*args: Any, **kwargs: Any) -> Any:
            d = state["commit"]
            d["off0"] = NOW()
            try:
                return await sot(*args, **kwargs)
            finally:
                d["off1"] = NOW()

        async def traced_ct(*args: Any, **kwargs: Any) -> Any:
            d = state["commit"]
            d["end0"] = NOW()
            try:
                return await ct(*args, **kwargs)
            finally:
                d["end1"] = NOW()

        producer.send_offsets_to_transaction = traced_sot
        producer.commit_transaction = traced_ct

    async def commit(self: Any, *args: Any, **kwargs: Any) -> None:
        # Passed through as they come: the tracer reads nothing of _commit's parameters.
        handled, self._trace_state["handled"] = self._trace_state["handled"], []
        d: dict[str, Any] = {}
        if handled:
            # A retried batch ran the handler once per try, on the same records: the records are
            # the last try's; the handler time is every try's.
            d = {"poll": handled[0]["poll"], "got": handled[0]["got"], "h0": handled[0]["h0"],
                 "h1": handled[-1].get("h1", NOW()), "ts": list(handled[-1]["ts"]),
                 "handler_ms": sum(h.get("h1", 0) - h["h0"] for h in handled), "handled": len(handled)}
        self._trace_state["commit"] = d
        d["c0"] = NOW()
        await orig_commit(self, *args, **kwargs)
        d["c1"] = NOW()
        d.update(ev="batch", stage=self.name, n=len(d.get("ts", ())), done=NOW())
        if "got" in d:
            trace.emit(d)

    Stage.start = start  # type: ignore[method-assign]
    Stage._commit = commit  # type: ignore[method-assign]
    return trace


def _trace_postgres(trace: Trace) -> None:
    """Each Postgres round trip (queries, executemany, BEGIN/COMMIT) and each pool acquire."""
    try:
        import asyncpg.connection
        import asyncpg.pool
    except ImportError:  # pragma: no cover
        return
    C = asyncpg.connection.Connection

    def wrap(cls: Any, name: str, query_arg: int | None) -> None:
        orig = getattr(cls, name)

        async def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
            t0 = NOW()
            try:
                return await orig(self, *args, **kwargs)
            finally:
                q = args[query_arg] if query_arg is not None and len(args) > query_arg else ""
                trace.emit({"ev": "pg", "op": name, "q": " ".join(str(q).split())[:60], "t0": t0, "t1": NOW()})

        setattr(cls, name, traced)

    wrap(C, "_execute", 0)
    wrap(C, "_executemany", 0)
    orig_execute = C.execute

    async def execute(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        if args:
            return await orig_execute(self, query, *args, **kwargs)  # goes through _execute
        t0 = NOW()
        try:
            return await orig_execute(self, query, *args, **kwargs)
        finally:
            trace.emit({"ev": "pg", "op": "execute", "q": " ".join(query.split())[:60], "t0": t0, "t1": NOW()})

    C.execute = execute  # type: ignore[method-assign]
    wrap(asyncpg.pool.Pool, "_acquire", None)


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    path, module, *rest = sys.argv[1:]
    install(path)
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
