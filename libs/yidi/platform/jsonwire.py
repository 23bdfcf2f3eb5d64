"""JSON on the wire: orjson, with pydantic models dumped in their wire form (amounts as strings)."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel


def dumps(value: BaseModel | dict[str, Any] | list[Any]) -> bytes:
    if isinstance(value, BaseModel):
        return value.model_dump_json(exclude_none=False).encode()
    return orjson.dumps(value)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)
