"""Idempotent producers where the broker takes them (production's Apache Kafka), off where
it does not (the embedded broker, which refuses InitProducerId): WRENCH_KAFKA_IDEMPOTENT,
on by default, turned off by `wrenchai dev` and by the tests on the embedded broker."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from events import BrokerUnavailable, Codec, EventProducer
from events._kafka import producer_config
from tests.backends import Backend
from tests.projections.conftest import submitted
from wrenchai._state import record_stack, recorded_settings, secret_files
from wrenchai.embedded import free_port
from wrenchai.settings import Settings
from wrenchai.stack import Embedded, _dev_settings, _start_embedded, child_environment


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No WRENCH_* variable: the settings' own defaults (the test session sets some)."""
    for name in list(os.environ):
        if name.startswith("WRENCH_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_env")
def test_producers_are_idempotent_by_default_and_carry_the_setting() -> None:
    """The default is on, and the producer's options take whatever the settings say."""
    assert Settings().kafka_idempotent is True
    assert producer_config(Settings())["enable_idempotence"] is True
    assert producer_config(Settings(kafka_idempotent=False))["enable_idempotence"] is False
    assert producer_config(Settings())["acks"] == "all"  # which idempotence requires


async def test_an_idempotent_producer_on_the_embedded_broker_fails_saying_what_to_set(
    backend: Backend, settings: Settings, topics: dict[str, int]
) -> None:
    """Tansu answers InitProducerId with an error: the producer does not start, and the
    error names the setting that fixes it instead of calling the broker unreachable."""
    if backend.name != "embedded":
        pytest.skip("the embedded broker's refusal; Apache Kafka takes idempotent producers")
    producer = EventProducer(settings.model_copy(update={"kafka_idempotent": True}), Codec())
    with pytest.raises(BrokerUnavailable, match="InitProducerId") as refused:
        await producer.publish(submitted())
    assert "WRENCH_KAFKA_IDEMPOTENT=false" in refused.value.message
    assert "cannot reach" not in refused.value.message
    await producer.stop()


async def test_the_same_events_publish_with_the_setting_the_backend_gives(
    settings: Settings, topics: dict[str, int]
) -> None:
    """With the session's setting (off on the embedded broker, on for Apache Kafka) the
    producer publishes and gets positions back."""
    producer = EventProducer(settings, Codec())
    try:
        positions = await producer.publish_many([submitted(), submitted()])
    finally:
        await producer.stop()
    assert len(positions) == 2 and all(p.offset >= 0 for p in positions)


def test_an_unreachable_broker_is_still_called_unreachable() -> None:
    """With idempotence on, a broker that does not answer is not mistaken for a refusal."""
    from aiokafka.errors import KafkaConnectionError

    from events._kafka import _start_failed

    error = _start_failed(Settings(kafka_bootstrap="127.0.0.1:9"), KafkaConnectionError("no"))
    assert error.message.startswith("cannot reach the broker at 127.0.0.1:9")


@pytest.mark.usefixtures("clean_env")
def test_the_dev_stack_turns_idempotence_off_unless_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`wrenchai dev` defaults to off (its usual broker is the embedded one); an explicit
    WRENCH_KAFKA_IDEMPOTENT=true, for a dev stack on Apache Kafka, is kept."""
    assert _dev_settings(Settings(), 8000).kafka_idempotent is False
    monkeypatch.setenv("WRENCH_KAFKA_IDEMPOTENT", "true")
    assert _dev_settings(Settings(), 8000).kafka_idempotent is True


@pytest.mark.usefixtures("clean_env")
def test_the_dev_stack_on_its_embedded_broker_hands_off_to_children_and_admin_commands(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With the embedded broker, even an explicit true is overridden (Tansu cannot do it);
    the children get WRENCH_KAFKA_IDEMPOTENT=false, and so do admin commands run beside the
    stack (stack.json records it)."""
    monkeypatch.setenv("WRENCH_KAFKA_IDEMPOTENT", "true")
    given = _dev_settings(Settings(database_url=SecretStr("postgresql://x@127.0.0.1:9/x")), 1)
    embedded = Embedded()
    try:
        running = _start_embedded(given, tmp_path, free_port(), True, embedded)
    finally:
        embedded.stop()
    assert running.kafka_idempotent is False
    files = secret_files(running, tmp_path)
    assert child_environment(running, {}, files)["WRENCH_KAFKA_IDEMPOTENT"] == "false"
    record_stack(running, tmp_path, "http://127.0.0.1:1", files)
    recorded = json.loads((tmp_path / "stack.json").read_text())["settings"]
    assert recorded["kafka_idempotent"] is False
    assert recorded_settings(tmp_path)["kafka_idempotent"] is False
