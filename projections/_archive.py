"""The event archive's formats: header encoding and the per-partition hash chain.

``event_log.raw_headers`` is a JSON list of ``[name, value]`` pairs. A value that is valid
UTF-8 is stored as text; any other value as ``{"base64": "..."}``, so a restore republishes
exactly the bytes that were on the log.

Each partition's records form one hash chain from :data:`GENESIS_HASH`: a record's ``hash``
covers the previous record's ``hash`` (its ``prev_hash``) and the record itself. Two rules
exist, named by the row's ``chain_version`` (docs/audit.md, "Tamper evidence"):

- version 1 (rows archived before migration 0008): sha256(prev_hash + value). It covers
  neither the key nor the headers.
- version 2: ``hash = sha256(field("wrench.chain.v2") || field(prev_hash) || field(digest))``
  where ``digest = sha256(field(key) || u32(len(headers)) || field(name) || field(value) ...
  || field(value))`` and ``field(b) = u32(len(b)) || b`` (``ffffffff`` for null),
  ``u32`` being four bytes big-endian. Length prefixes make the encoding unambiguous; the
  leading tag keeps a version-2 hash from ever equalling a version-1 one; and hashing the
  record's own digest lets an export show another tenant's record as a link (prev_hash,
  digest, hash) whose hash a verifier still recomputes without seeing the record.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Any

from events._codec import Headers

GENESIS_HASH = b"\x00" * 32
"""The ``prev_hash`` of the first record of every partition."""

CHAIN_VERSION = 2
"""The rule the projector chains new records with."""

CHAIN_VERSIONS = (1, 2)

_NULL = b"\xff\xff\xff\xff"
_U32 = struct.Struct(">I").pack
_V2_TAG = b"wrench.chain.v2"


def field(value: bytes | None) -> bytes:
    """One length-prefixed field: four bytes of big-endian length, then the bytes; a null
    (a Kafka key or value that is absent) is the length ``ffffffff`` alone."""
    if value is None:
        return _NULL
    return _U32(len(value)) + value


def chain_hash(prev_hash: bytes, value: bytes | None) -> bytes:
    """Version 1: sha256(previous hash + the record's value as logged)."""
    return hashlib.sha256(prev_hash + (value or b"")).digest()


def record_digest(key: bytes | None, headers: Headers, value: bytes | None) -> bytes:
    """sha256 of the record's key, headers (in log order) and value, length-prefixed."""
    parts = [field(key), _U32(len(headers))]
    for name, header in headers:
        parts += [field(name.encode("utf-8")), field(header)]
    parts.append(field(value))
    return hashlib.sha256(b"".join(parts)).digest()


def chain_hash_v2(prev_hash: bytes, digest: bytes) -> bytes:
    """Version 2, from the previous hash and the record's :func:`record_digest`."""
    return hashlib.sha256(field(_V2_TAG) + field(prev_hash) + field(digest)).digest()


def link_hash(
    chain_version: int,
    prev_hash: bytes,
    key: bytes | None,
    headers: Headers,
    value: bytes | None,
) -> bytes:
    """The hash of one record under the rule its ``chain_version`` names."""
    if chain_version == 1:
        return chain_hash(prev_hash, value)
    if chain_version == 2:
        return chain_hash_v2(prev_hash, record_digest(key, headers, value))
    raise ValueError(f"unknown chain_version {chain_version}; known: {CHAIN_VERSIONS}")


def headers_to_json(headers: Headers) -> list[list[Any]]:
    """Kafka headers as the archive stores them."""
    stored: list[list[Any]] = []
    for name, value in headers:
        if value is None:
            stored.append([name, None])
            continue
        try:
            stored.append([name, value.decode("utf-8")])
        except UnicodeDecodeError:
            stored.append([name, {"base64": base64.b64encode(value).decode()}])
    return stored


def headers_from_json(stored: list[list[Any]] | None) -> Headers:
    """The exact Kafka headers back from the archive's form."""
    headers: list[tuple[str, bytes | None]] = []
    for name, value in stored or []:
        if value is None:
            headers.append((name, None))
        elif isinstance(value, dict):
            headers.append((name, base64.b64decode(value["base64"])))
        else:
            headers.append((name, str(value).encode("utf-8")))
    return tuple(headers)
