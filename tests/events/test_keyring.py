"""Per-tenant data keys on the real Postgres: each tenant its own keys, wrapped by a master
key, made once however many processes race, rotated and rewrapped, and destroyed for good by
shredding, after which a tenant's events still decode, with ``[shredded]`` in place of its
content."""

from __future__ import annotations

import asyncio
import uuid
import warnings
from collections.abc import Collection

import asyncpg
import orjson
import pytest
from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

from events import (
    SHREDDED,
    Codec,
    DecryptionError,
    Event,
    EventDecodeError,
    FernetCipher,
    KeyringCipher,
    KeysNotPrepared,
    MasterKeyError,
    PlanCreated,
    PostgresKeyStore,
    StoredKeys,
    TaskCancelled,
    TaskSubmitted,
    TaskSubmittedV1,
    TenantKeysDestroyed,
    codec_from_settings,
    fingerprint,
    generate_key,
    keyring_from_settings,
    master_keys,
    rotate,
    shredded_fields,
)
from tests.events.planning_samples import PLAN
from tests.events.samples import USER
from wrenchai.settings import Settings

MASTER = generate_key()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared settings with a master key (so tenants get keys of their own) and no key
    cache, so each prepare reads the store again."""
    return settings.model_copy(update={"master_keys": SecretStr(MASTER), "key_cache_ttl_s": 0.0})


def with_masters(settings: Settings, *keys: str) -> Settings:
    return settings.model_copy(update={"master_keys": SecretStr(",".join(keys))})


def submitted(tenant_id: str, description: str = "the Q3 board minutes") -> Event:
    return Event.new(
        TaskSubmitted(description=description, constraints={"secret": "hunter2"}, timeout=60),
        tenant_id=tenant_id,
        actor=USER,
        task_id=uuid.uuid4(),
    )


def token_of(record_value: bytes, name: str = "description") -> str:
    return str(orjson.loads(record_value)["payload"][name])


async def data_keys(db: asyncpg.Connection, tenant_id: str) -> list[bytes]:
    """The tenant's data keys in clear, newest first, unwrapped with the module's master."""
    rows = await db.fetch(
        "SELECT wrapped_key FROM tenant_keys WHERE tenant_id = $1 ORDER BY key_id DESC",
        tenant_id,
    )
    return [Fernet(MASTER.encode()).decrypt(bytes(r["wrapped_key"])) for r in rows]


async def encoded(codec: Codec, event: Event) -> bytes:
    await codec.prepare_events([event])
    return codec.encode(event).value


async def decoded(codec: Codec, value: bytes) -> Event:
    await codec.prepare_records([value])
    return codec.decode(value)


# -- keys per tenant -----------------------------------------------------------------------
async def test_codec_from_settings_is_the_keyring_when_master_keys_are_set(
    settings: Settings,
) -> None:
    assert isinstance(codec_from_settings(settings).cipher, KeyringCipher)
    legacy_only = settings.model_copy(update={"master_keys": None})
    assert isinstance(codec_from_settings(legacy_only).cipher, FernetCipher)


async def test_each_tenant_has_its_own_data_key_and_cannot_open_another_tenants_fields(
    settings: Settings, db: asyncpg.Connection
) -> None:
    codec = codec_from_settings(settings)
    of_a = await encoded(codec, submitted("tenant-a"))
    of_b = await encoded(codec, submitted("tenant-b"))

    key_a, key_b = (await data_keys(db, "tenant-a"))[0], (await data_keys(db, "tenant-b"))[0]
    assert key_a != key_b
    assert Fernet(key_a).decrypt(token_of(of_a).encode())
    with pytest.raises(InvalidToken):
        Fernet(key_b).decrypt(token_of(of_a).encode())

    cipher = codec.cipher
    assert isinstance(cipher, KeyringCipher)
    with pytest.raises(DecryptionError, match="tenant-b"):
        cipher.decrypt("tenant-b", token_of(of_a))
    assert (await decoded(codec, of_b)).tenant_id == "tenant-b"


async def test_data_keys_are_stored_wrapped_never_in_clear(
    settings: Settings, db: asyncpg.Connection
) -> None:
    await encoded(codec_from_settings(settings), submitted("acme"))
    row = await db.fetchrow("SELECT wrapped_key, master_key FROM tenant_keys")
    assert row is not None
    data_key = Fernet(MASTER.encode()).decrypt(bytes(row["wrapped_key"]))
    assert data_key not in bytes(row["wrapped_key"])
    assert row["master_key"] == fingerprint(MASTER)


async def test_processes_racing_for_a_tenants_first_key_end_up_with_one_key(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """Eight processes encrypting for a new tenant at once: one key is made, and each of
    them can read what the others wrote."""
    codecs = [codec_from_settings(settings) for _ in range(8)]
    events = [submitted("fresh") for _ in codecs]
    values = await asyncio.gather(*(encoded(c, e) for c, e in zip(codecs, events, strict=True)))
    assert await db.fetchval("SELECT count(*) FROM tenant_keys WHERE tenant_id = 'fresh'") == 1
    reader = codec_from_settings(settings)
    assert [await decoded(reader, v) for v in values] == events


async def test_reading_makes_no_key_for_a_tenant(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """Only encrypting makes a tenant's first key: a reader has nothing to make it for."""
    legacy = Codec(FernetCipher(settings.fernet_keys()))
    event = submitted("old-tenant")
    value = legacy.encode(event).value
    assert await decoded(codec_from_settings(settings), value) == event
    assert await db.fetchval("SELECT count(*) FROM tenant_keys") == 0


