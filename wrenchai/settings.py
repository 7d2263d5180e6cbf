"""The one settings object. Every knob is a ``WRENCH_`` environment variable.

Secrets (and the RS256 public key, a PEM file more often than not) also accept a ``*_FILE``
variant (``WRENCH_ENCRYPTION_KEYS_FILE``) that names a file holding the value, so they can come
from a mounted secret instead of the environment. The file is read once, when the settings load;
the variable itself wins when both are set. Secrets are ``SecretStr``: their repr is masked, and
code asks for the value only at the edge that needs it (``database_dsn()``, a signer, a client).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

_SECRET_FIELDS = (
    "encryption_keys",
    "master_keys",
    "jwt_secret",
    "jwt_private_key",
    "api_key_pepper",
    "llm_api_key",
    "alert_webhook_secret",
    "checkpoint_signing_key",
    "checkpoint_hmac_key",
    "api_key",
    "otlp_headers",
    # Its password, when it has one, is in the URL.
    "database_url",
    "database_password",
)
# Read from ``WRENCH_<NAME>_FILE`` too: every secret, PEM keys that are not secret, and the
# list of MCP servers (a JSON or YAML file is easier to keep than a variable).
_FILE_FIELDS = (*_SECRET_FIELDS, "jwt_public_key", "mcp_servers")


class Settings(BaseSettings):
    """Configuration of every WrenchAI process (API, projector, workers, CLI)."""

    # An error names the setting and why, never the values given: they hold secrets.
    model_config = SettingsConfigDict(
        env_prefix="WRENCH_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    # -- the log -----------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    namespace: str = Field(
        "",
        description="Prefix for every topic and consumer group name, so that several "
        "deployments (or test runs) can share one cluster.",
    )
    partitions: int = Field(6, ge=1, le=1024, description="Partition count of wrench.events.")
    replication_factor: int = Field(1, ge=1, description="Replication factor of new topics.")
    kafka_request_timeout_ms: int = Field(
        10_000, ge=100, description="How long a produce may wait for the broker's ack."
    )
    kafka_session_timeout_ms: int = Field(
        10_000, ge=1_000, description="Consumer group session timeout."
    )
    kafka_rebalance_timeout_ms: int = Field(
        10_000,
        ge=1_000,
        description="Consumer group rebalance timeout. The embedded broker holds a join for "
        "half of it, so dev and tests keep it low.",
    )
    kafka_fetch_max_wait_ms: int = Field(
        500,
        ge=1,
        le=10_000,
        description="Longest a consumer's fetch waits for data. Kafka answers as soon as data "
        "arrives; the embedded broker waits the whole time when a fetch spans several "
        "partitions, so dev and tests set it low (each hop through the log waits for it).",
    )
    producer_linger_ms: int = Field(
        5,
        ge=0,
        description="Producer batching delay of the workers, the projector and the commands "
        "(the API has its own, WRENCH_API_PRODUCER_LINGER_MS).",
    )
    api_producer_linger_ms: int = Field(
        0,
        ge=0,
        description="Batching delay of the API's producer. A write answers once the broker "
        "has acknowledged its event, so a linger adds to every write's latency; without one, "
        "the records that arrive while a produce request is in flight still go out together "
        "in the next.",
    )
    producer_compression: Literal["gzip", "none"] = Field(
        "gzip", description="Compression of produced batches."
    )
    kafka_idempotent: bool = Field(
        True,
        description="Idempotent producers (a producer id and sequence numbers per partition): a "
        "produce retried after a lost ack is written once, not twice, and stays in order. "
        "Apache Kafka supports it; the embedded broker (Tansu) refuses InitProducerId, so "
        "`wrenchai dev` and the tests turn it off when they run it.",
    )

    # -- Postgres ----------------------------------------------------------------------
    database_url: SecretStr = Field(
        SecretStr("postgresql://postgres@127.0.0.1:5432/wrenchai"),
        description="Postgres connection URL of the read models and the event archive; it "
        "may carry the password.",
    )
    database_password: SecretStr | None = Field(
        None,
        description="Password of the database user, for a WRENCH_DATABASE_URL that carries "
        "none: it is put into the URL (quoted as a URL needs), so it may hold any character. "
        "With WRENCH_DATABASE_PASSWORD_FILE, WrenchAI and the postgres image "
        "(POSTGRES_PASSWORD_FILE) read the same secret file.",
    )
    database_pool_size: int = Field(10, ge=1, description="Connections per process pool.")

    # -- projector ---------------------------------------------------------------------
    projector_batch_size: int = Field(
        500, ge=1, description="Most records the projector writes in one transaction."
    )
    projector_batch_ms: int = Field(
        100, ge=1, description="Longest the projector waits to fill a batch."
    )

    # -- audit: signed checkpoints of the archive's hash chain --------------------------
    checkpoint_signing_key: SecretStr | None = Field(
        None,
        description="Ed25519 private key (PEM, PKCS#8) with which the projector signs the "
        "head of each partition's hash chain, and `wrenchai audit export` its exports. "
        "Auditors verify with its public key (`wrenchai audit public-key`). `wrenchai dev` "
        "makes one in its state directory. Unset and no WRENCH_CHECKPOINT_HMAC_KEY: no "
        "checkpoints are signed.",
    )
    checkpoint_hmac_key: SecretStr | None = Field(
        None,
        description="Key of HMAC-SHA256 checkpoint signatures, used only when "
        "WRENCH_CHECKPOINT_SIGNING_KEY is unset; whoever verifies needs this same key.",
    )
    checkpoint_every_records: int = Field(
        1_000,
        ge=1,
        description="The projector signs the chain heads after this many records archived "
        "since its last checkpoint.",
    )
    checkpoint_interval_s: float = Field(
        30.0,
        gt=0,
        description="Longest time between checkpoints while a chain head has moved; no "
        "checkpoint is signed while none has.",
    )

    # -- API ---------------------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="Address the API listens on.")
    api_port: int = Field(8000, ge=1, le=65535, description="Port the API listens on.")
    default_tenant: str = Field(
        "default", description="Tenant stamped on requests that carry no principal."
    )
    read_wait_timeout_s: float = Field(
        5.0, gt=0, description="Longest a read with ?wait_for= waits for the projector."
    )

    # -- API: live streams ----------------------------------------------------------------
    stream_buffer: int = Field(
        2_000,
        ge=10,
        description="Records of each partition the API keeps in memory after reading them, so "
        "a stream catching up from the archive can bridge what the projector has not archived "
        "yet.",
    )
    ws_queue_size: int = Field(
        1_000,
        ge=1,
        description="Events a stream may have waiting for its client; past it the client is "
        "too slow and its socket is closed with 1013.",
    )
    ws_max_sockets_per_principal: int = Field(
        100, ge=1, description="Open streams one user or API key may hold on one API process."
    )
    ws_ping_interval_s: float = Field(
        20.0, gt=0, description='How often a socket is sent {"type": "ping"}.'
    )
    ws_idle_timeout_s: float = Field(
        600.0,
        gt=0,
        description="A socket on which neither side has sent anything but pings for this long "
        "is closed (1001).",
    )
    ws_auth_timeout_s: float = Field(
        10.0, gt=0, description="How long a socket may take to send its credential."
    )
    ws_start_wait_s: float = Field(
        1.0,
        ge=0,
        description="How long a task stream without ?resume_from= waits for a first message "
        "that may carry one before it starts from the beginning.",
    )
    ws_recheck_interval_s: float = Field(
        1.0,
        gt=0,
        le=2.0,
        description="How often an open stream checks that its credential is still valid.",
    )
    ws_compression: bool = Field(
        False,
        description="Accept permessage-deflate on WebSockets. Off by default: the server "
        "compresses every message once per socket, which halves how many events one process "
        "fans out; turn it on where bandwidth costs more than CPU.",
    )
    ws_ticket_ttl_s: int = Field(
        30, ge=1, le=300, description="Lifetime of a single-use ticket from POST /ws-ticket."
    )

    # -- security: encryption ------------------------------------------------------------
    encryption_keys: SecretStr | None = Field(
        None,
        description="Comma-separated Fernet keys for sensitive payload fields, newest "
        "first (MultiFernet: the first encrypts, all decrypt). With WRENCH_MASTER_KEYS set "
        "they only decrypt what was written before tenants had keys of their own. Neither "
        "set: sensitive fields are stored in clear and a warning is logged.",
    )
    master_keys: SecretStr | None = Field(
        None,
        description="Comma-separated Fernet master keys, newest first, that wrap each "
        "tenant's data keys (the data keys live wrapped in Postgres, never in clear). Set: "
        "every tenant's content is encrypted with its own keys.",
    )
    key_cache_ttl_s: float = Field(
        5.0,
        ge=0,
        description="How long a process keeps a tenant's unwrapped data keys before reading "
        "them again; a shredded tenant's content is unreadable everywhere within this time.",
    )

    # -- security: identity ---------------------------------------------------------------
    jwt_algorithm: Literal["HS256", "RS256"] = Field(
        "HS256", description="Signature algorithm of access and refresh tokens."
    )
    jwt_secret: SecretStr | None = Field(
        None,
        description="HS256 signing secret (32 bytes or more). Unset: the API makes one up at "
        "start, so tokens die with the process and work on no other process.",
    )
    jwt_private_key: SecretStr | None = Field(
        None, description="RS256 private key (PEM) that signs tokens."
    )
    jwt_public_key: str | None = Field(
        None, description="RS256 public key (PEM) that verifies tokens."
    )
    jwt_issuer: str = Field("wrenchai", description="The iss of every token, checked on use.")
    jwt_audience: str = Field("wrenchai-api", description="The aud of every token, checked.")
    jwt_leeway_s: int = Field(
        10, ge=0, le=300, description="Clock skew allowed on exp, nbf and iat."
    )
    access_token_ttl_s: int = Field(
        900, ge=30, le=86_400, description="Lifetime of an access token."
    )
    refresh_token_ttl_s: int = Field(
        1_209_600, ge=60, description="Lifetime of a refresh token (rotated on every use)."
    )
    api_key_pepper: SecretStr | None = Field(
        None,
        description="Key of the HMAC-SHA256 that hashes API key secrets. Unset: derived from "
        "WRENCH_JWT_SECRET; set it apart so the two rotate apart.",
    )
    principal_cache_ttl_s: float = Field(
        1.0,
        ge=0,
        le=1.5,
        description="How long an API process trusts what it read of a key, user or session; "
        "a revoked key or a disabled user is refused by every process within this time plus "
        "the projector's batch time.",
    )
    login_rate_limit: str = Field(
        "5/minute",
        description="Failed logins allowed per user name, then 429 (limits notation).",
    )
    login_address_rate_limit: str = Field(
        "20/minute", description="Failed logins allowed per client address, then 429."
    )
    write_rate_limit: str = Field(
        "120/minute", description="Writes (tasks, cancels, acknowledgements) per principal."
    )
    rate_limit_storage: str = Field(
        "memory://",
        description="Where rate-limit counters live (limits storage URI): memory:// counts "
        "per API process; redis://host:6379 shares them between processes.",
    )
    api_database_role: str = Field(
        "wrench_api",
        description="Postgres role the API's tenant-scoped reads run as: it cannot bypass "
        "row-level security. The connecting user must be a member of it.",
    )

    # -- security: HTTP -------------------------------------------------------------------
    cors_origins: str = Field(
        "", description="Comma-separated origins allowed by CORS; empty: CORS is off."
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1_024, description="Largest request body the API reads, then 413."
    )
    docs_enabled: bool = Field(True, description="Serve /docs, /redoc and /openapi.json.")
    sandbox_allow_weak: bool = Field(
        False,
        description="Let code.python run without its namespaces (own user, pid, mount and "
        "network) where this machine cannot make them. Off: it refuses to run there.",
    )

    # -- reasoning (LLM) ---------------------------------------------------------------
    llm_base_url: str | None = Field(
        None,
        description="Base URL of an OpenAI-compatible chat completions API "
        "(https://api.openai.com/v1, http://127.0.0.1:11434/v1 for Ollama, a vLLM or "
        "llama.cpp server). Unset: no LLM, and the offline rule reasoner decides.",
    )
    llm_model: str = Field("gpt-4o-mini", description="Model asked first.")
    llm_api_key: SecretStr | None = Field(
        None, description="Bearer token for the LLM server; unset sends no Authorization."
    )
    llm_fallback_models: str = Field(
        "",
        description="Comma-separated models tried in order when the first one stays "
        "unavailable after its retries.",
    )
    llm_timeout_s: float = Field(60.0, gt=0, description="Longest one LLM request may take.")
    llm_max_retries: int = Field(
        3,
        ge=0,
        description="Retries per model on 408, 409, 429, 5xx, timeouts and connection errors "
        "(the openai SDK's: 0.5 s doubling up to 8 s, or the server's Retry-After up to two "
        "minutes; a longer Retry-After moves on to the next model at once).",
    )
    llm_max_thoughts: int = Field(
        8, ge=1, le=64, description="Most numbered thoughts one reasoning call may take."
    )

    # -- agents ------------------------------------------------------------------------
    roles_file: Path | None = Field(
        None,
        description="YAML file of extra roles (the format of processors/shared/roles.yaml); "
        "a role with a built-in name replaces the built-in one.",
    )
    playbooks_dir: Path | None = Field(
        None,
        description="Folder of extra playbook files (*.yaml); a playbook with a shipped "
        "name replaces the shipped one.",
    )
    price_table: Path | None = Field(
        None,
        description="YAML price table (models per million tokens of each kind, tools per call) "
        "that replaces the shipped one (processors/shared/prices.yaml) for usage and "
        "estimates; see docs/cost.md.",
    )
    agent_concurrency: int = Field(
        8, ge=1, le=1024, description="Most jobs (LLM or tool calls) one agent worker runs at once."
    )
    snapshot_interval_s: float = Field(
        5.0,
        ge=0.1,
        le=3_600,
        description="How often each agent worker saves, per partition, the records of its "
        "tasks in flight with the offset they cover (table worker_snapshots); a restart or "
        "a rebalance replays the log only from there.",
    )
    data_dir: Path | None = Field(
        None,
        description="Folder for a worker's local files (faust's data directory); `wrenchai "
        "dev` puts it in its state directory. Unset: a folder in the system's temp folder.",
    )
    heartbeat_interval_s: float = Field(
        10.0,
        ge=0.1,
        le=3_600,
        description="How often each agent worker publishes agent.heartbeat (its partitions, "
        "lag, tasks in flight and last error) on wrench.admin; the API calls an instance "
        "stale after three intervals without one.",
    )
    stats_refresh_s: float = Field(
        5.0,
        gt=0,
        le=3_600,
        description="How often each agent worker reloads its decision statistics (tool "
        "reliability, circuit breakers, evaluation counts, the newest quality fit) from the "
        "read models of every partition in Postgres.",
    )
    max_parallel_stages: int = Field(
        4, ge=1, le=64, description="Most stages of one task that run at the same time."
    )
    max_event_bytes: int = Field(
        524_288,
        ge=4_096,
        description="Largest tool result or step output put in an event; a larger one fails "
        "the step with OUTPUT_TOO_LARGE.",
    )

    tool_modules: str = Field(
        "",
        description="Comma-separated Python modules that add tools: each has "
        "register(registry, tools, settings), called at the start of every agent worker "
        "(see docs/tools.md).",
    )

    # -- MCP servers, whose tools the agents call like their own --------------------------
    mcp_servers: str = Field(
        "",
        description="The MCP servers whose tools the agents may call, each as "
        "mcp.<server>.<tool>: a JSON list (a JSON or YAML file through "
        "WRENCH_MCP_SERVERS_FILE) of objects with a name and either command, args, env and "
        "cwd (stdio) or url and headers (streamable HTTP); env and header values may be "
        '{"file": path, "prefix": text} to read a secret. See docs/mcp-tools.md.',
    )
    mcp_connect_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Longest connecting to an MCP server may take (starting its command, the "
        "initialize handshake, listing its tools), and longest a ping may wait.",
    )
    mcp_probe_interval_s: float = Field(
        15.0,
        gt=0,
        le=3_600,
        description="How often an agent worker tries again to list the tools of an MCP server "
        "it could not reach, and how long the API reuses a server's ping for /health.",
    )

    # -- built-in tools -----------------------------------------------------------------
    search_url: str | None = Field(
        None,
        description="Base URL of a SearxNG-compatible JSON search API for web.search; unset "
        "searches the local corpus.",
    )
    search_corpus: Path | None = Field(
        None,
        description="Folder of text and markdown files that offline web.search ranks; unset "
        "uses the project's docs/.",
    )
    sandbox_timeout_s: float = Field(
        30.0, gt=0, le=600, description="Default wall-time limit of one code.python run."
    )
    sandbox_cpu_s: int = Field(30, ge=1, description="CPU-seconds limit of one code.python run.")
    sandbox_memory_mb: int = Field(
        512,
        ge=16,
        description="Memory of one code.python run, in MiB: its address space, and (with a "
        "memory cgroup) everything the run holds, its tmpfs included.",
    )
    sandbox_output_bytes: int = Field(
        65_536,
        ge=1_024,
        description="Most bytes of stdout and of stderr code.python keeps (outputs travel in "
        "events, so keep them well under the broker's message size).",
    )
    fetch_max_bytes: int = Field(
        2_000_000, ge=1, description="Default most bytes http.fetch reads from a response."
    )
    fetch_timeout_s: float = Field(10.0, gt=0, description="Default timeout of http.fetch.")
    fetch_content_types: str = Field(
        "text/html,text/plain,text/markdown,application/json,application/xml,text/xml",
        description="Comma-separated content types http.fetch accepts.",
    )
    fetch_allow_hosts: str = Field(
        "",
        description="Comma-separated hosts or CIDR ranges http.fetch may reach even though "
        "they are private, loopback or link-local (the SSRF guard refuses them otherwise).",
    )

    # -- inspection ----------------------------------------------------------------------
    require_acceptance: bool = Field(
        True,
        description="Whether a completed stage must be accepted by the InspectorAgent before "
        "its dependents run and the task completes. Turn it off only where no InspectorAgent "
        "runs.",
    )
    quality_threshold: float = Field(
        0.6, gt=0, lt=1, description="The quality an output must exceed (its Beta posterior)."
    )
    accept_confidence: float = Field(
        0.7,
        gt=0,
        lt=1,
        description="Accept an output when P(quality > WRENCH_QUALITY_THRESHOLD) is at least this.",
    )
    escalate_confidence: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="Escalate at once (no retry) when P(quality > threshold) is below this.",
    )
    quality_retries: int = Field(
        2, ge=0, le=10, description="Retries of a stage whose output is not accepted."
    )
    prior_alpha: float = Field(
        1.0, gt=0, description="Beta prior of a group's quality before any fit (successes)."
    )
    prior_beta: float = Field(
        1.0, gt=0, description="Beta prior of a group's quality before any fit (failures)."
    )
    prior_max_weight: float = Field(
        10.0,
        gt=0,
        description="Most weight (alpha + beta) a fitted prior carries into one evaluation, "
        "its mean kept: a group's long history must not outvote one output's own checks.",
    )
    judge_votes: int = Field(
        1, ge=0, le=9, description="Votes of the reasoner as a judge per evaluation (0: none)."
    )
    fit_interval_s: float = Field(
        300.0, gt=0, description="Longest time between fits of the hierarchical quality model."
    )
    fit_min_new: int = Field(
        50, ge=1, description="New evaluations that trigger a fit before the interval is up."
    )
    fit_draws: int = Field(500, ge=50, description="Posterior draws per chain of a fit.")
    fit_chains: int = Field(2, ge=1, le=8, description="Chains of a fit (r_hat needs two).")
    stall_after_s: float = Field(
        120.0, gt=0, description="A task with no event for this long is STALLED."
    )
    overrun_factor: float = Field(
        1.5,
        gt=1,
        description="OVERRUN_TIME / OVERRUN_TOKENS when elapsed time or tokens exceed the "
        "plan's estimate by this factor.",
    )
    low_quality_score: float = Field(
        0.4, gt=0, lt=1, description="LOW_QUALITY when an evaluation's quality score is below."
    )
    repeated_failures: int = Field(
        3, ge=1, description="REPEATED_FAILURES when a task has this many failed attempts."
    )
    alert_webhook_url: str | None = Field(
        None, description="URL that receives every alert as a signed JSON POST; unset: none."
    )
    alert_webhook_secret: SecretStr | None = Field(
        None,
        description="Key of the webhook's HMAC-SHA256 signature header (X-Wrench-Signature).",
    )
    alert_webhook_timeout_s: float = Field(5.0, gt=0, description="Timeout of one webhook POST.")
    alert_webhook_retries: int = Field(
        3, ge=0, le=10, description="Retries of a webhook POST that fails, with backoff."
    )

    # -- resource monitoring (the ResourceMonitor, in `wrenchai projector`) ---------------
    monitor_enabled: bool = Field(
        True,
        description="Run the ResourceMonitor in the projector process: platform alerts "
        "(CONSUMER_LAG, MEMORY_HIGH, ERROR_RATE, DLQ_GROWTH) for tenant _system.",
    )
    monitor_interval_s: float = Field(
        15.0, gt=0, le=3_600, description="How often the ResourceMonitor checks its thresholds."
    )
    monitor_window_s: float = Field(
        300.0,
        gt=0,
        le=86_400,
        description="The window ERROR_RATE and DLQ_GROWTH count over (failures, DLQ records).",
    )
    monitor_lag_records: int = Field(
        10_000,
        ge=0,
        description="CONSUMER_LAG when a consumer group (a worker kind, the projector) is "
        "more than this many records behind, summed over its partitions.",
    )
    monitor_memory_mb: float = Field(
        2_048.0,
        gt=0,
        description="MEMORY_HIGH when a worker process's resident memory (from its "
        "heartbeat) is above this many MiB.",
    )
    monitor_error_rate_per_min: float = Field(
        6.0,
        ge=0,
        description="ERROR_RATE when a worker process's failed jobs and undecodable records, "
        "per minute averaged over WRENCH_MONITOR_WINDOW_S, are above this.",
    )
    monitor_dlq_growth: int = Field(
        20,
        ge=0,
        description="DLQ_GROWTH when more than this many records were added to wrench.dlq "
        "within WRENCH_MONITOR_WINDOW_S (each consumer that meets a bad record copies it).",
    )
    monitor_clear_ratio: float = Field(
        0.8,
        gt=0,
        le=1,
        description="An alert of the ResourceMonitor clears once its figure is back at or "
        "below this fraction of its threshold, so a figure hovering at the line does not "
        "raise and clear on every check.",
    )

    # -- the command line as the API's client (wrenchai submit, wrenchai watch) ----------
    api_url: str | None = Field(
        None,
        description="Base URL of the API that `wrenchai submit` and `wrenchai watch` talk to; "
        "unset: the one the `wrenchai dev` stack in --state-dir recorded, else "
        "http://127.0.0.1:WRENCH_API_PORT.",
    )
    api_key: SecretStr | None = Field(
        None,
        description="The credential (an API key, or a JWT) `wrenchai submit` and `wrenchai "
        "watch` send; unset: the bootstrap admin's key in --state-dir (admin-api-key).",
    )

    # -- logging -----------------------------------------------------------------------
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")
    log_format: Literal["console", "json"] = Field(
        "json", description="console for people, json for machines."
    )

    # -- metrics -------------------------------------------------------------------------
    metrics_host: str = Field(
        "127.0.0.1",
        description="Address a worker's and the projector's Prometheus port listens on. It "
        "has no authentication: keep it on loopback or a network only the scraper reaches "
        "(the API serves GET /metrics itself, to the scope metrics:read).",
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of a worker's or the projector's Prometheus metrics (0: one the "
        "system picks, logged); unset serves none. Each process on a host needs its own; "
        "`wrenchai dev` gives each a free one and prints it. The API ignores it.",
    )

    # -- traces --------------------------------------------------------------------------
    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP (protobuf) URL that receives every task as one trace, e.g. "
        "http://collector:4318/v1/traces; `wrenchai worker tracer` exports there. Unset: no "
        "tracer runs and nothing is sent.",
    )
    otlp_headers: SecretStr | None = Field(
        None,
        description="Headers sent with every export, as name=value pairs separated by commas "
        "(e.g. authorization=Bearer abc), for a collector that asks for credentials.",
    )

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        """Fill ``X`` from the file named by ``WRENCH_X_FILE`` when ``X`` itself is unset."""
        if not isinstance(data, dict):
            return data
        for name in _FILE_FIELDS:
            variable = f"WRENCH_{name.upper()}"
            path = os.environ.get(f"{variable}_FILE")
            if path and not data.get(name) and not os.environ.get(variable):
                data = {**data, name: _read_value_file(variable, Path(path))}
        return _with_database_password(data)

    @field_validator("mcp_servers")
    @classmethod
    def _valid_mcp_servers(cls, value: str) -> str:
        parse_mcp_servers(value)  # refuse a bad list at start, not at the first call
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"debug", "info", "warning", "error"}:
            raise ValueError("log_level must be one of debug, info, warning, error")
        return value

    def topic(self, name: str) -> str:
        """The full name of one of WrenchAI's topics (``events``, ``admin``, ``dlq``)."""
        return f"{self.namespace}wrench.{name}"

    def group(self, name: str) -> str:
        """The full name of a consumer group (``projector`` → ``wrench-projector``)."""
        return f"{self.namespace}wrench-{name}"

    def database_dsn(self) -> str:
        """The Postgres URL in clear, for the driver and nothing else (never log it)."""
        return self.database_url.get_secret_value()

    def fernet_keys(self) -> list[str]:
        """The configured encryption keys, newest first."""
        if self.encryption_keys is None:
            return []
        raw = self.encryption_keys.get_secret_value()
        return [key.strip() for key in raw.split(",") if key.strip()]

    def llm_models(self) -> list[str]:
        """The model to ask first, then each fallback model, without repeats."""
        models = [self.llm_model]
        for name in self.llm_fallback_models.split(","):
            if name.strip() and name.strip() not in models:
                models.append(name.strip())
        return models

    def mcp_server_list(self) -> list[McpServerConfig]:
        """The configured MCP servers (WRENCH_MCP_SERVERS), in their order."""
        return parse_mcp_servers(self.mcp_servers)

    def to_env(self) -> dict[str, str]:
        """These settings as ``WRENCH_*`` variables, for a child process to read back.

        Secrets go in clear, so this is for tests and benchmarks; the dev stack hands its
        children their secrets as files instead (``wrenchai.stack.child_environment``)."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"WRENCH_{name.upper()}"] = str(value)
        return env


def _with_database_password(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with WRENCH_DATABASE_PASSWORD put into a database URL that carries none, so
    every connection (whoever asks for ``database_url``) has it."""
    password = _plain(data.get("database_password"))
    if not password:
        return data
    url = _plain(data.get("database_url")) or _plain(Settings.model_fields["database_url"].default)
    parts = urlsplit(url or "")
    if parts.password is not None:
        if unquote(parts.password) == password:
            return data  # the URL already holds it (settings handed on to a child process)
        raise ValueError(
            "WRENCH_DATABASE_URL carries a password and WRENCH_DATABASE_PASSWORD another; "
            "keep the password in one of them"
        )
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return {**data, "database_url": urlunsplit(parts._replace(netloc=netloc))}


