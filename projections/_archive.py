"""The event archive's formats: header encoding and the per-partition hash chain.

``event_log.raw_headers`` is a JSON list of ``[name, value]`` pairs. A value that is valid
UTF-8 is stored as text; any other value as ``{"base64": "..."}``, so a restore republishes
exactly the bytes that were on the log.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from events._codec import Headers

GENESIS_HASH = b"\x00" * 32
"""The ``prev_hash`` of the first record of every partition."""


def chain_hash(prev_hash: bytes, value: bytes | None) -> bytes:
    """sha256(previous hash + the record's canonical bytes, i.e. its value as logged)."""
    return hashlib.sha256(prev_hash + (value or b"")).digest()


def headers_to_json(headers: Headers) -> list[list[Any]]:
    """Kafka headers as the archive stores them."""
    stored: list[list[Any]] = []
    for name, value in headers:
        try:
            stored.append([name, value.decode("utf-8")])
        except UnicodeDecodeError:
            stored.append([name, {"base64": base64.b64encode(value).decode()}])
    return stored


def headers_from_json(stored: list[list[Any]] | None) -> Headers:
    """The exact Kafka headers back from the archive's form."""
    headers: list[tuple[str, bytes]] = []
    for name, value in stored or []:
        if isinstance(value, dict):
            headers.append((name, base64.b64decode(value["base64"])))
        else:
            headers.append((name, str(value).encode("utf-8")))
    return tuple(headers)
