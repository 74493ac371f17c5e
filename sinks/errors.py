"""The sink's error tree: retryable vs fatal, backpressure, rows that cannot be stored."""

from __future__ import annotations

from schemas.errors import ReloadtraceError


class SinkError(ReloadtraceError):
    """Root of every error a sink raises on purpose."""


class SinkRetryableError(SinkError):
    """A write failed for a reason that may pass (network, server overload, timeout): retry it.

    ``server_failed`` is True when the destination itself answered that the write failed (a full
    disk, a memory limit), as opposed to an unknown outcome (a timeout, a lost connection).
    """

    def __init__(self, message: str = "", *, server_failed: bool = False) -> None:
        super().__init__(message)
        self.server_failed = server_failed


class SinkBackpressureError(SinkRetryableError):
    """The destination asks the writer to slow down; retry the same batch after ``retry_after`` seconds."""

    def __init__(self, retry_after: float, message: str = "") -> None:
        super().__init__(message or f"destination busy, retry after {retry_after:.3f} s")
        self.retry_after = retry_after


class SinkFatalError(SinkError):
    """A write that will never succeed as is (bad schema, bad SQL, permission): do not retry."""


class SinkRejectedError(SinkFatalError):
    """ClickHouse refused the data of a batch itself (a value out of range, a type mismatch).

    The batch is split to isolate the rows it rejects; those go to ``dead_letters``.
    """


class SinkRetriesExhaustedError(SinkError):
    """A retryable failure persisted past the retry budget; the batch was not written."""


class SinkConfigError(SinkError, ValueError):
    """A sink URL or setting that cannot work (unknown scheme, bad database name)."""


class SinkEngineBusyError(SinkConfigError):
    """Another process holds the embedded engine's data directory (it may be stopping: try again later)."""


class UnconvertibleRecordError(SinkError, ValueError):
    """Records of a batch that cannot be turned into rows (undecodable body, missing field, wrong type).

    Attributes:
        reasons: position in the batch -> why that record cannot be stored.
        error_kind: the ``error_kind`` of the dead letters they become.
    """

    def __init__(self, reasons: dict[int, str], error_kind: str = "unconvertible") -> None:
        first = next(iter(reasons.items()), (-1, "no record named"))
        super().__init__(f"{len(reasons)} unconvertible records; record {first[0]}: {first[1]}")
        self.reasons = dict(reasons)
        self.error_kind = error_kind
