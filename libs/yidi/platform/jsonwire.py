"""JSON on the wire: orjson, with pydantic models dumped in their wire form (amounts as strings)."""

from __future__ import annotations

from typing import Any

import hashlib

import orjson
from pydantic import BaseModel


def dumps(value: BaseModel | dict[str, Any] | list[Any]) -> bytes:
    if isinstance(value, BaseModel):
        return value.model_dump_json(exclude_none=False).encode()
    return orjson.dumps(value)


def request_hash(model: BaseModel) -> str:
    """Hash of what a request asks (not where it is answered): a reused id with another hash is refused."""
    canonical = model.model_dump(mode="json", exclude={"reply_to"})
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


def loads(data: bytes | str) -> Any:
    """Parse JSON; refuse a NUL character (``\\u0000``) in any string, which Postgres cannot store
    (text and json columns alike): a message carrying one is refused where it arrives, as malformed,
    instead of failing its whole batch's SQL later."""
    value = orjson.loads(data)
    if (b"\\u0000" if isinstance(data, bytes) else "\\u0000") in data and _has_nul(value):
        raise ValueError("a string holds a NUL character (\\u0000)")
    return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False
