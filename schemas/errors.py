"""The error tree of the record contract: one root, one subclass per area, each saying why."""

from __future__ import annotations

from enum import StrEnum


class ReloadtraceError(Exception):
    """Root of every error reloadtrace raises on purpose."""


class DecodeErrorKind(StrEnum):
    """Why bytes did not decode; also the ``error_kind`` of the dead letter they become."""

    WRONG_MAGIC = "wrong_magic"
    UNKNOWN_FINGERPRINT = "unknown_fingerprint"
    UNKNOWN_SCHEMA_ID = "unknown_schema_id"
    WRONG_RECORD_TYPE = "wrong_record_type"
    TRUNCATED = "truncated"
    MALFORMED = "malformed"


class DecodeError(ReloadtraceError, ValueError):
    """Bytes that are not a decodable record of the expected type.

    Attributes:
        kind: machine-readable reason (:class:`DecodeErrorKind`).
        record_name: the record type the caller expected, e.g. ``"Span"``.
    """

    def __init__(self, kind: DecodeErrorKind, message: str, record_name: str = "") -> None:
        super().__init__(f"{kind.value}: {message}")
        self.kind = kind
        self.record_name = record_name


class EncodeError(ReloadtraceError, ValueError):
    """A record that does not fit its Avro schema (missing or mistyped field)."""


class InvalidRecordError(ReloadtraceError, ValueError):
    """A decodable record that breaks the contract's rules (bad ids, end before start, ...).

    Attributes:
        field: the offending field, or ``""`` when the record as a whole is wrong.
    """

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class SchemaStoreError(ReloadtraceError):
    """The ``.avsc`` files are missing, unreadable or inconsistent."""
