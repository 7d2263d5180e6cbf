"""The log: event envelope, catalog, codec, encryption seam and Kafka wrappers."""

import structlog

from events._catalog import Catalog, catalog, event
from events._codec import Codec, Record, canonical_json
from events._crypto import Cipher, DecryptionError, FernetCipher, generate_key
from events._envelope import SYSTEM, Actor, Event, EventPayload, Position, derive_id, sensitive
from events._errors import (
    BrokerUnavailable,
    CatalogError,
    EventDecodeError,
    EventsError,
    TopicConfigError,
)
from events._execution import (
    ErrorCategory,
    ProgressUpdated,
    RecoveryAction,
    RecoveryExecuted,
    RecoveryPlanned,
    StepCompleted,
    StepError,
    StepFailed,
    StepStarted,
    ToolCalled,
    ToolReturned,
)
from events._inspection import (
    AlertAcknowledged,
    AlertCleared,
    AlertCode,
    AlertLevel,
    AlertRaised,
    CheckResult,
    Decision,
    EvaluationRecorded,
    GroupPosterior,
    QualityFitted,
)
from events._kafka import (
    TOPICS,
    EventProducer,
    bootstrap_topics,
    create_consumer,
    log_end_offsets,
)
from events._planning import (
    AllocatedTool,
    AssignedRole,
    Operation,
    PlanCreated,
    PlanEstimate,
    PlanStage,
    RolesAssigned,
    RoleTools,
    StageFallback,
    ThompsonDraw,
    ThoughtRecorded,
    ToolsAllocated,
    UsageRecorded,
)
from events._task import (
    TERMINAL_TYPES,
    TaskCancelled,
    TaskCompleted,
    TaskError,
    TaskFailed,
    TaskFailedV1,
    TaskSubmitted,
    upcast_task_failed_v1_to_v2,
)

__all__ = [
    "SYSTEM",
    "TERMINAL_TYPES",
    "TOPICS",
    "Actor",
    "AlertAcknowledged",
    "AlertCleared",
    "AlertCode",
    "AlertLevel",
    "AlertRaised",
    "AllocatedTool",
    "AssignedRole",
    "BrokerUnavailable",
    "Catalog",
    "CatalogError",
    "CheckResult",
    "Cipher",
    "Codec",
    "Decision",
    "DecryptionError",
    "ErrorCategory",
    "EvaluationRecorded",
    "Event",
    "EventDecodeError",
    "EventPayload",
    "EventProducer",
    "EventsError",
    "FernetCipher",
    "GroupPosterior",
    "Operation",
    "PlanCreated",
    "PlanEstimate",
    "PlanStage",
    "Position",
    "ProgressUpdated",
    "QualityFitted",
    "Record",
    "RecoveryAction",
    "RecoveryExecuted",
    "RecoveryPlanned",
    "RoleTools",
    "RolesAssigned",
    "StageFallback",
    "StepCompleted",
    "StepError",
    "StepFailed",
    "StepStarted",
    "TaskCancelled",
    "TaskCompleted",
    "TaskError",
    "TaskFailed",
    "TaskFailedV1",
    "TaskSubmitted",
    "ThompsonDraw",
    "ThoughtRecorded",
    "ToolCalled",
    "ToolReturned",
    "ToolsAllocated",
    "TopicConfigError",
    "UsageRecorded",
    "bootstrap_topics",
    "canonical_json",
    "catalog",
    "create_consumer",
    "derive_id",
    "event",
    "generate_key",
    "log_end_offsets",
    "sensitive",
    "upcast_task_failed_v1_to_v2",
]


def codec_from_settings(keys: list[str]) -> Codec:
    """The codec for a list of Fernet keys: encrypting when there is one, clear otherwise."""
    if not keys:
        structlog.get_logger(__name__).warning(
            "no encryption key configured: sensitive payload fields are written in clear; "
            "set WRENCH_ENCRYPTION_KEYS or WRENCH_ENCRYPTION_KEYS_FILE"
        )
        return Codec(None)
    return Codec(FernetCipher(keys))


__all__ += ["codec_from_settings"]
