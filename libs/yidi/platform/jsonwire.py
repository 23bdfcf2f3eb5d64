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
    return orjson.loads(data)
