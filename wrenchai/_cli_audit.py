"""``wrenchai audit``: the event archive as evidence (docs/audit.md).

``verify`` checks the archive in Postgres (its hash chain, against the signed checkpoints) or,
with ``--file``, an export offline; ``export`` writes a time range as signed JSON lines;
``checkpoints`` prints the signed chain heads for an auditor to keep; ``public-key`` prints
the key auditors verify with. No command prints a secret.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NoReturn

import click
import orjson

from wrenchai._cli_common import command_settings, run
from wrenchai.errors import ConfigurationError, WrenchError

if TYPE_CHECKING:  # the commands import what they use when they run, for a quick start
    from events import SignedHead
    from projections._export import ExportReport
    from projections._signing import Keyring


def _instant(text: str, option: str) -> datetime:
    """An ISO 8601 time (``2026-03-01``, ``2026-03-01T12:00:00Z``…); without an offset, UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not an ISO 8601 time (2026-03-01 or 2026-03-01T12:00:00Z)",
            param_hint=option,
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _keyring_from_options(
    public_keys: Sequence[Path], hmac_key_file: Path | None
) -> Keyring | None:
    """The keys named on the command line (None when none is), read from their files."""
    from projections._signing import HmacKey, Keyring, Verifier, load_public_key

    verifiers: list[Verifier] = []
    try:
        for path in public_keys:
            verifiers.append(load_public_key(path.read_bytes()))
        if hmac_key_file is not None:
            secret = hmac_key_file.read_text().strip()
            if not secret:
                _fail(f"{hmac_key_file} is empty")
            verifiers.append(HmacKey(secret.encode()))
    except OSError as exc:
        _fail(f"cannot read {exc.filename}: {exc.strerror}")
    except ConfigurationError as exc:
        _fail(exc.message)
    return Keyring(verifiers) if verifiers else None


@click.group()
def audit() -> None:
    """The event archive as an audit trail: verify it, export it, keep its checkpoints."""


@audit.command("verify")
@click.option(
    "--file",
    "export_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Verify this export offline (no database, no broker) instead of the archive.",
)
@click.option(
    "--public-key",
    "public_keys",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    help="Ed25519 public key (PEM) the checkpoints were signed with; repeat for several. "
    "Default: the key of WRENCH_CHECKPOINT_SIGNING_KEY.",
)
@click.option(
    "--hmac-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="File holding the HMAC key, when checkpoints are signed with WRENCH_CHECKPOINT_HMAC_KEY.",
)
@click.option(
    "--checkpoint",
    "checkpoint_files",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    help="Signed checkpoints kept outside the database (an export, or the output of "
    "`wrenchai audit checkpoints`) to hold the archive against too.",
)
def verify(
    export_file: Path | None,
    public_keys: tuple[Path, ...],
    hmac_key_file: Path | None,
    checkpoint_files: tuple[Path, ...],
) -> None:
    """Recompute the archive's hash chain and hold it against the signed checkpoints (or, with
    --file, verify an export); exit 1 at the first broken link, which is named."""
    from projections._signing import keyring_from_settings

    settings = command_settings("audit")
    given = _keyring_from_options(public_keys, hmac_key_file)
    try:
        keyring = given if given is not None else keyring_from_settings(settings)
    except ConfigurationError as exc:
        _fail(exc.message)
    if export_file is not None:
        _verify_file(export_file, keyring, checkpoint_files)
        return
    from projections import verify_chain
    from projections._checkpoints import checkpoints_from_lines

    extra = []
    for path in checkpoint_files:
        try:
            extra += checkpoints_from_lines(path.read_text().splitlines())
        except (OSError, ValueError) as exc:
            _fail(f"{path}: {exc}")
    report = run(lambda: verify_chain(settings, keyring=keyring, extra_checkpoints=extra))
    click.echo(str(report))
    sys.exit(0 if report.ok else 1)


