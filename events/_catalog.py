"""The catalog: which payload model each (type, schema_version) has, and how old versions
are upcast to the newest on read. A stored event is never rewritten; it is read forward."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from pydantic import ValidationError

from events._envelope import EventPayload
from events._errors import CatalogError, EventDecodeError

P = TypeVar("P", bound=type[EventPayload])
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class Catalog:
    """Payload models per (type, version) and the upcasters from each version to the next."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, int], type[EventPayload]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, model: P) -> P:
        """Add a payload model under its ``event_type`` and ``schema_version``."""
        key = (model.event_type, model.schema_version)
        if key in self._models and self._models[key] is not model:
            raise CatalogError(
                f"{key[0]} v{key[1]} is already registered as {self._models[key].__name__}; "
                f"give {model.__name__} the next schema_version instead",
                event_type=key[0],
                schema_version=key[1],
            )
        self._models[key] = model
        return model

    def upcaster(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register ``fn(payload_vN) -> payload_vN+1`` for ``event_type``."""

        def decorate(fn: Upcaster) -> Upcaster:
            key = (event_type, from_version)
            if key in self._upcasters:
                raise CatalogError(
                    f"{event_type} already has an upcaster from v{from_version}",
                    event_type=event_type,
                )
            self._upcasters[key] = fn
            return fn

        return decorate

    def upcaster_from(self, event_type: str, from_version: int) -> Upcaster:
        """The function that reads ``event_type`` v``from_version`` as the next version."""
        try:
            return self._upcasters[(event_type, from_version)]
        except KeyError:
            raise CatalogError(
                f"{event_type} has no upcaster from v{from_version} to v{from_version + 1}; "
                f"register one with @catalog.upcaster({event_type!r}, {from_version})",
                event_type=event_type,
                schema_version=from_version,
            ) from None

    def latest(self, event_type: str) -> int:
        """The newest schema version of ``event_type``."""
        versions = [v for (t, v) in self._models if t == event_type]
        if not versions:
            raise EventDecodeError(
                "unknown_type",
                f"{event_type!r} is not in the event catalog",
                event_type=event_type,
            )
        return max(versions)

    def model(self, event_type: str, schema_version: int) -> type[EventPayload]:
        """The payload model of one version; EventDecodeError if there is none."""
        try:
            return self._models[(event_type, schema_version)]
        except KeyError:
            self.latest(event_type)  # raises unknown_type first when the type is unknown
            raise EventDecodeError(
                "unknown_version",
                f"{event_type} has no schema_version {schema_version} in the catalog",
                event_type=event_type,
                schema_version=schema_version,
            ) from None

    def load(self, event_type: str, schema_version: int, data: Any) -> EventPayload:
        """Validate a stored payload, upcasting it version by version to the newest model."""
        self.model(event_type, schema_version)
        if not isinstance(data, dict):
            raise EventDecodeError(
                "invalid_payload", f"the payload of {event_type} is not a JSON object"
            )
        target = self.latest(event_type)
        version = schema_version
        try:
            while version < target:
                # Validate each intermediate version so an upcaster only ever sees its own shape.
                data = (
                    self._models[(event_type, version)].model_validate(data).model_dump(mode="json")
                )
                upcast = self._upcasters.get((event_type, version))
                if upcast is None:
                    # A gap in the chain is the catalog's fault, not the record's: check() names it.
                    raise CatalogError(
                        f"{event_type} has no upcaster from v{version} to v{version + 1}; "
                        f"register one with @catalog.upcaster({event_type!r}, {version})",
                        event_type=event_type,
                        schema_version=version,
                    )
                data = upcast(data)
                version += 1
            return self._models[(event_type, target)].model_validate(data)
        except ValidationError as exc:
            raise EventDecodeError(
                "invalid_payload",
                f"{event_type} v{version} does not match its schema: {_summarise(exc)}",
                event_type=event_type,
                schema_version=version,
                errors=exc.errors(include_url=False, include_context=False),
            ) from exc

    def check(self) -> None:
        """Every type's versions run 1..latest without gaps and each has its upcaster."""
        for event_type in sorted({t for (t, _) in self._models}):
            latest = self.latest(event_type)
            for version in range(1, latest + 1):
                if (event_type, version) not in self._models:
                    raise CatalogError(f"{event_type} has no model for v{version}")
                if version < latest and (event_type, version) not in self._upcasters:
                    raise CatalogError(
                        f"{event_type} has no upcaster from v{version} to v{version + 1}; "
                        f"register one with @catalog.upcaster({event_type!r}, {version})"
                    )

    def __iter__(self) -> Iterator[type[EventPayload]]:
        """Every registered model, ordered by type then version."""
        for key in sorted(self._models):
            yield self._models[key]

    def types(self) -> list[str]:
        """Every registered event type, sorted."""
        return sorted({t for (t, _) in self._models})


def _summarise(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:5]:
        path = ".".join(str(p) for p in error["loc"]) or "payload"
        parts.append(f"{path}: {error['msg']}")
    return "; ".join(parts)


catalog = Catalog()
"""The catalog every WrenchAI process shares."""


def event(event_type: str, *, version: int = 1) -> Callable[[P], P]:
    """Class decorator: name a payload model's type and version and register it in ``catalog``."""

    def decorate(model: P) -> P:
        model.event_type = event_type
        model.schema_version = version
        return catalog.register(model)

    return decorate
