"""Writing a Simulation to files: spans, reloads (JSONL or Avro container) and ground_truth.json, byte-stable."""

from __future__ import annotations

import hashlib
from pathlib import Path

import fastavro

from gateway.simulation.simulator import Simulation, ground_truth_json
from schemas.codec import default_store
from schemas.files import write_records


def _write_avro(path: Path, record_name: str, records: list, seed: int) -> None:
    # Avro container files carry a random sync marker by default; derive it from the seed instead.
    marker = hashlib.sha256(f"reloadtrace-{seed}-{record_name}".encode()).digest()[:16]
    with path.open("wb") as handle:
        fastavro.writer(handle, default_store().latest(record_name).raw, records, codec="deflate", sync_marker=marker)


def write_simulation(simulation: Simulation, directory: Path | str, *, file_format: str = "jsonl") -> dict[str, Path]:
    """``spans.<fmt>``, ``reloads.<fmt>`` and ``ground_truth.json`` in ``directory``; same seed, same bytes.

    The files do not keep the publication order: spans are in end order, reloads in attempt order;
    the ground truth holds each reload's publication delay (``produce --order event-time`` uses it).
    """
    if file_format not in ("jsonl", "avro"):
        raise ValueError(f"file format must be jsonl or avro, not {file_format!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "spans": directory / f"spans.{file_format}",
        "reloads": directory / f"reloads.{file_format}",
        "ground_truth": directory / "ground_truth.json",
    }
    reloads = [event.to_dict() for event in simulation.reloads]
    if file_format == "avro":
        _write_avro(paths["spans"], "Span", simulation.spans, simulation.config.seed)
        _write_avro(paths["reloads"], "ReloadEvent", reloads, simulation.config.seed)
    else:
        write_records(paths["spans"], "Span", simulation.spans)
        write_records(paths["reloads"], "ReloadEvent", reloads)
    paths["ground_truth"].write_text(ground_truth_json(simulation))
    return paths
