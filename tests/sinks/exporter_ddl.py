"""The OpenTelemetry Collector clickhouseexporter's own trace DDL, taken from the Go module cache at run time.

``go mod download`` fetches the exporter module (a pinned release) and its
``internal/sqltemplates/traces_*.sql`` files are rendered as the exporter renders them: Go format
strings whose ``%q``/``%s`` verbs take, in order, the arguments its ``renderCreate*SQL`` functions pass
(database, table, cluster clause, engine, TTL clause). Nothing of the exporter is copied into this
repository. Used by ``test_otel_views.py`` and ``tests/benchmarks/bench_store.py``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

EXPORTER_MODULE = "github.com/open-telemetry/opentelemetry-collector-contrib/exporter/clickhouseexporter"
EXPORTER_VERSION = "v0.165.1"
DEFAULT_ENGINE = "MergeTree()"  # the exporter's default table engine (no cluster, no TTL)
_VERB = re.compile(r"%(.)")


class ExporterUnavailable(RuntimeError):
    """The Go toolchain is absent, so the exporter's DDL cannot be had."""


@dataclass(frozen=True)
class ExporterTraceDdl:
    """The three statements the exporter runs for traces, rendered for one database."""

    traces_table: str
    trace_id_ts_table: str
    trace_id_ts_mv: str
    module_dir: Path

    def statements(self) -> list[str]:
        return [self.traces_table, self.trace_id_ts_table, self.trace_id_ts_mv]


def go_sprintf(template: str, *arguments: str) -> str:
    """``fmt.Sprintf`` for the verbs the templates use: ``%q`` (a double-quoted string), ``%s`` and ``%%``.

    Raises:
        ValueError: another verb, or a number of arguments that does not match the verbs.
    """
    remaining = list(arguments)

    def substitute(match: re.Match[str]) -> str:
        verb = match.group(1)
        if verb == "%":
            return "%"
        if verb not in "qs":
            raise ValueError(f"unsupported verb %{verb} in the exporter template")
        if not remaining:
            raise ValueError("the exporter template has more verbs than arguments")
        value = remaining.pop(0)
        return json.dumps(value) if verb == "q" else value

    rendered = _VERB.sub(substitute, template)
    if remaining:
        raise ValueError(f"the exporter template has {len(remaining)} verbs fewer than arguments")
    return rendered


def download_exporter(version: str = EXPORTER_VERSION) -> Path:
    """The module directory of the exporter in the Go module cache (downloaded when missing).

    Raises:
        ExporterUnavailable: ``go`` is not on PATH.
        RuntimeError: ``go mod download`` failed (its error output is in the message).
    """
    go = shutil.which("go")
    if go is None:
        raise ExporterUnavailable("the Go toolchain (`go`) is not on PATH")
    done = subprocess.run(  # outside any module, so no go.mod around can change what is resolved
        [go, "mod", "download", "-json", f"{EXPORTER_MODULE}@{version}"],
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    try:
        info = json.loads(done.stdout)
    except json.JSONDecodeError:
        info = {}
    if done.returncode != 0 or "Dir" not in info:
        raise RuntimeError(f"go mod download {EXPORTER_MODULE}@{version} failed: {info.get('Error') or done.stderr}")
    return Path(info["Dir"])


def exporter_trace_ddl(database: str, table: str = "otel_traces", version: str = EXPORTER_VERSION) -> ExporterTraceDdl:
    """The exporter's CREATE statements for ``database.table`` and its ``_trace_id_ts`` table and view."""
    module = download_exporter(version)
    templates = module / "internal" / "sqltemplates"
    read = lambda name: (templates / name).read_text(encoding="utf-8")  # noqa: E731
    no_cluster, no_ttl = "", ""
    return ExporterTraceDdl(
        traces_table=go_sprintf(read("traces_table.sql"), database, table, no_cluster, DEFAULT_ENGINE, no_ttl),
        trace_id_ts_table=go_sprintf(
            read("traces_id_ts_lookup_table.sql"), database, table, no_cluster, DEFAULT_ENGINE, no_ttl
        ),
        trace_id_ts_mv=go_sprintf(
            read("traces_id_ts_lookup_mv.sql"), database, table, no_cluster, database, table, database, table
        ),
        module_dir=module,
    )
