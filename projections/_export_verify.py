"""``wrenchai audit verify --file``: check an export offline, with no database and no broker.

Two passes over the file. The first reads its frame: the header, the signed checkpoints and
the signed manifest, whose signatures must verify with the key given. The second walks the
records and links in order: every partition's offsets follow one another, each line's
prev_hash is the hash of the line before, each record hashes to its hash under its chain
version (a link's digest too, from chain version 2), the decoded event says what the value
says, and every signed position holds the signed hash. Then the runs must be the ones the
manifest signed, every run must end on a signed head, and the file's bytes must be the ones
the manifest's digest covers. The first problem found is reported, with its line and position.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import orjson
from pydantic import ValidationError

from events import SignedHead
from projections._archive import GENESIS_HASH, chain_hash_v2, link_hash
from projections._export import FORMAT, FORMAT_VERSION
from projections._signing import Keyring, instant, manifest_message

_ENVELOPE = (
    "id",
    "type",
    "task_id",
    "tenant_id",
    "actor",
    "occurred_at",
    "correlation_id",
    "causation_id",
)


@dataclass(frozen=True)
class ExportProblem:
    """The first thing wrong with an export: its line, the record's place, and why."""

    line: int
    problem: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None

    @property
    def position(self) -> str | None:
        if self.partition is None or self.offset is None:
            return None
        return f"{self.partition}:{self.offset}"

    def __str__(self) -> str:
        where = f"line {self.line}"
        if self.position is not None:
            where += f", {self.topic}[{self.partition}] position {self.position}"
        return f"{where}: {self.problem}"


@dataclass
class ExportVerifyReport:
    """What an offline verification checked, and the first problem, if any."""

    records: int = 0
    links: int = 0
    unverifiable_links: int = 0
    checkpoints: int = 0
    partitions: int = 0
    problem: ExportProblem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def __str__(self) -> str:
        if self.problem is not None:
            return f"BROKEN: {self.problem}"
        text = (
            f"OK: {self.records} record(s) and {self.links} link(s) in {self.partitions} "
            f"partition(s) verified; {self.checkpoints} signed checkpoint(s) and the signed "
            "manifest match"
        )
        if self.unverifiable_links:
            text += (
                f" ({self.unverifiable_links} link(s) of chain version 1 carry no digest: "
                "their hashes are taken as given)"
            )
        return text


