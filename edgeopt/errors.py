"""The error tree. Every message says what is wrong and how to fix it.

Exit codes (documented in README and docs/cli.md):
  0  success
  1  a check over the result failed (e.g. a gate budget exceeded)
  2  bad input or usage: missing/corrupt file, bad flag value, unsupported model
  3  a remote device failed (connection, upload, runner)
  4  verification failed: the produced model does not match its source (parity)
  70 internal error (a bug in edgeopt: rerun with --debug and report it)
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_REMOTE = 3
EXIT_VERIFICATION = 4
EXIT_INTERNAL = 70


class EdgeoptError(Exception):
    """Base class: ``message`` says what is wrong, ``hint`` how to fix it."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InputError(EdgeoptError):
    """The user gave us something we cannot use (file, flag, data)."""

    exit_code = EXIT_BAD_INPUT


class ModelLoadError(InputError):
    """A model file is missing, corrupt, unsafe or in an unsupported format."""


class UnsupportedFormatError(InputError):
    """The model format is recognised but not handled by this command (yet)."""


class UnsafeInputError(InputError):
    """Loading the input would run untrusted code or read outside its folder."""


class ExportError(InputError):
    """The exporter could not turn the source model into ONNX."""


class OutputError(InputError):
    """The output location is unusable (unwritable, or would overwrite the input)."""


class RemoteError(EdgeoptError):
    exit_code = EXIT_REMOTE


class VerificationError(EdgeoptError):
    """A produced model does not reproduce its source's outputs."""

    exit_code = EXIT_VERIFICATION


class CheckFailed(EdgeoptError):
    exit_code = EXIT_CHECK_FAILED


def validated_document(model: type[T], raw: object, where: str, what: str, hint: str) -> T:
    """``raw`` (a parsed JSON document) as ``model``, or InputError "WHERE: invalid WHAT at LOCATION:
    MESSAGE" for the first thing wrong (reports, profile reports, gate results read back)."""
    from pydantic import ValidationError

    try:
        return model.model_validate(raw)  # type: ignore[attr-defined]
    except ValidationError as exc:
        location, message = first_validation_error(exc)
        raise InputError(f"{where}: invalid {what} at {location}: {message}", hint) from None


def first_validation_error(exc: Exception, empty: str = "") -> tuple[str, str]:
    """(dotted location, message) of a pydantic ValidationError's first error, for one-line messages;
    ``empty`` names the location when the error is about the whole object."""
    first = exc.errors()[0]  # type: ignore[attr-defined]
    where = ".".join(str(part) for part in first["loc"]) or empty
    return where, str(first["msg"]).removeprefix("Value error, ")
