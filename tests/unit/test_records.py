"""Records whose header names are not UTF-8 (yidi.platform.records): read, not a stop."""

from __future__ import annotations

import struct

import pytest
from aiokafka.consumer import fetcher
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

from yidi.platform import records

GZIP = 1


class _Gbk(str):
    """A header name a client wrote as raw bytes: GBK, which is not UTF-8."""

    def encode(self, *args: object, **kwargs: object) -> bytes:  # type: ignore[override]
        return "操作员".encode("gbk")


def _batch(base_offset: int, values: list[bytes], headers: list, compression: int = 0) -> bytes:
    builder = _DefaultRecordBatchBuilderPy(magic=2, compression_type=compression, is_transactional=0, producer_id=-1,
                                           producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for i, value in enumerate(values):
        builder.append(i, timestamp=1, key=b"k", value=value, headers=headers)
    raw = bytearray(builder.build())
    struct.pack_into(">q", raw, 0, base_offset)  # the broker's to assign; outside the CRC
    return bytes(raw)


def _read(raw: bytes, fetch_offset: int = 0) -> list:
    partition = fetcher.PartitionRecords(TopicPartition("t", 0), fetcher.MemoryRecords(raw), None, fetch_offset,
                                         None, None, True, 0)
    return [(r.offset, r.value, tuple(r.headers)) for r in partition]


@pytest.mark.parametrize("compression", [0, GZIP])
def test_a_header_name_that_is_not_utf8_is_read_with_its_bytes_escaped(compression):
    raw = (_batch(0, [b"before"], [])
           + _batch(1, [b"first", b"second"], [(_Gbk(), b"x"), ("trace", None)], compression)
           + _batch(3, [b"after"], []))
    # aiokafka's own reader stops at it, and nothing after it is read.
    with pytest.raises(UnicodeDecodeError):
        compiled = MemoryRecords(raw)
        while compiled.has_next():
            list(compiled.next_batch())
    records.install()
    escaped = "操作员".encode("gbk").decode("utf-8", "backslashreplace")  # "\\xb2\\xd9\\xd7\\xf7Ա"
    assert _read(raw) == [(0, b"before", ()), (1, b"first", ((escaped, b"x"), ("trace", None))),
                          (2, b"second", ((escaped, b"x"), ("trace", None))), (3, b"after", ())]
    # Fetched from inside the batch (its first record consumed before; the broker sends the
    # batch whole): the rest of it, once.
    assert [offset for offset, _, _ in _read(raw[len(_batch(0, [b"before"], [])):], fetch_offset=2)] == [2, 3]


@pytest.mark.parametrize("timestamp", [2**62, 253_402_214_400_000, -5])
def test_a_record_whose_timestamp_is_no_moment_is_taken_as_arriving_now(timestamp):
    # A producer's CreateTime may be any 64-bit number: past the year 9999 it raised where the
    # handlers read it as a time (filing's persons stage, an answer's refmsg_time), at every start.
    import time

    from aiokafka.structs import ConsumerRecord

    from yidi.contracts.envelope import respond_time_ms
    from yidi.platform.kafka import TransactionalStage

    def record(ts: int) -> ConsumerRecord:
        return ConsumerRecord("t", 0, 7, ts, 0, b"k", b"{}", None, 2, 2, ())

    before = int(time.time() * 1000)
    (taken,) = TransactionalStage._incoming({TopicPartition("t", 0): [record(timestamp)]})
    assert before <= taken.timestamp_ms <= int(time.time() * 1000)
    respond_time_ms(taken.timestamp_ms)  # a moment an answer can carry
    (kept,) = TransactionalStage._incoming({TopicPartition("t", 0): [record(1_700_000_000_000)]})
    assert kept.timestamp_ms == 1_700_000_000_000
