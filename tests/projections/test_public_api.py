"""The projections package's public names are a contract: a change here is deliberate."""

import projections


def test_public_names_are_pinned() -> None:
    """Adding or removing a public name must update this list."""
    assert set(projections.__all__) == {
        "ADMIN",
        "EVENTS",
        "GENESIS_HASH",
        "STREAMS",
        "Stream",
        "READ_MODELS",
        "Applied",
        "BatchOutcome",
        "BrokenLink",
        "DatabaseUnavailable",
        "Projector",
        "ProjectorRunner",
        "ReadModel",
        "RebuildError",
        "RebuildReport",
        "RestoreReport",
        "TasksModel",
        "VerifyReport",
        "chain_hash",
        "connect",
        "create_pool",
        "headers_from_json",
        "headers_to_json",
        "migrate",
        "migrate_database",
        "rebuild",
        "rebuild_all",
        "restore_all",
        "restore_log",
        "run_projector",
        "verify_archive",
        "verify_chain",
        # The archive's tamper evidence: chain v2, signed checkpoints, export.
        "CHAIN_VERSION",
        "Checkpointer",
        "ExportProblem",
        "ExportRefused",
        "ExportReport",
        "ExportVerifyReport",
        "Keyring",
        "Signer",
        "chain_hash_v2",
        "export_range",
        "keyring_from_settings",
        "link_hash",
        "load_public_key",
        "record_digest",
        "signer_from_settings",
        "verify_export",
    }
    for name in projections.__all__:
        assert hasattr(projections, name), name
