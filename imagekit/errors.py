"""Errors, grouped by whose fault they are.

The library raises these; only the CLI turns them into a one-line message and an exit code.
Each boundary (a parser, a subprocess, a network call) wraps foreign exceptions once, with
``raise ... from e``.
"""

from __future__ import annotations


class ImagekitError(Exception):
    """Base of every error imagekit reports to a user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


# --- the input is wrong (the caller's fault) -------------------------------------------


class InputError(ImagekitError):
    """Bad input: a malformed file, an impossible option, a missing path."""

    exit_code = 2


class InvalidMetadata(InputError):
    """A metadata entry breaks a rule of the StratusLab profile; ``rule`` names it."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.detail = detail


class UnsafeXML(InvalidMetadata):
    """DTDs, entities, XInclude or processing tricks in a document we must parse."""

    def __init__(self, detail: str) -> None:
        super().__init__("unsafe-xml", detail)


class NotFound(InputError):
    """Something named by the caller (an ID, an instance, a volume) does not exist."""


class Ambiguous(InputError):
    """A short name matches more than one thing."""


class InvalidState(InputError):
    """The operation does not apply in the object's current state (start a running VM)."""


class IsoError(InputError):
    """An ISO 9660 image could not be written or read as asked (bad tree, label, member)."""


# --- verification refused (the data is not trustworthy) --------------------------------


class VerificationError(ImagekitError):
    """Base for every refusal to trust signed metadata or image bytes."""

    exit_code = 3


class SignatureMissing(VerificationError):
    pass


class SignatureInvalid(VerificationError):
    """Bad maths, bad structure (second or misplaced Signature, partial reference, wrapping)."""


class WeakAlgorithm(VerificationError):
    """SHA-1 (or weaker) signature or digest and the caller did not opt in."""


class EndorserMismatch(VerificationError):
    pass


class Untrusted(VerificationError):
    """The signing certificate does not chain to a trusted endorser or CA."""


class CertificateRevoked(Untrusted):
    pass


class CertificateExpired(Untrusted):
    pass


class FutureDated(VerificationError):
    """An endorsement dated after the verification time, beyond the allowed clock skew."""


class Expired(VerificationError):
    """The entry's ``dcterms:valid`` date has passed."""


class Deprecated(VerificationError):
    pass


class ChecksumMismatch(VerificationError):
    pass


class SizeMismatch(VerificationError):
    pass


class PolicyRefused(VerificationError):
    pass


class DigestConflict(VerificationError):
    """Trusted entries of one ID list different strong digests: they are not the same bytes."""


class Rollback(VerificationError):
    """An endorsement older than one already seen for the same (ID, endorser)."""


# --- the environment is missing something ----------------------------------------------


class EnvironmentProblem(ImagekitError):
    exit_code = 4


class ToolMissing(EnvironmentProblem):
    def __init__(self, tool: str, package: str) -> None:
        super().__init__(
            f"required tool {tool!r} not found",
            hint=f"install it with: apt-get install {package}",
        )
        self.tool = tool
        self.package = package


class CommandError(EnvironmentProblem):
    """An external command failed; the message carries the tail of its stderr."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        tail = " | ".join(line for line in stderr.strip().splitlines()[-3:] if line.strip())
        super().__init__(f"{argv[0]} exited with {returncode}" + (f": {tail}" if tail else ""))
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


class NetworkError(EnvironmentProblem):
    pass


# --- a bug in imagekit (or a library it drives), not the user's doing ------------------


class InternalError(ImagekitError):
    """A rule imagekit should have kept was broken (a library refused what imagekit checked
    and prepared). Reported as a bug, never as bad input."""

    exit_code = 70  # EX_SOFTWARE (sysexits.h)


class Interrupted(ImagekitError):
    exit_code = 130