def _plain(value: Any) -> str | None:
    """A setting's value as given (a string, or a SecretStr from code), in clear."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return None if value is None else str(value)


def _read_value_file(variable: str, path: Path) -> str:
    """The value a ``*_FILE`` variable points at, without the trailing newline editors add."""
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ValueError(
            f"{variable}_FILE names {path}, which cannot be read ({exc.strerror}); point it "
            f"at a readable file that holds the value, or set {variable} instead"
        ) from exc


def settings_markdown() -> str:
    """Every setting as a markdown table: variable, default, meaning (docs/setup.md)."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        default = info.default
        if isinstance(default, SecretStr):
            default = default.get_secret_value()  # a default is public: it is in this file
        shown = "unset" if default is None else f"`{default}`" if default != "" else "empty"
        meaning = (info.description or "").replace("|", "\\|")
        if name in _SECRET_FIELDS:
            meaning += f" A secret: `WRENCH_{name.upper()}_FILE` may name a file holding it."
        elif name in _FILE_FIELDS:
            meaning += f" `WRENCH_{name.upper()}_FILE` may name a file holding it."
        lines.append(f"| `WRENCH_{name.upper()}` | {shown} | {meaning} |")
    return "\n".join(lines) + "\n"


# -- MCP servers ---------------------------------------------------------------------------
_MCP_SERVER_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