class _Bad(Exception):
    def __init__(self, problem: ExportProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass
class _Run:
    first: int
    first_prev_hash: str
    last: int = -1
    last_hash: str = ""
    records: int = 0
    links: int = 0


@dataclass
class _Frame:
    header: dict[str, Any]
    manifest: dict[str, Any]
    manifest_line: int
    body_sha256: str
    checkpoints: dict[tuple[str, int, int], list[tuple[int, SignedHead]]] = field(
        default_factory=dict
    )


def verify_export(path: Path, keyring: Keyring) -> ExportVerifyReport:
    """Verify the export in ``path`` with the keys in ``keyring``."""
    report = ExportVerifyReport()
    try:
        frame = _frame(path, keyring)
        report.checkpoints = sum(len(v) for v in frame.checkpoints.values())
        runs = _walk(path, frame, report)
        _check_runs(frame, runs)
        if _body_sha256(path, frame.manifest_line) != frame.body_sha256:
            raise _Bad(
                ExportProblem(
                    frame.manifest_line,
                    "the file's lines are not the ones the signed manifest covers (its "
                    "body_sha256): a line was changed after the export (an event's decoded "
                    "fields, or the formatting)",
                )
            )
    except _Bad as bad:
        report.problem = bad.problem
    return report


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as source:
        yield from enumerate(source, start=1)


def _body_sha256(path: Path, manifest_line: int) -> str:
    """sha256 of the file's bytes before the manifest line, hex."""
    digest = hashlib.sha256()
    for number, raw in _lines(path):
        if number < manifest_line:
            digest.update(raw)
    return digest.hexdigest()


def _parse(number: int, raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _Bad(ExportProblem(number, f"not JSON: {exc}")) from exc
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        raise _Bad(ExportProblem(number, "not an object with a kind"))
    return data


def _frame(path: Path, keyring: Keyring) -> _Frame:
    """The header, signed checkpoints and signed manifest, their signatures checked."""
    header: dict[str, Any] | None = None
    manifest: tuple[int, dict[str, Any]] | None = None
    heads: list[tuple[int, SignedHead]] = []
    number = 0
    for number, raw in _lines(path):
        if not raw.strip():
            raise _Bad(ExportProblem(number, "an empty line"))
        data = _parse(number, raw)
        if manifest is not None:
            raise _Bad(ExportProblem(number, "a line after the manifest, which must be last"))
        kind = data["kind"]
        if number == 1:
            if kind != "export" or data.get("format") != FORMAT:
                raise _Bad(ExportProblem(1, f"not a WrenchAI audit export (no {FORMAT} header)"))
            if data.get("version") != FORMAT_VERSION:
                raise _Bad(ExportProblem(1, f"format version {data.get('version')} is unknown"))
            header = data
        elif kind == "checkpoint":
            heads.append((number, _head(number, data)))
        elif kind == "manifest":
            manifest = (number, data)
    if header is None:
        raise _Bad(ExportProblem(1, "the file is empty"))
    if manifest is None:
        raise _Bad(ExportProblem(number, "no signed manifest at the end: the file was cut"))
    line, body = manifest
    problem = keyring.check(
        str(body.get("algorithm")),
        str(body.get("key_id")),
        manifest_message(body),
        str(body.get("signature")),
    )
    if problem is not None:
        raise _Bad(ExportProblem(line, f"the manifest: {problem}"))
    for name in ("from", "to", "tenant", "exported_at", "algorithm", "key_id"):
        if header.get(name) != body.get(name):
            raise _Bad(ExportProblem(1, f"the header's {name} is not the signed manifest's"))
    frame = _Frame(header, body, line, str(body.get("body_sha256")))
    for number, head in heads:
        problem = keyring.check_head(head)
        if problem is not None:
            raise _Bad(
                ExportProblem(
                    number,
                    f"the checkpoint signed at {instant(head.signed_at)}: {problem}",
                    head.topic,
                    head.partition,
                    head.offset,
                )
            )
        key = (head.topic, head.partition, head.offset)
        frame.checkpoints.setdefault(key, []).append((number, head))
    return frame


def _head(number: int, data: dict[str, Any]) -> SignedHead:
    try:
        return SignedHead.model_validate(
            {k: v for k, v in data.items() if k in SignedHead.model_fields}
        )
    except ValidationError as exc:
        raise _Bad(ExportProblem(number, f"a malformed checkpoint: {exc.errors()[:1]}")) from exc


def _walk(path: Path, frame: _Frame, report: ExportVerifyReport) -> dict[tuple[str, int], _Run]:
    """Every record and link in order: continuity, hashes, events, checkpointed hashes."""
    runs: dict[tuple[str, int], _Run] = {}
    for number, raw in _lines(path):
        if number == 1 or number >= frame.manifest_line:
            continue
        data = _parse(number, raw)
        kind = data["kind"]
        if kind == "checkpoint":
            continue
        if kind not in ("record", "link"):
            raise _Bad(ExportProblem(number, f"unknown kind {kind!r}"))
        line = _Line(number, data)
        run = runs.get(line.partition_key)
        if run is None:
            if line.offset == 0 and line.prev_hash != GENESIS_HASH.hex():
                line.bad("the first record of the partition does not start from the genesis hash")
            run = runs[line.partition_key] = _Run(line.offset, line.prev_hash)
        elif line.offset != run.last + 1:
            line.bad(
                f"expected offset {run.last + 1} here, found {line.offset}: a line is missing "
                "or out of order"
            )
        elif line.prev_hash != run.last_hash:
            line.bad("prev_hash is not the previous line's hash: the chain is broken here")
        if kind == "record":
            line.check_record()
            run.records += 1
            report.records += 1
        else:
            if line.check_link():
                report.unverifiable_links += 1
            run.links += 1
            report.links += 1
        for _, head in frame.checkpoints.get((line.topic, line.partition, line.offset), []):
            if head.hash != line.hash:
                line.bad(
                    f"the hash differs from the checkpoint signed at {instant(head.signed_at)}: "
                    "a record at or before this position was altered and the chain "
                    "recomputed after it"
                )
        run.last, run.last_hash = line.offset, line.hash
    report.partitions = len(runs)
    return runs


class _Line:
    """One record or link line, with the checks that concern it alone."""

    def __init__(self, number: int, data: dict[str, Any]) -> None:
        self.number = number
        self.data = data
        self.topic = str(data.get("topic"))
        try:
            self.partition = int(data["partition"])
            self.offset = int(data["offset"])
            self.version = int(data["chain_version"])
            self.prev_hash = str(data["prev_hash"])
            self.hash = str(data["hash"])
        except (KeyError, TypeError, ValueError) as exc:
            raise _Bad(ExportProblem(number, f"a {data['kind']} line without {exc}")) from exc
        if data.get("position") != f"{self.partition}:{self.offset}":
            self.bad("its position does not match its partition and offset")

    @property
    def partition_key(self) -> tuple[str, int]:
        return self.topic, self.partition

    def bad(self, problem: str) -> NoReturn:
        raise _Bad(ExportProblem(self.number, problem, self.topic, self.partition, self.offset))

    def _bytes(self, name: str) -> bytes:
        try:
            return bytes.fromhex(str(self.data[name]))
        except (KeyError, ValueError):
            self.bad(f"{name} is not hex")

    def check_record(self) -> None:
        try:
            key = _unb64(self.data.get("key"))
            value = _unb64(self.data.get("value"))
            headers = tuple((str(n), _unb64(v) or b"") for n, v in self.data.get("headers") or [])
            computed = link_hash(self.version, self._bytes("prev_hash"), key, headers, value)
        except (binascii.Error, TypeError, ValueError) as exc:
            self.bad(f"the record's fields cannot be read: {exc}")
        if computed.hex() != self.hash:
            covered = "value" if self.version == 1 else "key, headers and value"
            self.bad(
                f"the hash does not match chain v{self.version} of prev_hash and the "
                f"record's {covered}: the record was altered"
            )
        problem = _event_disagrees(value, self.data.get("event"))
        if problem is not None:
            self.bad(problem)

    def check_link(self) -> bool:
        """Check a link's hash from its digest; True when it has none to check (version 1)."""
        if self.version < 2:
            return True
        digest = self._bytes("digest")
        if chain_hash_v2(self._bytes("prev_hash"), digest).hex() != self.hash:
            self.bad("the link's hash does not follow from its prev_hash and digest")
        return False


def _unb64(value: Any) -> bytes | None:
    if value is None:
        return None
    return base64.b64decode(str(value), validate=True)


def _event_disagrees(value: bytes | None, event: Any) -> str | None:
    """Where the decoded event says something the value does not. Encrypted fields cannot
    be compared without the tenant's keys, nor a payload upcast to a newer version."""
    if event is None:
        return None
    try:
        stored = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return "the record has a decoded event but its value is not JSON"
    if not isinstance(stored, dict) or not isinstance(event, dict):
        return "the decoded event does not match the record's value"
    for name in _ENVELOPE:
        if event.get(name) != stored.get(name):
            return f"the decoded event's {name} is not the value's: the event was altered"
    if event.get("schema_version") == stored.get("schema_version"):
        encrypted = set(stored.get("encrypted_fields") or [])
        mine, theirs = event.get("payload") or {}, stored.get("payload") or {}
        for name in sorted((set(mine) | set(theirs)) - encrypted):
            if mine.get(name) != theirs.get(name):
                return f"the decoded event's payload.{name} is not the value's: it was altered"
    return None


def _check_runs(frame: _Frame, runs: dict[tuple[str, int], _Run]) -> None:
    """The runs must be the ones the manifest signed, each ending on a signed head."""
    signed = frame.manifest.get("spans")
    if not isinstance(signed, list):
        raise _Bad(ExportProblem(frame.manifest_line, "the manifest lists no runs"))
    listed: set[tuple[str, int]] = set()
    for span in signed:
        key = (str(span.get("topic")), int(span.get("partition", -1)))
        listed.add(key)
        run = runs.get(key)
        where = (frame.manifest_line, key[0], key[1])
        if run is None:
            raise _Bad(
                ExportProblem(
                    where[0],
                    "the signed manifest lists this partition but the file holds none of its "
                    "lines: they were removed",
                    key[0],
                    key[1],
                    span.get("first"),
                )
            )
        observed = {
            "first": run.first,
            "last": run.last,
            "first_prev_hash": run.first_prev_hash,
            "last_hash": run.last_hash,
            "records": run.records,
            "links": run.links,
        }
        for name, value in observed.items():
            if span.get(name) != value:
                offset = run.first if name in ("first", "first_prev_hash") else run.last
                raise _Bad(
                    ExportProblem(
                        where[0],
                        f"the signed manifest says {name} {span.get(name)!r}, the file "
                        f"{value!r}: lines were removed, added or changed",
                        key[0],
                        key[1],
                        offset,
                    )
                )
        if not frame.checkpoints.get((key[0], key[1], run.last)):
            raise _Bad(
                ExportProblem(
                    where[0],
                    "the partition's last line has no signed checkpoint: lines were removed "
                    "from the end",
                    key[0],
                    key[1],
                    run.last,
                )
            )
    for key, run in runs.items():
        if key not in listed:
            raise _Bad(
                ExportProblem(
                    frame.manifest_line,
                    "lines of a partition the signed manifest does not list: they were added",
                    key[0],
                    key[1],
                    run.first,
                )
            )
    for (topic, partition, offset), heads in frame.checkpoints.items():
        run = runs.get((topic, partition))
        if run is None or not run.first <= offset <= run.last:
            raise _Bad(
                ExportProblem(
                    heads[0][0],
                    "a signed checkpoint names a position the file does not hold",
                    topic,
                    partition,
                    offset,
                )
            )
