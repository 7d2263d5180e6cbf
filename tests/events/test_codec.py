"""The codec: Event ⇄ Kafka record. Round trips, encryption of sensitive fields, canonical
bytes, and a named reason for every way a record can fail to decode."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from events import (
    Codec,
    Event,
    EventDecodeError,
    EventsError,
    FernetCipher,
    TaskSubmitted,
    canonical_json,
    catalog,
    codec_from_settings,
    generate_key,
)
from events._codec import Headers
from tests.events.samples import PAYLOADS, SECRETS, TENANT, sample_event
from wrenchai.settings import Settings

TASK_TYPES = sorted(PAYLOADS)


def keyed_codec(*keys: str) -> Codec:
    return Codec(FernetCipher(list(keys) or [generate_key()]))


def stored(event: Event, codec: Codec) -> dict[str, Any]:
    """The envelope as it sits on the log."""
    value: dict[str, Any] = orjson.loads(codec.encode(event).value)
    return value


def test_samples_cover_every_task_type_in_the_catalog() -> None:
    assert TASK_TYPES == [t for t in catalog.types() if t.startswith("task.")]


# -- round trips -------------------------------------------------------------------------
@pytest.mark.parametrize("event_type", TASK_TYPES)
@pytest.mark.parametrize("encrypted", [False, True], ids=["clear", "encrypted"])
def test_every_task_type_round_trips(event_type: str, encrypted: bool) -> None:
    codec = keyed_codec() if encrypted else Codec()
    event = sample_event(event_type)
    record = codec.encode(event)
    assert codec.decode(record.value, record.headers) == event


@pytest.mark.parametrize("event_type", TASK_TYPES)
def test_the_record_is_keyed_by_task_id_and_carries_type_headers(event_type: str) -> None:
    event = sample_event(event_type)
    record = keyed_codec().encode(event)
    assert record.key == str(event.task_id).encode()
    assert record.header("type") == event_type.encode()
    assert record.header("schema_version") == str(event.schema_version).encode()
    assert record.header("content-type") == b"application/json"
    assert record.header("event_id") == str(event.id).encode()


@pytest.mark.parametrize("event_type", TASK_TYPES)
def test_sensitive_fields_never_reach_the_bytes_in_clear_when_a_key_is_set(
    event_type: str,
) -> None:
    event = sample_event(event_type)
    value = keyed_codec().encode(event).value
    assert not [s for s in SECRETS if s.encode() in value]
    envelope = orjson.loads(value)
    sensitive = list(type(event.payload).sensitive_fields())
    if sensitive:
        assert envelope["encrypted_fields"] == sensitive
        for name in sensitive:
            assert isinstance(envelope["payload"][name], str)
    else:
        assert "encrypted_fields" not in envelope
        assert envelope["payload"] == event.payload.model_dump(mode="json")


def test_without_a_key_sensitive_fields_are_stored_in_clear() -> None:
    value = Codec().encode(sample_event("task.submitted")).value
    assert b"Summarise the Q3 board minutes" in value
    assert b"encrypted_fields" not in value


def test_non_sensitive_fields_stay_readable_when_encrypted() -> None:
    """Operators can still see timeouts, codes and summaries without a key."""
    envelope = stored(sample_event("task.submitted"), keyed_codec())
    assert envelope["payload"]["timeout"] == 600
    assert envelope["tenant_id"] == TENANT


def test_a_sensitive_field_left_empty_is_not_encrypted() -> None:
    event = Event.new(
        TaskSubmitted(description="x"),
        tenant_id=TENANT,
        actor=sample_event("task.submitted").actor,
        task_id=uuid.uuid4(),
    )
    envelope = stored(event, keyed_codec())
    assert envelope["encrypted_fields"] == ["description"]
    assert envelope["payload"]["constraints"] is None


def test_codec_from_settings_encrypts_only_when_keys_are_configured() -> None:
    event = sample_event("task.submitted")
    with_key = Settings(encryption_keys=SecretStr(generate_key()))
    assert "encrypted_fields" in stored(event, codec_from_settings(with_key))
    assert "encrypted_fields" not in stored(
        event, codec_from_settings(Settings(encryption_keys=None, master_keys=None))
    )


# -- canonical bytes ---------------------------------------------------------------------
def test_canonical_json_ignores_key_order_and_has_no_whitespace() -> None:
    first = canonical_json({"b": 1, "a": {"d": [1, 2], "c": None}})
    second = canonical_json({"a": {"c": None, "d": [1, 2]}, "b": 1})
    assert first == second == b'{"a":{"c":null,"d":[1,2]},"b":1}'


def test_encoding_an_event_twice_gives_the_same_bytes() -> None:
    """Without a cipher (Fernet tokens carry a random IV) the value is a pure function."""
    event = sample_event("task.failed")
    assert Codec().encode(event) == Codec().encode(event)
    again = Codec().decode(Codec().encode(event).value)
    assert Codec().encode(again).value == Codec().encode(event).value


# -- key rotation ------------------------------------------------------------------------
def test_a_new_key_put_first_still_reads_what_the_old_key_wrote() -> None:
    """MultiFernet: the first key encrypts, every key decrypts, so keys rotate safely."""
    old, new = generate_key(), generate_key()
    before = sample_event("task.submitted")
    written_before = Codec(FernetCipher([old])).encode(before)

    rotated = Settings(encryption_keys=SecretStr(f"{new}, {old}"))
    assert rotated.fernet_keys() == [new, old]
    codec = codec_from_settings(rotated)
    assert codec.decode(written_before.value) == before

    after = sample_event("task.completed")
    written_after = codec.encode(after)
    assert Codec(FernetCipher([new])).decode(written_after.value) == after
    with pytest.raises(EventDecodeError) as caught:
        Codec(FernetCipher([old])).decode(written_after.value)
    assert caught.value.reason == "undecryptable"


# -- decode errors -----------------------------------------------------------------------
def good_envelope() -> dict[str, Any]:
    return stored(sample_event("task.submitted"), Codec())


def with_payload(**changes: Any) -> bytes:
    envelope = good_envelope()
    envelope["payload"].update(changes)
    return canonical_json(envelope)


def without(name: str) -> bytes:
    envelope = good_envelope()
    del envelope[name]
    return canonical_json(envelope)


def with_envelope(**changes: Any) -> bytes:
    return canonical_json({**good_envelope(), **changes})


CLEAR_FAILURES: list[tuple[str, bytes | None, Headers, str]] = [
    ("garbage bytes", b"\x00\xff\xfe not json", (), "invalid_json"),
    ("truncated JSON", b'{"type": "task.submitted"', (), "invalid_json"),
    ("a JSON array", b"[1, 2, 3]", (), "invalid_envelope"),
    ("a JSON string", b'"task.submitted"', (), "invalid_envelope"),
    ("a tombstone", None, (), "empty_value"),
    ("no payload", without("payload"), (), "invalid_envelope"),
    ("no type", without("type"), (), "invalid_envelope"),
    ("no schema_version", without("schema_version"), (), "invalid_envelope"),
    ("no tenant_id", without("tenant_id"), (), "invalid_envelope"),
    ("no id", without("id"), (), "invalid_envelope"),
    ("a string version", with_envelope(schema_version="1"), (), "invalid_envelope"),
    ("a boolean version", with_envelope(schema_version=True), (), "invalid_envelope"),
    ("an unknown field", with_envelope(colour="red"), (), "invalid_envelope"),
    (
        "another content type",
        with_envelope(),
        (("content-type", b"application/avro"),),
        "unsupported_content_type",
    ),
    (
        "a header type that disagrees",
        with_envelope(),
        (("type", b"task.cancelled"),),
        "header_mismatch",
    ),
    (
        "a header version that disagrees",
        with_envelope(),
        (("schema_version", b"1"),),
        "header_mismatch",
    ),
    ("an empty description", with_payload(description=""), (), "invalid_payload"),
    ("a timeout of the wrong type", with_payload(timeout="soon"), (), "invalid_payload"),
    ("an extra payload field", with_payload(priority=1), (), "invalid_payload"),
    ("a payload that is a list", with_envelope(payload=[1]), (), "invalid_payload"),
    ("an unknown type", with_envelope(type="task.teleported"), (), "unknown_type"),
    ("an unknown version", with_envelope(schema_version=9), (), "unknown_version"),
]


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [case[1:] for case in CLEAR_FAILURES],
    ids=[case[0] for case in CLEAR_FAILURES],
)
def test_a_bad_record_is_an_event_decode_error_with_its_reason(
    value: bytes | None, headers: Headers, reason: str
) -> None:
    with pytest.raises(EventDecodeError) as caught:
        keyed_codec().decode(value, headers)
    assert caught.value.reason == reason
    assert caught.value.details["reason"] == reason
    assert caught.value.message


def test_decode_errors_are_events_errors() -> None:
    """A consumer can route every bad record to the DLQ with one except clause."""
    with pytest.raises(EventsError):
        Codec().decode(b"nope")


def test_an_encrypted_record_without_a_key_is_no_key() -> None:
    value = keyed_codec().encode(sample_event("task.submitted")).value
    with pytest.raises(EventDecodeError, match="WRENCH_ENCRYPTION_KEYS") as caught:
        Codec().decode(value)
    assert caught.value.reason == "no_key"


def test_an_encrypted_record_under_another_key_is_undecryptable() -> None:
    value = keyed_codec().encode(sample_event("task.submitted")).value
    with pytest.raises(EventDecodeError) as caught:
        keyed_codec().decode(value)
    assert caught.value.reason == "undecryptable"
    assert caught.value.details["field"] == "description"


def test_an_encrypted_field_that_is_not_a_token_is_an_invalid_envelope() -> None:
    codec = keyed_codec()
    envelope = stored(sample_event("task.submitted"), codec)
    envelope["payload"]["description"] = {"not": "a token"}
    with pytest.raises(EventDecodeError) as caught:
        codec.decode(canonical_json(envelope))
    assert caught.value.reason == "invalid_envelope"


def test_a_token_that_decrypts_to_something_not_json_is_undecryptable() -> None:
    """Only a foreign writer holding the key can produce this; it must not crash a consumer."""
    key = generate_key()
    codec = keyed_codec(key)
    envelope = stored(sample_event("task.submitted"), codec)
    envelope["payload"]["description"] = FernetCipher([key]).encrypt(TENANT, b"{not json")
    with pytest.raises(EventDecodeError) as caught:
        codec.decode(canonical_json(envelope))
    assert caught.value.reason == "undecryptable"


def test_a_tampered_token_is_undecryptable() -> None:
    codec = keyed_codec()
    envelope = stored(sample_event("task.submitted"), codec)
    token = envelope["payload"]["description"]
    envelope["payload"]["description"] = token[:-8] + (
        "A" * 8 if token[-8:] != "A" * 8 else "B" * 8
    )
    with pytest.raises(EventDecodeError) as caught:
        codec.decode(canonical_json(envelope))
    assert caught.value.reason == "undecryptable"
