"""``imagekit sign`` and ``imagekit verify``: endorse an entry, check a signed one."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click

from .._files import atomic_write
from ..entry import format_date
from ..errors import ImagekitError, InputError, NotFound, Untrusted, VerificationError
from ..signing.certs import describe_certificate
from ..signing.trust import TrustStore, UnsafeAcceptAnyCertificate
from ._app import cli, emit_json, info, settings
from ._options import cli_signer, cli_trust, with_signer

DATE_HELP = "YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as e:
        raise NotFound(f"{path}: no such file") from e
    except OSError as e:
        raise InputError(f"{path}: {e.strerror}") from e


@cli.command("sign")
@click.argument("entry", type=click.Path(path_type=Path))
@with_signer
@click.option("--email", help="endorser e-mail if the certificate carries none")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="write here (default: in place)"
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def sign(
    entry: Path,
    key: Path | None,
    cert: Path | None,
    p12: Path | None,
    email: str | None,
    output: Path | None,
    as_json: bool,
) -> None:
    """Sign a metadata entry: fill the endorsement from the certificate, add the signature.

    Old signatures are removed; the endorsement gets the certificate's e-mail, subject and
    issuer and the current time. The file is replaced atomically.

    \b
    Example:
      imagekit sign entry.xml --key me.key --cert me.crt
      IMAGEKIT_P12_PASSPHRASE=... imagekit sign entry.xml --p12 me.p12 -o signed.xml
    """
    from ..entry import parse_entry_bytes
    from ..signing.sign import sign_entry

    data = _read(entry)
    signer = cli_signer(key, cert, p12)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    signed = sign_entry(data, signer, now=now, email=email or settings().email)
    target = output or entry
    atomic_write(target, signed)
    parsed = parse_entry_bytes(signed)
    endorser = parsed.endorsement.endorser
    summary = {
        "output": str(target),
        "identifier": parsed.identifier,
        "email": endorser.email if endorser else None,
        "subject": endorser.subject if endorser else None,
        "issuer": endorser.issuer if endorser else None,
        "created": format_date(now),
    }
    if as_json:
        emit_json(summary)
    else:
        info(f"signed {parsed.identifier} as {summary['email']} -> {target}")


def parse_at(text: str) -> dt.datetime:
    """``--at``: a date (midnight UTC) or a UTC date-time."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError as e:
        raise InputError(f"--at {text!r} is not a date ({DATE_HELP})") from e
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _with_reason(e: VerificationError) -> VerificationError:
    """The same error, its message prefixed with the reason name (``SignatureInvalid: ...``)."""
    wrapped = type(e)(f"{type(e).__name__}: {e}", hint=e.hint)
    wrapped.__cause__ = e
    return wrapped


@cli.command("verify")
@click.argument("entry", type=click.Path(path_type=Path))
@click.option(
    "--trust",
    "trust",
    multiple=True,
    type=click.Path(path_type=Path),
    help="trusted certificate file or directory (certs, CA certs, CRLs); repeatable",
)
@click.option(
    "--image",
    type=click.Path(path_type=Path),
    help="also check this image file's size and every checksum of the entry",
)
@click.option("--allow-sha1", is_flag=True, help="accept SHA-1 signatures (old StratusLab entries)")
@click.option("--allow-expired", is_flag=True, help="accept an entry past its dcterms:valid")
@click.option("--at", "at", metavar="DATE", help=f"check as of DATE instead of now ({DATE_HELP})")
@click.option(
    "--unsafe-no-trust-check",
    is_flag=True,
    help="UNSAFE: accept any certificate (checks only the maths and the endorser fields)",
)
@click.option(
    "--unsafe-allow-stale-crls",
    is_flag=True,
    help="UNSAFE: still use CRLs past their nextUpdate instead of refusing",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def verify(
    entry: Path,
    trust: tuple[Path, ...],
    image: Path | None,
    allow_sha1: bool,
    allow_expired: bool,
    at: str | None,
    unsafe_no_trust_check: bool,
    unsafe_allow_stale_crls: bool,
    as_json: bool,
) -> None:
    """Verify a signed entry: signature, endorser, certificate trust, expiry (and image).

    Exit status 0 when everything holds; 3 with the reason (SignatureInvalid, Untrusted,
    CertificateExpired, Expired, ChecksumMismatch, ...) otherwise.

    \b
    Example:
      imagekit verify entry.xml --trust me.crt
      imagekit verify entry.xml --trust /etc/grid-security/certificates --image disk.qcow2
      imagekit verify old.xml --trust jane.crt --allow-sha1 --at 2011-06-01
    """
    from ..image.digests import digest_file
    from ..progress import ProgressBar
    from ..signing.verify import check_image_digests, verify_entry

    present = dt.datetime.now(dt.UTC).replace(microsecond=0)
    now = parse_at(at) if at else present
    store: TrustStore
    if unsafe_no_trust_check:
        info(
            "imagekit: warning: --unsafe-no-trust-check: ANY certificate is accepted; "
            "this proves nothing about who signed the entry"
        )
        store = UnsafeAcceptAnyCertificate()
    else:
        store = cli_trust(trust, unsafe_allow_stale_crls=unsafe_allow_stale_crls)
        if store.is_empty:
            raise _with_reason(
                Untrusted(
                    "no trusted certificates configured",
                    hint="give --trust CERT|DIR or set trust in the config "
                    "(--unsafe-no-trust-check skips the check, unsafely)",
                )
            )
    data = _read(entry)
    result: dict[str, Any] = {"entry": str(entry), "as_of": format_date(now)}
    try:
        verified = verify_entry(
            data,
            store,
            now=now,
            allow_sha1=allow_sha1,
            allow_expired=allow_expired,
            present=present,
        )
        parsed = verified.entry
        if image is not None:
            algorithms = [c.algorithm for c in parsed.checksums]
            with ProgressBar(
                f"checking {image.name}", image.stat().st_size if image.exists() else None
            ) as bar:
                digests = digest_file(image, algorithms, progress=bar)
            check_image_digests(parsed, digests)
            result["image"] = {
                "path": str(image),
                "bytes": digests.size,
                "checked": sorted(str(a) for a in digests.values),
            }
    except VerificationError as e:
        if as_json:
            emit_json({**result, "valid": False, "reason": type(e).__name__, "message": str(e)})
        raise _with_reason(e) from e
    except ImagekitError as e:
        if as_json:
            emit_json({**result, "valid": False, "reason": type(e).__name__, "message": str(e)})
        raise
    endorser = parsed.endorsement.endorser
    assert endorser is not None  # verify_entry guarantees it
    result.update(
        valid=True,
        identifier=parsed.identifier,
        endorser={"email": endorser.email, "subject": endorser.subject, "issuer": endorser.issuer},
        created=format_date(parsed.endorsement_created) if parsed.endorsement_created else None,
        expires=format_date(parsed.valid) if parsed.valid else None,
        signature_method=verified.signature_method.rpartition("#")[2],
        certificate=describe_certificate(verified.certificate),
        chain=[describe_certificate(c)["subject"] for c in verified.chain],
        trust="unsafe-none"
        if unsafe_no_trust_check
        else ("pinned" if not verified.chain else "ca"),
    )
    if as_json:
        emit_json(result)
        return
    click.echo(
        f"OK {parsed.identifier} endorsed by {endorser.email} ({endorser.subject}) "
        f"at {result['created']}"
    )
    if image is not None:
        click.echo(
            f"OK image {image} ({result['image']['bytes']} bytes, "
            f"{', '.join(result['image']['checked'])})"
        )
