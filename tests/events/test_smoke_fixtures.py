"""The fixtures give a working broker, database and topics."""

from events import Actor, Event, EventProducer, TaskSubmitted, log_end_offsets
from wrenchai.settings import Settings
import uuid


async def test_publish_moves_the_log_end(settings: Settings, producer: EventProducer, db) -> None:
    """A published event lands at the offset the log end then reports."""
    event = Event.new(TaskSubmitted(description="x"), tenant_id="t", actor=Actor(kind="user", id="u"), task_id=uuid.uuid4())
    position = await producer.publish(event)
    ends = await log_end_offsets(settings, settings.topic("events"))
    assert ends[position.partition] == position.offset + 1
    assert await db.fetchval("SELECT count(*) FROM tasks") == 0
