"""Driver failures map onto the sink's error tree: what is retried, what is refused data, what is fatal."""

from __future__ import annotations

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError, ProgrammingError

from sinks.clickhouse import classify
from sinks.errors import (
    SinkBackpressureError,
    SinkFatalError,
    SinkRejectedError,
    SinkRetryableError,
)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (DatabaseError("Code: 252. Too many parts", code=252), SinkBackpressureError),
        (DatabaseError("Code: 202. Too many simultaneous queries", code=202), SinkBackpressureError),
        (DatabaseError("Code: 469. Constraint violated", code=469), SinkRejectedError),
        (DatabaseError("Code: 53. Type mismatch", code=53), SinkRejectedError),
        (DatabaseError("Code: 241. Memory limit exceeded", code=241), SinkRetryableError),
        (DatabaseError("Code: 319. Unknown status of insert", code=319), SinkRetryableError),
        (OperationalError("connection refused"), SinkRetryableError),
        (ConnectionResetError("reset by peer"), SinkRetryableError),
        (DatabaseError("Code: 60. Unknown table", code=60), SinkFatalError),
        (ProgrammingError("bad query"), SinkFatalError),
    ],
)
def test_classify(error: Exception, expected: type) -> None:
    classified = classify(error)
    assert type(classified) is expected
    assert str(error) in str(classified)


def test_backpressure_says_when_to_retry() -> None:
    classified = classify(DatabaseError("Code: 252. Too many parts", code=252))
    assert isinstance(classified, SinkBackpressureError) and classified.retry_after > 0
    assert isinstance(classified, SinkRetryableError)  # retried by the same loop
