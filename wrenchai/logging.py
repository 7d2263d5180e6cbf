"""structlog set-up shared by every process: JSON for machines, console for people.

Every line, ours or a library's, goes through ``redact_secrets`` last, so no log line carries a
secret (STYLE.md; issue 9, "Encryption and keys"): the values of the configured secrets wherever
they appear, credentials by their shape (Authorization values, API keys, JWTs, passwords in
URLs), and the value of any field named like a credential.
"""

from __future__ import annotations

import datetime
import enum
import logging
import re
import sys
import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import structlog
from pydantic import SecretStr

from wrenchai.settings import _SECRET_FIELDS, Settings

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

REDACTED = "[REDACTED]"

# Shorter configured values are not searched for by value: a three-letter secret would blank
# out ordinary words. Field names and shapes still catch them.
_MIN_SECRET_CHARS = 4
# Deeper structures are rendered to text and scrubbed as text.
_MAX_DEPTH = 8

# Fields whose value is a credential whatever it looks like (compared lower-cased, "-" as
# "_"), besides the names of the secret settings themselves.
_SENSITIVE_KEYS = frozenset(
    {
        "password",
        "passwd",
        "password_hash",
        "pwd",
        "secret",
        "token",
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "credentials",
        "pepper",
        *_SECRET_FIELDS,
    }
)
_SENSITIVE_SUFFIXES = (
    "password",
    "passwd",
    "secret",
    "_token",
    "api_key",
    "apikey",
    "private_key",
    "authorization",
)

# Credentials recognised by their shape, in the order they are applied. A field spelled out
# in text ("password=...", "'x-api-key': '...'", "Authorization: Bearer ...") goes first, so
# its whole value (scheme included) becomes one marker.
_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    # The password of a URL's userinfo: postgresql://user:PASSWORD@host/db.
    (re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)([^@\s/]+)(@)"), rf"\1{REDACTED}\3"),
    (
        re.compile(
            r"(?i)((?:x[-_])?api[-_]?key|[\w-]*(?:password|passwd|secret|token)|"
            r"(?:proxy-)?authorization|cookie)"
            r"([\"']?\s*[:=]\s*[\"']?)"
            r"((?:(?:bearer|basic|digest)\s+)?[^\s\"',;&}\]]+)"
        ),
        rf"\1\2{REDACTED}",
    ),
    (re.compile(r"(?i)\b(bearer|basic|digest)(\s+)[A-Za-z0-9._~+/=-]+"), rf"\1\2{REDACTED}"),
    # WrenchAI API keys: wr_<prefix>_<secret>.
    (re.compile(r"wr_[a-z2-7]{12}_[A-Za-z0-9_-]+"), REDACTED),
    # JWTs (JWS: three base64url segments; JWE: five), whose header starts {" -> eyJ.
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*){1,3}"), REDACTED),
)


def secret_values(settings: Settings) -> list[str]:
    """The configured secrets as the strings that must never reach a log: each value whole,
    each key of a comma-separated key list, the password of the database URL (plain and
    percent-encoded) and each body line of a PEM key."""
    found: set[str] = set()
    for name in _SECRET_FIELDS:
        secret = getattr(settings, name, None)
        if not isinstance(secret, SecretStr):
            continue
        value = secret.get_secret_value().strip()
        found.add(value)
        found.update(part.strip() for part in value.split(","))
        found.update(line.strip() for line in value.splitlines() if "-----" not in line)
        password = _url_password(value)
        if password:
            found.update({password, unquote(password), quote(unquote(password), safe="")})
    return sorted((v for v in found if len(v) >= _MIN_SECRET_CHARS), key=len, reverse=True)


def _url_password(value: str) -> str | None:
    try:
        return urlsplit(value).password if "://" in value else None
    except ValueError:
        return None


def redact_text(text: str, secrets: re.Pattern[str] | None = None) -> str:
    """``text`` with every known secret and every credential-shaped string replaced."""
    if secrets is not None:
        text = secrets.sub(REDACTED, text)
    for pattern, replacement in _SHAPES:
        text = pattern.sub(replacement, text)
    return text


def is_sensitive_key(key: object) -> bool:
    """Whether a field of this name holds a credential (its value is replaced whole)."""
    if isinstance(key, bytes):
        key = key.decode("latin-1")
    if not isinstance(key, str):
        return False
    name = key.lower().replace("-", "_")
    return name in _SENSITIVE_KEYS or name.endswith(_SENSITIVE_SUFFIXES)


def redact_secrets(values: Iterable[str] = ()) -> structlog.types.Processor:
    """A processor that scrubs every field of an event: ``values`` (see ``secret_values``)
    wherever they appear, credential shapes, and whole values of credential-named fields,
    in nested dicts, lists and header pairs too."""
    known = [v for v in values if len(v) >= _MIN_SECRET_CHARS]
    secrets = (
        re.compile("|".join(re.escape(v) for v in sorted(known, key=len, reverse=True)))
        if known
        else None
    )

    def scrub(value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            return redact_text(value, secrets)
        if value is None or isinstance(value, _PLAIN):
            return value
        if depth >= _MAX_DEPTH:
            return redact_text(repr(value), secrets)
        if isinstance(value, bytes):
            text = value.decode("utf-8", "replace")
            clean = redact_text(text, secrets)
            return value if clean == text else clean
        if isinstance(value, Mapping):
            return {
                k: _mask(v) if is_sensitive_key(k) else scrub(v, depth + 1)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            items = list(value)
            if len(items) == 2 and isinstance(value, list | tuple) and is_sensitive_key(items[0]):
                items = [items[0], _mask(items[1])]  # a header pair: (b"authorization", ...)
            else:
                items = [scrub(item, depth + 1) for item in items]
            return tuple(items) if isinstance(value, tuple) else items
        # Objects are rendered with repr(); scrub that, and keep the object when it is clean.
        text = repr(value)
        clean = redact_text(text, secrets)
        return value if clean == text else clean

    def processor(
        logger: object, method: str, event_dict: structlog.types.EventDict
    ) -> structlog.types.EventDict:
        for key, value in event_dict.items():
            if key in _META_KEYS:
                continue
            event_dict[key] = _mask(value) if is_sensitive_key(key) else scrub(value)
        return event_dict

    return processor


# Values that cannot hold a secret, left as they are.
_PLAIN = (bool, int, float, uuid.UUID, datetime.date, datetime.time, datetime.timedelta, enum.Enum)
# structlog's bookkeeping for records from the standard library; removed before rendering.
_META_KEYS = frozenset({"_record", "_from_structlog"})


def _mask(value: Any) -> Any:
    # None and booleans say nothing about a credential ("password": None, "token": True).
    return value if value is None or isinstance(value, bool) else REDACTED


def configure_logging(settings: Settings, *, process: str | None = None) -> None:
    """Route structlog and the standard library's logging through one renderer."""
    level = _LEVELS[settings.log_level]
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Tracebacks become text in both formats, so the redaction below sees them: a pretty
        # console traceback would show exception messages (and locals) unredacted.
        structlog.processors.format_exc_info,
        redact_secrets(secret_values(settings)),
    ]
    if process:
        shared.insert(0, _bind_process(process))
    renderer: structlog.types.Processor
    if settings.log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processor=renderer)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Drivers are chatty at INFO; their warnings still come through.
    for noisy in ("aiokafka", "kafka", "asyncio", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _bind_process(name: str) -> structlog.types.Processor:
    def add_process(
        logger: object, method: str, event_dict: structlog.types.EventDict
    ) -> structlog.types.EventDict:
        event_dict.setdefault("process", name)
        return event_dict

    return add_process