class McpSecretFile(BaseModel):
    """A value kept in a file, such as a token mounted as a secret:
    ``{"file": "/run/secrets/mcp-token", "prefix": "Bearer "}``. The file must be readable
    when the settings load; it is read again at every connection, so a rotated token is used
    from the next reconnection on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: Path
    prefix: str = ""

    def read(self) -> str:
        """The prefix and the file's content, without the trailing newline editors add."""
        try:
            return self.prefix + self.file.read_text().strip()
        except OSError as exc:
            raise ValueError(
                f"{self.file} cannot be read ({exc.strerror}); point the MCP server's value "
                "at a readable file that holds it"
            ) from exc


McpValue = str | McpSecretFile
"""An environment variable's or a header's value: as given, or read from a file."""


class McpServerConfig(BaseModel):
    """One MCP server of WRENCH_MCP_SERVERS: how to reach it (``command`` for stdio, ``url``
    for streamable HTTP) and how its tools are described to planning (docs/mcp-tools.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Lower-case letters, digits, _ and -; tools are mcp.<name>.*")
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, McpValue] = Field(default_factory=dict)
    cwd: Path | None = None
    url: str | None = None
    headers: dict[str, McpValue] = Field(default_factory=dict)
    timeout_s: float = Field(60.0, gt=0, le=3_600, description="Longest one tool call may take.")
    tools: list[str] | None = Field(None, description="Only these tools; unset: every one.")
    capabilities: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Capabilities of each tool (by the server's name for it), put first.",
    )
    offline: bool = False
    trust_annotations: bool = False
    usd_per_call: float = Field(0.0, ge=0)
    seconds: float = Field(5.0, ge=0)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _MCP_SERVER_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a server name: use lower-case letters, digits, _ and -, "
                "starting with a letter (it becomes part of the tools' names, mcp.<name>.<tool>)"
            )
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"url {value!r} must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError(
                "give either command (a server started over stdio) or url (streamable HTTP)"
            )
        if self.url is not None and (self.args or self.env or self.cwd):
            raise ValueError("args, env and cwd are for a command; a url server takes headers")
        if self.command is not None and self.headers:
            raise ValueError("headers are for a url; a command server takes env")
        for value in (*self.env.values(), *self.headers.values()):
            if isinstance(value, McpSecretFile):
                value.read()
        return self

    @property
    def transport(self) -> Literal["stdio", "http"]:
        """How the server is reached."""
        return "stdio" if self.command is not None else "http"

    @property
    def tool_prefix(self) -> str:
        """``mcp.<name>.``, with a hyphen of the name as an underscore (tool names are dotted
        lower-case words)."""
        return f"mcp.{self.name.replace('-', '_')}."

    def resolved_env(self) -> dict[str, str]:
        """The environment variables the command gets, secret files read."""
        return {key: _mcp_value(value) for key, value in self.env.items()}

    def resolved_headers(self) -> dict[str, str]:
        """The headers every request carries, secret files read."""
        return {key: _mcp_value(value) for key, value in self.headers.items()}


def _mcp_value(value: McpValue) -> str:
    return value.read() if isinstance(value, McpSecretFile) else value


def parse_mcp_servers(text: str) -> list[McpServerConfig]:
    """The servers of WRENCH_MCP_SERVERS: a JSON list, or YAML (the usual format of
    WRENCH_MCP_SERVERS_FILE). Raises ValueError naming the server and the field at fault."""
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"WRENCH_MCP_SERVERS is neither JSON nor YAML: {exc}") from None
    if not isinstance(data, list):
        raise ValueError(
            "WRENCH_MCP_SERVERS must be a list of servers, such as "
            '[{"name": "files", "command": "mcp-files", "args": ["/data"]}]'
        )
    servers: list[McpServerConfig] = []
    for number, item in enumerate(data, start=1):
        label = f"server {number}"
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            label += f" ({item['name']})"
        try:
            server = McpServerConfig.model_validate(item)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            raise ValueError(
                f"WRENCH_MCP_SERVERS, {label}{f', {where}' if where else ''}: {message}"
            ) from None
        twin = next((seen for seen in servers if seen.tool_prefix == server.tool_prefix), None)
        if twin is not None:
            raise ValueError(
                f"WRENCH_MCP_SERVERS, {label}: its tools would share the names of server "
                f"{twin.name!r} ({server.tool_prefix}*); give each server a name of its own"
            )
        servers.append(server)
    return servers