def _verify_file(path: Path, keyring: Keyring, checkpoint_files: tuple[Path, ...]) -> None:
    from projections._export_verify import verify_export

    if checkpoint_files:
        click.echo("error: --checkpoint applies to the archive, not to --file", err=True)
        sys.exit(2)
    if not keyring:
        click.echo(
            "error: an export is verified against its signatures: pass --public-key PEM_FILE "
            "or --hmac-key-file FILE (or set the signing key)",
            err=True,
        )
        sys.exit(2)
    report = verify_export(path, keyring)
    click.echo(str(report))
    sys.exit(0 if report.ok else 1)


@audit.command("export")
@click.option("--from", "start", required=True, help="Start of the range (ISO 8601), included.")
@click.option("--to", "end", default=None, help="End of the range (ISO 8601), excluded; now.")
@click.option("--tenant", "tenant_id", default=None, help="Only this tenant's records in full.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write here instead of standard output.",
)
def export(start: str, end: str | None, tenant_id: str | None, output: Path | None) -> None:
    """Write the records of a time range as signed JSON lines that `audit verify --file`
    checks offline; other tenants' records in range appear only as chain links."""
    from projections._export import export_range
    from projections._signing import signer_from_settings

    begin = _instant(start, "--from")
    until = _instant(end, "--to") if end is not None else datetime.now(UTC)
    if begin >= until:
        raise click.BadParameter("--from must come before --to", param_hint="--from")
    settings = command_settings("audit")
    try:
        signer = signer_from_settings(settings)
    except ConfigurationError as exc:
        _fail(exc.message)
    if signer is None:
        _fail(
            "an export is signed: set WRENCH_CHECKPOINT_SIGNING_KEY (or "
            "WRENCH_CHECKPOINT_HMAC_KEY), or their _FILE"
        )

    async def write(out: BinaryIO) -> ExportReport:
        return await export_range(settings, out, begin, until, signer, tenant_id)

    if output is None:
        report = run(lambda: write(sys.stdout.buffer))
        sys.stdout.buffer.flush()
    else:
        # Written aside and renamed when complete: a refused export leaves no file behind.
        partial = output.with_name(output.name + ".partial")
        try:
            with partial.open("wb") as out:
                report = run(lambda: write(out))
            partial.replace(output)
        except OSError as exc:
            _fail(f"cannot write {output}: {exc.strerror}")
        finally:
            partial.unlink(missing_ok=True)
    click.echo(str(report), err=True)


@audit.command("checkpoints")
@click.option(
    "--all", "every", is_flag=True, help="Every checkpoint, not only each partition's latest."
)
def checkpoints(every: bool) -> None:
    """Print the signed chain heads as JSON lines, for an auditor to keep outside the
    database (`audit verify --checkpoint FILE` holds the archive against them)."""
    from projections._checkpoints import head_line, stored_checkpoints
    from projections._db import connect

    settings = command_settings("audit")

    async def load() -> list[SignedHead]:
        conn = await connect(settings)
        try:
            return list(await stored_checkpoints(conn))
        finally:
            await conn.close()

    heads = run(load)
    latest = {(head.topic, head.partition): head for head in heads}
    for head in heads if every else list(latest.values()):
        click.echo(orjson.dumps(head_line(head, "projector")).decode())


@audit.command("public-key")
def public_key() -> None:
    """Print the public key (PEM) that verifies the checkpoints and exports, for auditors."""
    from projections._signing import Ed25519Signer, signer_from_settings

    settings = command_settings("audit")
    try:
        signer = signer_from_settings(settings)
    except WrenchError as exc:
        _fail(exc.message)
    if isinstance(signer, Ed25519Signer):
        click.echo(signer.verifier().public_pem(), nl=False)
        return
    if signer is None:
        _fail("no checkpoint key is configured (WRENCH_CHECKPOINT_SIGNING_KEY)")
    _fail(
        "checkpoints are signed with WRENCH_CHECKPOINT_HMAC_KEY, which has no public half: "
        "give auditors the HMAC key itself, through a channel fit for secrets"
    )
