"""Record files: JSONL and Avro container round trips, positions of bad lines, unreadable files."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.files import RecordFileError, read_records, write_records
from tests.schemas.test_codec import SPAN
from tests.strategies import spans


@pytest.mark.parametrize("suffix", [".jsonl", ".avro"])
@settings(max_examples=20)
@given(records=st.lists(spans(), max_size=20))
def test_round_trip(tmp_path_factory: pytest.TempPathFactory, suffix: str, records: list[dict]) -> None:
    path = tmp_path_factory.mktemp("files") / f"spans{suffix}"
    assert write_records(path, "Span", records) == len(records)
    items = list(read_records(path))
    assert [item.position for item in items] == list(range(1, len(records) + 1))
    assert [item.record for item in items] == records


def test_bad_jsonl_lines_are_reported_with_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    write_records(path, "Span", [SPAN])
    with path.open("a") as handle:
        handle.write("{not json\n\n[1, 2]\n")
    write_records(tmp_path / "more.jsonl", "Span", [SPAN])
    with path.open("a") as handle:
        handle.write((tmp_path / "more.jsonl").read_text())
    items = list(read_records(path))
    assert [(item.position, item.error is None) for item in items] == [(1, True), (2, False), (4, False), (5, True)]
    assert "not JSON" in items[1].error and "JSON object" in items[2].error


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(RecordFileError, match="cannot open"):
        list(read_records(tmp_path / "missing.jsonl"))
    with pytest.raises(RecordFileError, match="extension"):
        list(read_records(tmp_path / "spans.csv"))
    corrupt = tmp_path / "spans.avro"
    corrupt.write_bytes(b"Obj\x01garbage")
    with pytest.raises(RecordFileError, match="Avro container"):
        list(read_records(corrupt))