async def test_events_without_user_content_make_no_key(
    settings: Settings, db: asyncpg.Connection
) -> None:
    codec = codec_from_settings(settings)
    event = Event.new(TaskCancelled(reason="no longer needed"), tenant_id="quiet", actor=USER)
    await codec.prepare_events([event])
    codec.encode(event)
    assert await db.fetchval("SELECT count(*) FROM tenant_keyrings") == 0


async def test_fields_written_with_the_legacy_deployment_key_stay_readable(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """WRENCH_ENCRYPTION_KEYS encrypted everything before tenants had keys; with master keys
    set it still decrypts (and never encrypts)."""
    event = submitted("acme")
    before = Codec(FernetCipher(settings.fernet_keys())).encode(event).value
    codec = codec_from_settings(settings)
    assert await decoded(codec, before) == event
    after = await encoded(codec, event)
    with pytest.raises(EventDecodeError):
        Codec(FernetCipher(settings.fernet_keys())).decode(after)


async def test_encoding_or_decoding_an_unprepared_tenant_says_to_prepare(
    settings: Settings, db: asyncpg.Connection
) -> None:
    codec = codec_from_settings(settings)
    event = submitted("acme")
    with pytest.raises(KeysNotPrepared, match=r"codec\.prepare"):
        codec.encode(event)
    value = await encoded(codec, event)
    with pytest.raises(KeysNotPrepared, match="acme"):
        codec_from_settings(settings).decode(value)


async def test_a_process_with_another_master_key_cannot_read(
    settings: Settings, db: asyncpg.Connection
) -> None:
    value = await encoded(codec_from_settings(settings), submitted("acme"))
    stranger = codec_from_settings(with_masters(settings, generate_key()))
    with pytest.raises(MasterKeyError, match="acme") as caught:
        await stranger.prepare_records([value])
    assert "WRENCH_MASTER_KEYS" in caught.value.message
    with pytest.raises(KeysNotPrepared):
        stranger.decode(value)


async def test_keys_are_read_once_per_tenant_per_ttl(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """The hot path asks Postgres nothing: a tenant's keys are read again only once the TTL
    has passed, and one read covers every tenant that needs one."""

    class Counting(PostgresKeyStore):
        reads: list[set[str]] = []

        async def load(self, tenant_ids: Collection[str]) -> dict[str, StoredKeys]:
            self.reads.append(set(tenant_ids))
            return await super().load(tenant_ids)

    now = [0.0]
    store = Counting(settings)
    cipher = KeyringCipher(store, master_keys(settings), ttl_s=5.0, clock=lambda: now[0])
    codec = Codec(cipher)
    values = [await encoded(codec, submitted(t)) for t in ("a", "b")]
    Counting.reads.clear()
    for _ in range(20):
        await codec.prepare_records(values)
        await codec.prepare(["a", "b"])
    assert Counting.reads == []
    now[0] = 5.0
    await codec.prepare_records(values)
    await codec.prepare_records(values)
    assert Counting.reads == [{"a", "b"}]


# -- rotation ------------------------------------------------------------------------------
async def test_rotation_adds_a_key_that_encrypts_from_then_on_and_old_fields_stay_readable(
    settings: Settings, db: asyncpg.Connection
) -> None:
    codec = codec_from_settings(settings)
    first = submitted("acme", "written with key one")
    before = await encoded(codec, first)
    other = await encoded(codec, submitted("other"))

    outcome = await rotate(PostgresKeyStore(settings), master_keys(settings), ["acme"])
    assert outcome.rotated == ("acme",)

    keys = await data_keys(db, "acme")
    assert len(keys) == 2 and len(await data_keys(db, "other")) == 1
    second = submitted("acme", "written with key two")
    after = await encoded(codec, second)
    assert Fernet(keys[0]).decrypt(token_of(after).encode())
    with pytest.raises(InvalidToken):
        Fernet(keys[1]).decrypt(token_of(after).encode())
    assert Fernet(keys[1]).decrypt(token_of(before).encode())

    reader = codec_from_settings(settings)
    assert await decoded(reader, before) == first
    assert await decoded(reader, after) == second
    assert (await decoded(reader, other)).tenant_id == "other"


async def test_rotating_every_tenant_gives_each_a_new_key(
    settings: Settings, db: asyncpg.Connection
) -> None:
    codec = codec_from_settings(settings)
    for tenant in ("a", "b", "c"):
        await encoded(codec, submitted(tenant))
    outcome = await rotate(PostgresKeyStore(settings), master_keys(settings))
    assert outcome.rotated == ("a", "b", "c")
    assert outcome.rewrapped == 6


async def test_after_rewrapping_with_a_new_master_key_the_old_one_can_be_retired(
    settings: Settings, db: asyncpg.Connection
) -> None:
    event = submitted("acme")
    value = await encoded(codec_from_settings(settings), event)

    new_master = generate_key()
    both = with_masters(settings, new_master, MASTER)
    outcome = await rotate(PostgresKeyStore(both), master_keys(both), [])
    assert outcome.rotated == () and outcome.rewrapped == 1
    assert await db.fetchval("SELECT DISTINCT master_key FROM tenant_keys") == fingerprint(
        new_master
    )

    only_new = codec_from_settings(with_masters(settings, new_master))
    assert await decoded(only_new, value) == event
    with pytest.raises(MasterKeyError):
        await codec_from_settings(settings).prepare_records([value])


# -- shredding -----------------------------------------------------------------------------
async def test_a_shredded_tenants_events_decode_with_shredded_fields(
    settings: Settings, db: asyncpg.Connection
) -> None:
    codec = codec_from_settings(settings)
    event = submitted("doomed")
    value = await encoded(codec, event)
    assert (await decoded(codec, value)).payload == event.payload

    shredding = await PostgresKeyStore(settings).destroy("doomed", "erasure request")
    assert shredding.keys_destroyed == 1 and shredding.first
    assert await db.fetchval("SELECT count(*) FROM tenant_keys") == 0

    read = await decoded(codec, value)
    assert isinstance(read.payload, TaskSubmitted)
    assert read.payload.description == SHREDDED
    assert read.payload.model_dump()["constraints"] == SHREDDED
    assert read.payload.timeout == 60
    assert shredded_fields(read.payload) == {"description", "constraints"}
    assert (read.id, read.task_id, read.tenant_id) == (event.id, event.task_id, "doomed")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dumped = read.model_dump(mode="json")
    assert dumped["payload"]["description"] == SHREDDED


async def test_nothing_more_can_be_encrypted_for_a_shredded_tenant(
    settings: Settings, db: asyncpg.Connection
) -> None:
    codec = codec_from_settings(settings)
    await encoded(codec, submitted("doomed"))
    await PostgresKeyStore(settings).destroy("doomed", None)
    with pytest.raises(TenantKeysDestroyed, match="doomed"):
        await encoded(codec, submitted("doomed"))
    assert await db.fetchval("SELECT count(*) FROM tenant_keys") == 0


async def test_shredding_hides_what_the_legacy_key_encrypted_and_spares_other_tenants(
    settings: Settings, db: asyncpg.Connection
) -> None:
    legacy = Codec(FernetCipher(settings.fernet_keys()))
    old_doomed, old_kept = submitted("doomed"), submitted("kept")
    values = [legacy.encode(old_doomed).value, legacy.encode(old_kept).value]
    codec = codec_from_settings(settings)
    kept_new = submitted("kept", "still mine")
    values.append(await encoded(codec, kept_new))

    await PostgresKeyStore(settings).destroy("doomed", None)
    assert (await decoded(codec, values[0])).payload.description == SHREDDED  # type: ignore[attr-defined]
    assert await decoded(codec, values[1]) == old_kept
    assert await decoded(codec, values[2]) == kept_new


async def test_shredding_twice_destroys_nothing_more_and_reports_the_first_count(
    settings: Settings, db: asyncpg.Connection
) -> None:
    store = PostgresKeyStore(settings)
    codec = codec_from_settings(settings)
    await encoded(codec, submitted("doomed"))
    await rotate(store, master_keys(settings), ["doomed"])
    assert (await store.destroy("doomed", None)).keys_destroyed == 2
    again = await store.destroy("doomed", None)
    assert (again.keys_destroyed, again.first) == (2, False)
    assert (await rotate(store, master_keys(settings), ["doomed"])).rotated == ()
    assert await db.fetchval("SELECT count(*) FROM tenant_keys") == 0


async def test_a_shredded_plan_keeps_its_type_with_the_stages_shredded(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """plan.created's stages are one encrypted list; shredded, the model validator that
    checks them is not run and the rest of the plan is still validated."""
    codec = codec_from_settings(settings)
    event = Event.new(PLAN, tenant_id="doomed", actor=USER, task_id=uuid.uuid4())
    value = await encoded(codec, event)
    await PostgresKeyStore(settings).destroy("doomed", None)
    read = await decoded(codec, value)
    assert isinstance(read.payload, PlanCreated)
    assert read.payload.model_dump()["stages"] == SHREDDED
    assert read.payload.total == PLAN.total
    assert read.payload.playbook == PLAN.playbook


async def test_a_shredded_event_of_an_old_version_is_upcast_like_any_other(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """task.submitted v1 still becomes v2 (its upcaster needs none of the shredded fields)."""
    codec = codec_from_settings(settings)
    old = Event.new(
        TaskSubmittedV1(description="from before identity", timeout=30),
        tenant_id="doomed",
        actor=USER,
        task_id=uuid.uuid4(),
    )
    value = await encoded(codec, old)
    await PostgresKeyStore(settings).destroy("doomed", None)
    read = await decoded(codec, value)
    assert isinstance(read.payload, TaskSubmitted)
    assert read.schema_version == 2
    assert (read.payload.description, read.payload.timeout) == (SHREDDED, 30)
    assert read.payload.grants == sorted(read.payload.grants) and read.payload.grants


async def test_a_shredded_record_that_is_invalid_outside_its_shredded_fields_is_poison(
    settings: Settings, db: asyncpg.Connection
) -> None:
    codec = codec_from_settings(settings)
    value = await encoded(codec, submitted("doomed"))
    await PostgresKeyStore(settings).destroy("doomed", None)
    envelope = orjson.loads(value)
    envelope["payload"]["timeout"] = -5
    with pytest.raises(EventDecodeError) as caught:
        await decoded(codec, orjson.dumps(envelope))
    assert caught.value.reason == "invalid_payload"


async def test_a_process_holding_keys_sees_a_shredding_once_its_cache_expires(
    settings: Settings, db: asyncpg.Connection
) -> None:
    now = [0.0]
    cipher = keyring_from_settings(settings)
    cipher.ttl_s, cipher.clock = 5.0, lambda: now[0]
    codec = Codec(cipher)
    event = submitted("doomed")
    value = await encoded(codec, event)
    await PostgresKeyStore(settings).destroy("doomed", None)
    assert await decoded(codec, value) == event  # still within the TTL
    now[0] = 5.0
    assert (await decoded(codec, value)).payload.description == SHREDDED  # type: ignore[attr-defined]
