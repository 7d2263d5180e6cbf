"""The codec: Event ⇄ Kafka record.

Write path: envelope → JSON-ready dict → encrypt sensitive fields → canonical JSON bytes
(orjson, sorted keys). Read path is its mirror: bytes → dict → decrypt → upcast → validate.
Every failure on the read path is an :class:`EventDecodeError` with a reason, never a crash.

Encoding and decoding stay synchronous (they sit on every hot path); a cipher whose keys live
in Postgres loads them first, in :meth:`Codec.prepare` and :meth:`Codec.prepare_records`.

A record of a shredded tenant is not poison: its events still happened, and every consumer
must keep folding them. It decodes with each encrypted field replaced by :data:`SHREDDED`,
validated in everything else, as an instance of a subclass of its payload model whose
shredded fields are strings (so ``isinstance`` checks hold and serialising never warns).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Collection, Iterable
from copy import copy
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError, create_model, field_validator

from events._catalog import Catalog, catalog
from events._crypto import SHREDDED, Cipher, DecryptionError, TenantKeysDestroyed
from events._envelope import Event, EventPayload
from events._errors import EventDecodeError

CONTENT_TYPE = b"application/json"
ENCRYPTED_KEY = "encrypted_fields"

# Kafka allows a header without a value (null); it is kept as None, apart from an empty one.
Headers = tuple[tuple[str, bytes | None], ...]


def kafka_headers(raw: Any) -> Headers:
    """A client's headers (pairs, or a mapping as faust may hand them over) as the codec's
    pairs, in log order, a header without a value kept as None."""
    if not raw:
        return ()
    items = raw.items() if isinstance(raw, dict) else raw
    return tuple((str(k), None if v is None else bytes(v)) for k, v in items)


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

    # -- keys ------------------------------------------------------------------------------
    async def prepare(self, tenant_ids: Iterable[str]) -> None:
        """Make ready to encode and decode events of ``tenant_ids``: their data keys are
        loaded (a tenant's first key is made now if it has none). Call it before
        :meth:`encode`; a static key ring has nothing to load."""
        if self.cipher is not None:
            await self.cipher.prepare(_distinct(tenant_ids), create=True)

    async def prepare_events(self, events: Iterable[Event]) -> None:
        """:meth:`prepare` for the tenants of ``events`` that have something to encrypt, so
        a tenant gets no key for events that carry no user content."""
        await self.prepare(
            {
                e.tenant_id
                for e in events
                if any(getattr(e.payload, n) is not None for n in e.payload.sensitive_fields())
            }
        )

    async def prepare_records(self, values: Iterable[bytes | None]) -> None:
        """Make ready to decode these record values: the keys of the tenants whose records
        hold encrypted fields are loaded (never made: reading needs no new key). A value
        that does not parse is left for :meth:`decode` to report."""
        if self.cipher is None or not self.cipher.per_tenant:
            return
        tenants: set[str] = set()
        for value in values:
            # Most records of a batch carry nothing encrypted; only those are parsed twice.
            if not value or b'"encrypted_fields"' not in value:
                continue
            try:
                envelope = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue
            if isinstance(envelope, dict) and isinstance(envelope.get("tenant_id"), str):
                tenants.add(envelope["tenant_id"])
        if tenants:
            await self.cipher.prepare(tenants, create=False)

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
        shredded: frozenset[str] = frozenset()
        if encrypted:
            payload, shredded = self._decrypt(payload, encrypted, str(envelope.get("tenant_id")))
        if shredded:
            model = self._load_shredded(event_type, version, payload, shredded)
        else:
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

    def _decrypt(
        self, payload: Any, fields: Any, tenant_id: str
    ) -> tuple[dict[str, Any], frozenset[str]]:
        """The payload with its encrypted fields in clear, and no shredded field; or, for a
        shredded tenant, with every encrypted field :data:`SHREDDED` and their names."""
        if (
            not isinstance(payload, dict)
            or not isinstance(fields, list)
            or not all(isinstance(name, str) for name in fields)
        ):
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
            except TenantKeysDestroyed:
                return {**payload, **dict.fromkeys(fields, SHREDDED)}, frozenset(fields)
            except DecryptionError as exc:
                raise EventDecodeError("undecryptable", exc.message, field=name) from exc
            except orjson.JSONDecodeError as exc:
                # The key opened it, so the writer was not this codec: still a bad record.
                raise EventDecodeError(
                    "undecryptable",
                    f"encrypted field {name!r} decrypts to something not JSON",
                    field=name,
                ) from exc
        return payload, frozenset()

    def _load_shredded(
        self, event_type: str, version: int, data: dict[str, Any], hidden: frozenset[str]
    ) -> EventPayload:
        """A payload of a shredded tenant: every field but the ``hidden`` ones validated,
        upcast like any other as far as the upcasters can go without the hidden content."""
        target = self.catalog.latest(event_type)
        try:
            while version < target:
                visible = _visible(self.catalog.model(event_type, version), hidden, data)
                upcast = self.catalog.upcaster_from(event_type, version)
                try:
                    data = upcast(
                        {**visible.model_dump(mode="json"), **dict.fromkeys(hidden, SHREDDED)}
                    )
                except Exception:
                    # The upcaster needed the content that is gone: the event stays at the
                    # version it reached, valid and redacted, rather than becoming poison.
                    break
                version += 1
                hidden = frozenset(name for name in hidden if data.get(name) == SHREDDED)
            model = self.catalog.model(event_type, version)
            visible = _visible(model, hidden, data)
        except ValidationError as exc:
            raise EventDecodeError(
                "invalid_payload",
                f"{event_type} v{version} of a shredded tenant does not match its schema "
                f"outside the shredded fields: {exc.errors(include_url=False)[:3]}",
                event_type=event_type,
                schema_version=version,
            ) from exc
        values: dict[str, Any] = {
            name: getattr(visible, name) for name in type(visible).model_fields
        }
        values.update(dict.fromkeys(hidden, SHREDDED))
        return _shredded_model(model, hidden).model_construct(**values)


def shredded_fields(payload: EventPayload) -> frozenset[str]:
    """The fields of ``payload`` that read :data:`SHREDDED` because its tenant's keys were
    destroyed; empty for every payload decoded in clear."""
    return _SHREDDED_MODELS.get(type(payload), frozenset())


_SHREDDED_MODELS: dict[type[EventPayload], frozenset[str]] = {}


@functools.cache
def _shredded_model(model: type[EventPayload], hidden: frozenset[str]) -> type[EventPayload]:
    """``model`` with the ``hidden`` fields typed as strings: a subclass, so consumers that
    test ``isinstance`` still recognise the event, and its serialiser expects the strings."""
    unknown = hidden - set(model.model_fields)
    if unknown:
        raise EventDecodeError(
            "invalid_payload",
            f"encrypted_fields names {sorted(unknown)}, which {model.event_type} "
            f"v{model.schema_version} does not have",
        )
    overrides: dict[str, Any] = {name: (str, SHREDDED) for name in hidden}
    shredded = create_model(
        model.__name__, __base__=model, __module__=model.__module__, **overrides
    )
    _SHREDDED_MODELS[shredded] = hidden
    return shredded


@functools.cache
def _visible_model(model: type[EventPayload], hidden: frozenset[str]) -> type[BaseModel]:
    """A model of ``model``'s fields but the ``hidden`` ones, with their constraints and
    field validators: what can still be validated of a shredded payload. Model validators
    are left out, since they may look at the hidden fields."""
    fields: dict[str, Any] = {
        name: (info.annotation, copy(info))
        for name, info in model.model_fields.items()
        if name not in hidden
    }
    validators: dict[str, Any] = {}
    for name, decorator in model.__pydantic_decorators__.field_validators.items():
        if hidden.isdisjoint(decorator.info.fields):
            func: Any = decorator.func
            if inspect.ismethod(func):  # a classmethod comes back bound to the model
                func = classmethod(func.__func__)
            validators[name] = field_validator(*decorator.info.fields, mode=decorator.info.mode)(
                func
            )
    return create_model(
        f"{model.__name__}Visible",
        __config__=ConfigDict(extra="forbid", frozen=True),
        __validators__=validators,
        **fields,
    )


def _visible(model: type[EventPayload], hidden: frozenset[str], data: dict[str, Any]) -> BaseModel:
    """Every field of ``data`` but the ``hidden`` ones, validated against ``model``."""
    if hidden - set(model.model_fields):
        _shredded_model(model, hidden)  # raises, naming the fields the model lacks
    return _visible_model(model, hidden).model_validate(
        {k: v for k, v in data.items() if k not in hidden}
    )


def _distinct(tenant_ids: Iterable[str]) -> Collection[str]:
    return tenant_ids if isinstance(tenant_ids, set | frozenset) else set(tenant_ids)
