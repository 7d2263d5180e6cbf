"""The codec: Event ⇄ Kafka record.

Write path: envelope → JSON-ready dict → encrypt sensitive fields → canonical JSON bytes
(orjson, sorted keys). Read path is its mirror: bytes → dict → decrypt → upcast → validate.
Every failure on the read path is an :class:`EventDecodeError` with a reason, never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from events._catalog import Catalog, catalog
from events._crypto import Cipher, DecryptionError
from events._envelope import Event
from events._errors import EventDecodeError

CONTENT_TYPE = b"application/json"
ENCRYPTED_KEY = "encrypted_fields"

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Record:
    """A Kafka record as WrenchAI writes it: key, value and headers."""

    key: bytes | None
    value: bytes
    headers: Headers = field(default=())

    def header(self, name: str) -> bytes | None:
        """The first header called ``name``, if any."""
        return next((v for k, v in self.headers if k == name), None)


def canonical_json(data: Any) -> bytes:
    """The one byte form of a JSON document: orjson with sorted keys, UTC datetimes."""
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z)


class Codec:
    """Encodes events to records and decodes records to events, for one catalog and cipher."""

    def __init__(self, cipher: Cipher | None = None, event_catalog: Catalog = catalog) -> None:
        self.cipher = cipher
        self.catalog = event_catalog

    # -- write path ----------------------------------------------------------------------
    def encode(self, event: Event) -> Record:
        """The record to produce for ``event``; sensitive fields are encrypted when a key is set."""
        envelope = event.model_dump(mode="json")
        if self.cipher is not None:
            encrypted = []
            payload = envelope["payload"]
            for name in type(event.payload).sensitive_fields():
                if payload.get(name) is not None:
                    plaintext = canonical_json(payload[name])
                    payload[name] = self.cipher.encrypt(event.tenant_id, plaintext)
                    encrypted.append(name)
            if encrypted:
                envelope[ENCRYPTED_KEY] = encrypted
        headers: Headers = (
            ("type", event.type.encode()),
            ("schema_version", str(event.schema_version).encode()),
            ("content-type", CONTENT_TYPE),
            ("event_id", str(event.id).encode()),
        )
        return Record(key=event.key, value=canonical_json(envelope), headers=headers)

    # -- read path -----------------------------------------------------------------------
    def decode(self, value: bytes | None, headers: Headers = ()) -> Event:
        """The event in a record's value. Raises EventDecodeError with the reason otherwise."""
        envelope = self.parse(value, headers)
        return self.load(envelope)

    def parse(self, value: bytes | None, headers: Headers = ()) -> dict[str, Any]:
        """Bytes to the stored envelope dict (still encrypted, not upcast)."""
        content_type = next((v for k, v in headers if k == "content-type"), CONTENT_TYPE)
        if content_type != CONTENT_TYPE:
            raise EventDecodeError(
                "unsupported_content_type",
                f"content-type {content_type!r} is not {CONTENT_TYPE.decode()}",
            )
        if value is None:
            raise EventDecodeError("empty_value", "the record has no value (a tombstone?)")
        try:
            envelope = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise EventDecodeError("invalid_json", f"the value is not JSON: {exc}") from exc
        if not isinstance(envelope, dict):
            raise EventDecodeError("invalid_envelope", "the value is JSON but not an object")
        for name in ("type", "schema_version", "payload"):
            if name not in envelope:
                raise EventDecodeError("invalid_envelope", f"the envelope has no {name!r}")
        # Consumers may route on headers alone, so headers that contradict the body are poison.
        for name in ("type", "schema_version"):
            header = next((v for k, v in headers if k == name), None)
            if header is not None and header.decode(errors="replace") != str(envelope[name]):
                raise EventDecodeError(
                    "header_mismatch",
                    f"header {name} {header!r} disagrees with the envelope's {envelope[name]!r}",
                )
        return envelope

    def load(self, envelope: dict[str, Any]) -> Event:
        """A stored envelope dict to the newest Event: decrypt, upcast, validate."""
        envelope = dict(envelope)
        event_type, version = envelope["type"], envelope["schema_version"]
        # bool is an int to isinstance; true is not a schema version.
        if not isinstance(event_type, str) or type(version) is not int:
            raise EventDecodeError(
                "invalid_envelope", "type must be a string and schema_version an integer"
            )
        payload = envelope.pop("payload")
        encrypted = envelope.pop(ENCRYPTED_KEY, [])
        if encrypted:
            payload = self._decrypt(payload, encrypted, str(envelope.get("tenant_id")))
        model = self.catalog.load(event_type, version, payload)
        envelope.update(schema_version=model.schema_version, payload=model)
        try:
            return Event.model_validate(envelope)
        except ValidationError as exc:
            raise EventDecodeError(
                "invalid_envelope",
                f"the envelope of {event_type} is invalid: {exc.errors(include_url=False)[:3]}",
                event_type=event_type,
            ) from exc

    def _decrypt(self, payload: Any, fields: Any, tenant_id: str) -> Any:
        if not isinstance(payload, dict) or not isinstance(fields, list):
            raise EventDecodeError("invalid_envelope", "encrypted_fields must list payload keys")
        if self.cipher is None:
            raise EventDecodeError(
                "no_key",
                "the record has encrypted fields but no encryption key is configured; "
                "set WRENCH_ENCRYPTION_KEYS",
                fields=fields,
            )
        payload = dict(payload)
        for name in fields:
            token = payload.get(name)
            if not isinstance(token, str):
                raise EventDecodeError(
                    "invalid_envelope", f"encrypted field {name!r} is not a token"
                )
            try:
                payload[name] = orjson.loads(self.cipher.decrypt(tenant_id, token))
            except DecryptionError as exc:
                raise EventDecodeError("undecryptable", exc.message, field=name) from exc
            except orjson.JSONDecodeError as exc:
                # The key opened it, so the writer was not this codec: still a bad record.
                raise EventDecodeError(
                    "undecryptable",
                    f"encrypted field {name!r} decrypts to something not JSON",
                    field=name,
                ) from exc
        return payload
