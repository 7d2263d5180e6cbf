"""The public names of ``events`` are a contract: adding or removing one is a deliberate act."""

import events
import events.schema

EXPECTED = {
    "EXECUTION_SCOPES",
    "IDENTITY_TYPES",
    "PLATFORM_SCOPES",
    "ROLE_SCOPES",
    "ROLES",
    "SCOPES",
    "SYSTEM_TENANT",
    "TENANT_ID_PATTERN",
    "USERNAME_PATTERN",
    "AccessDenied",
    "ApiKeyIssued",
    "ApiKeyRevoked",
    "ApiKeyUsed",
    "Credential",
    "KeyUse",
    "LoginFailed",
    "LoginSucceeded",
    "Role",
    "RoleChanged",
    "SessionRefreshed",
    "SessionRevoked",
    "SessionStarted",
    "TenantCreated",
    "TenantShredded",
    "UserCreated",
    "UserDisabled",
    "role_scopes",
    "AlertAcknowledged",
    "AlertCleared",
    "AlertCode",
    "AlertLevel",
    "AlertRaised",
    "CheckResult",
    "Decision",
    "EvaluationRecorded",
    "GroupPosterior",
    "QualityFitted",
    "ThompsonDraw",
    "ErrorCategory",
    "ProgressUpdated",
    "RecoveryAction",
    "RecoveryExecuted",
    "RecoveryPlanned",
    "StepCompleted",
    "StepError",
    "StepFailed",
    "StepStarted",
    "ToolCalled",
    "ToolReturned",
    "AllocatedTool",
    "AssignedRole",
    "Operation",
    "PlanCreated",
    "PlanEstimate",
    "PlanStage",
    "RolesAssigned",
    "RoleTools",
    "StageFallback",
    "ThoughtRecorded",
    "ToolsAllocated",
    "UsageRecorded",
    "SYSTEM",
    "END_STATUS",
    "TERMINAL_TYPES",
    "EndStatus",
    "TOPICS",
    "Actor",
    "BrokerUnavailable",
    "Catalog",
    "CatalogError",
    "ChainCheckpoint",
    "SignedHead",
    "SignatureAlgorithm",
    "Cipher",
    "Codec",
    "DecryptionError",
    "Event",
    "EventDecodeError",
    "EventPayload",
    "Delivery",
    "EventProducer",
    "EventsError",
    "FernetCipher",
    "Position",
    "Record",
    "TaskCancelled",
    "TaskCompleted",
    "TaskError",
    "TaskFailed",
    "TaskFailedV1",
    "TaskSubmitted",
    "TaskSubmittedV1",
    "TopicConfigError",
    "bootstrap_topics",
    "canonical_json",
    "catalog",
    "codec_from_settings",
    "SHREDDED",
    "KeyStore",
    "KeyStoreUnavailable",
    "KeyringCipher",
    "KeysNotPrepared",
    "MasterKeyError",
    "MasterKeys",
    "PostgresKeyStore",
    "Rotation",
    "Shredding",
    "StoredKeys",
    "TenantKeysDestroyed",
    "WrappedKey",
    "fingerprint",
    "keyring_from_settings",
    "master_keys",
    "rotate",
    "shredded_fields",
    "create_consumer",
    "derive_id",
    "event",
    "generate_key",
    "log_end_offsets",
    "sensitive",
    "upcast_task_failed_v1_to_v2",
    "upcast_task_submitted_v1_to_v2",
    "ADMIN_TYPES",
    "AGENT_ID_PATTERN",
    "MAX_TASKS_PER_TENANT",
    "RUNTIME_TYPES",
    "AgentError",
    "AgentHeartbeat",
    "PartitionLag",
    "TasksInFlight",
}


def test_events_exports_exactly_the_pinned_names() -> None:
    assert set(events.__all__) == EXPECTED
    assert len(events.__all__) == len(EXPECTED), "a name is listed twice in events.__all__"


def test_every_exported_name_exists() -> None:
    missing = [name for name in events.__all__ if not hasattr(events, name)]
    assert missing == []


def test_every_schema_export_exists() -> None:
    assert all(hasattr(events.schema, name) for name in events.schema.__all__)
    assert {"export_schemas", "render_markdown"} <= set(events.schema.__all__)


def test_errors_hang_under_one_root() -> None:
    """Callers can catch every log-layer failure as EventsError, and every WrenchAI one as
    WrenchError."""
    from wrenchai.errors import WrenchError

    for error in (
        events.BrokerUnavailable,
        events.CatalogError,
        events.EventDecodeError,
        events.TopicConfigError,
        events.DecryptionError,
    ):
        assert issubclass(error, events.EventsError)
    assert issubclass(events.EventsError, WrenchError)
