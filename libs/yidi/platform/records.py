"""A record whose header name is not UTF-8 is read, instead of stopping the consumer at it.

Kafka's header name is a string, and the broker takes any bytes there: a client that writes raw
bytes (librdkafka's, Go's) may send a GBK name. aiokafka decodes header names strictly as it
iterates a fetched batch, inside ``getmany``: the ``UnicodeDecodeError`` stopped the stage at every
start, and nothing of the partition after that record was ever read (measured on the local
broker, 2026-12-06).

``install()`` (once per process) leaves aiokafka's compiled reader in charge and, when a fetch
holds a batch it cannot decode, reads the rest of that fetch again, from that batch on, with
aiokafka's own Python reader, header names decoded with the bytes that are not UTF-8 written as
escapes (``\\xb2``). The record is then handled as any other, and a dead letter of it keeps its
headers. The cost is one small object per fetched partition; records that decode are read as
before.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from typing import Any

from aiokafka.consumer import fetcher as _fetcher
from aiokafka.record.default_records import _DefaultRecordBatchPy
from aiokafka.record.legacy_records import LegacyRecordBatch
from aiokafka.record.memory_records import MemoryRecords, _MemoryRecordsPy

log = logging.getLogger(__name__)

_MAGIC_OFFSET = struct.calcsize(">qii")


class _Escaping(bytearray):
    """A record batch's bytes whose slices decode with escapes for what is not UTF-8."""

    def __getitem__(self, index: Any) -> Any:
        item = super().__getitem__(index)
        return _EscapingSlice(item) if isinstance(index, slice) else item


class _EscapingSlice(bytearray):
    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:  # type: ignore[override]
        return super().decode(encoding, "backslashreplace")


class _LenientBatch(_DefaultRecordBatchPy):
    """aiokafka's Python reader of a v2 batch, header names read with escapes."""

    def __init__(self, buffer: Any) -> None:
        super().__init__(buffer)
        self._buffer = _Escaping(self._buffer)

    def _maybe_uncompress(self) -> None:
        super()._maybe_uncompress()
        if not isinstance(self._buffer, _Escaping):
            self._buffer = _Escaping(self._buffer)


class _Lenient:
    """A fetch's batches from the first that ends after ``offset``, v2 batches read by
    ``_LenientBatch``."""

    def __init__(self, raw: bytes, offset: int) -> None:
        self._records = _MemoryRecordsPy(raw)
        while self.has_next() and self._peek().next_offset <= offset:
            self._records._cache_next()

    def _peek(self) -> Any:
        piece = self._records._next_slice
        assert piece is not None
        return _LenientBatch(piece) if piece[_MAGIC_OFFSET] >= 2 else LegacyRecordBatch(piece, piece[_MAGIC_OFFSET])

    def has_next(self) -> bool:
        return self._records.has_next()

    def next_batch(self) -> Any:
        batch = self._peek()
        self._records._cache_next()
        return batch


class _Fetched:
    """aiokafka's compiled ``MemoryRecords`` of a fetch, and the fetch's bytes, for reading it again."""

    __slots__ = ("_records", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._records = MemoryRecords(raw)

    def has_next(self) -> bool:
        return self._records.has_next()

    def next_batch(self) -> Any:
        return self._records.next_batch()

    def size_in_bytes(self) -> int:
        return self._records.size_in_bytes()


_unpack_records = _fetcher.PartitionRecords._unpack_records


def _unpack_leniently(self: Any) -> Iterator[Any]:
    """aiokafka's ``PartitionRecords._unpack_records``; a batch whose header names are not UTF-8,
    and the rest of the fetch, read again leniently from the record it stopped at."""
    fetched = self._records
    try:
        yield from _unpack_records(self)
    except UnicodeDecodeError as exc:
        if not isinstance(fetched, _Fetched):
            raise
        log.warning("%s: a record at or after offset %d has a header name that is not UTF-8 (%s); read with "
                    "the bytes escaped", self._tp, self.next_fetch_offset, exc)
        self._records = _Lenient(fetched.raw, self.next_fetch_offset)
        yield from _unpack_records(self)


_installed = False


def install() -> None:
    """Read records whose header names are not UTF-8 in this process's consumers."""
    global _installed
    if _installed:
        return
    _fetcher.MemoryRecords = _Fetched  # type: ignore[misc,assignment]
    _fetcher.PartitionRecords._unpack_records = _unpack_leniently  # type: ignore[method-assign]
    _installed = True
