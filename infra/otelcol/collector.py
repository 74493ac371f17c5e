"""The project's OpenTelemetry Collector: built from ``infra/otelcol`` with the machine's Go, run on free ports.

Usage (the Makefile wraps ``build``)::

    python -m infra.otelcol build [--if-go]      # reused while unchanged; --if-go never fails
    python -m infra.otelcol config [--kafka B]   # print the generated config (OTLP in -> Kafka otlp_spans)
    python -m infra.otelcol run [--kafka B] [--encoding otlp_json] [--partition-traces-by-id] [-- CMD ...]

Guarantees: ``build`` runs ``go build`` only when the sources or the Go version changed, with
``-mod=readonly`` and ``GOTOOLCHAIN=local``, one build at a time (a file lock).
:meth:`Collector.start` returns once every pipeline is ready and the OTLP/HTTP port accepts
connections; :meth:`Collector.stop` sends SIGTERM, then SIGKILL after the timeout.
Non-guarantee: the Collector's own retries (an unreachable Kafka is retried, not reported here).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from infra.kafka import free_port, port_is_open
from infra.processes import ManagedProcess, run_in_foreground, running

OTELCOL_DIR = Path(__file__).resolve().parent
BUILD_DIR = OTELCOL_DIR / "build"
BINARY = BUILD_DIR / "otelcol-reloadtrace"
_STAMP = BUILD_DIR / "stamp.json"
_SOURCES = ("main.go", "go.mod", "go.sum")
_READY_LINE = "Everything is ready"
_DEFAULT_START_TIMEOUT_S = 60.0
_DEFAULT_STOP_TIMEOUT_S = 20.0
_DEFAULT_BUILD_TIMEOUT_S = 1800.0
DEFAULT_TOPIC = "otlp_spans"
ENCODINGS = ("otlp_proto", "otlp_json")


class CollectorError(RuntimeError):
    """The Collector could not be built, started or stopped (the reason, and its log, are in the message)."""


def go_binary() -> str | None:
    """The ``go`` on PATH (or in ``$GOROOT/bin``), or None."""
    found = shutil.which("go")
    if found is None and os.environ.get("GOROOT"):
        candidate = Path(os.environ["GOROOT"]) / "bin" / "go"
        found = str(candidate) if candidate.exists() else None
    return found


def _go_version(go: str) -> str:
    done = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False, timeout=60)
    return done.stdout.strip() or "unknown"


def _fingerprint(go_version: str) -> str:
    digest = hashlib.sha256(go_version.encode())
    for name in _SOURCES:
        digest.update(name.encode() + b"\0" + (OTELCOL_DIR / name).read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class BuildResult:
    """Where the binary is, and whether this call built it (with how long ``go build`` took)."""

    binary: Path
    built: bool
    seconds: float = 0.0


def build(*, force: bool = False, timeout_s: float = _DEFAULT_BUILD_TIMEOUT_S, quiet: bool = True) -> BuildResult:
    """The Collector binary, built now unless the last build is of the same sources and Go version.

    Raises:
        CollectorError: Go is not installed, or ``go build`` failed (its output is quoted).
    """
    go = go_binary()
    if go is None:
        raise CollectorError("Go ('go') is not on PATH: the Collector in infra/otelcol is built with Go 1.26+")
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with (BUILD_DIR / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process building waits, then finds the stamp
        fingerprint = _fingerprint(_go_version(go))
        if not force and BINARY.exists() and _stamp() == fingerprint:
            return BuildResult(BINARY, built=False)
        env = {**os.environ, "GOFLAGS": "-mod=readonly -buildvcs=false", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
        partial = BINARY.with_suffix(".partial")
        command = [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(partial), "."]
        started = time.monotonic()
        try:
            done = subprocess.run(command, cwd=OTELCOL_DIR, env=env, stdin=subprocess.DEVNULL, capture_output=quiet,
                                  text=True, check=False, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise CollectorError(f"go build of the Collector took longer than {timeout_s:.0f}s") from None
        seconds = time.monotonic() - started
        if done.returncode != 0:
            output = ((done.stdout or "") + (done.stderr or ""))[-4000:]
            raise CollectorError(f"go build of the Collector failed (exit {done.returncode}):\n{output}")
        partial.replace(BINARY)
        _STAMP.write_text(json.dumps({"fingerprint": fingerprint, "seconds": round(seconds, 1)}))
        return BuildResult(BINARY, built=True, seconds=seconds)


def _stamp() -> str | None:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(_STAMP.read_text()).get("fingerprint")
    return None


def is_built() -> bool:
    """Whether a binary is there (possibly of older sources: :func:`build` tells)."""
    return BINARY.exists()


# --- configuration ------------------------------------------------------------------------------------


def otlp_receiver(http_port: int, grpc_port: int) -> dict[str, Any]:
    """OTLP over HTTP and gRPC on 127.0.0.1."""
    return {"protocols": {"http": {"endpoint": f"127.0.0.1:{http_port}"},
                          "grpc": {"endpoint": f"127.0.0.1:{grpc_port}"}}}


def kafka_exporter(brokers: str, *, topic: str = DEFAULT_TOPIC, encoding: str = "otlp_proto",
                   partition_traces_by_id: bool = False) -> dict[str, Any]:
    """The kafkaexporter writing traces to ``topic`` as the issue's users configure it."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    return {
        "brokers": [server.strip() for server in brokers.split(",") if server.strip()],
        "traces": {"topic": topic, "encoding": encoding},
        "partition_traces_by_id": partition_traces_by_id,
        "sending_queue": {"enabled": False},  # a test reads the topic right after the export returned
    }


def kafka_receiver(brokers: str, *, topic: str, encoding: str = "otlp_proto", group_id: str) -> dict[str, Any]:
    """The kafkareceiver reading traces from ``topic`` from the earliest offset."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    return {
        "brokers": [server.strip() for server in brokers.split(",") if server.strip()],
        "traces": {"topics": [topic], "encoding": encoding},
        "group_id": group_id,
        "initial_offset": "earliest",
    }


def file_exporter(path: Path | str, *, format_name: str = "json") -> dict[str, Any]:
    """The fileexporter: one ExportTraceServiceRequest per line (``json``) or length-prefixed (``proto``)."""
    return {"path": str(path), "format": format_name, "flush_interval": "100ms"}


def collector_config(receivers: Mapping[str, Any], exporters: Mapping[str, Any],
                     pipelines: Mapping[str, tuple[Sequence[str], Sequence[str]]]) -> dict[str, Any]:
    """A whole config: ``pipelines`` maps a traces pipeline name to (receiver ids, exporter ids).

    The Collector's own metrics are off (no port 8888 to collide on); its logs go to stderr.
    """
    return {
        "receivers": dict(receivers),
        "exporters": dict(exporters),
        "service": {
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "info", "encoding": "console"}},
            "pipelines": {name: {"receivers": list(ins), "exporters": list(outs)}
                          for name, (ins, outs) in pipelines.items()},
        },
    }


# --- process --------------------------------------------------------------------------------------------


@dataclass
class Collector:
    """One Collector process with a generated config, in its own directory.

    Args:
        config: the whole config (see :func:`collector_config`); written as JSON, which YAML reads.
        work_dir: holds ``config.yaml`` and ``collector.log``.
        http_port / grpc_port: the OTLP receiver's ports, when the config has one (for readiness
            and :attr:`otlp_http_endpoint`).
        binary: default the built one.
        extra_config_paths: more config files, merged over ``config`` by the Collector (maps merge, lists
            are replaced), e.g. a snippet a user pastes.
    """

    config: dict[str, Any]
    work_dir: Path
    http_port: int | None = None
    grpc_port: int | None = None
    binary: Path = BINARY
    extra_config_paths: tuple[Path, ...] = ()
    _process: ManagedProcess | None = field(default=None, init=False, repr=False)

    @property
    def log_path(self) -> Path:
        return Path(self.work_dir) / "collector.log"

    @property
    def otlp_http_endpoint(self) -> str:
        """``http://127.0.0.1:PORT/v1/traces``: what an SDK's OTLP/HTTP trace exporter posts to."""
        return f"http://127.0.0.1:{self.http_port}/v1/traces"

    def log_text(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return self.log_path.read_text(errors="replace")
        return ""

    def start(self, timeout_s: float = _DEFAULT_START_TIMEOUT_S) -> Collector:
        """Write the config, start the Collector and wait until it is ready.

        Raises:
            CollectorError: no binary, the Collector exited (its log is quoted) or was not ready in time.
        """
        if not Path(self.binary).exists():
            raise CollectorError(f"no Collector binary at {self.binary}: run python -m infra.otelcol build")
        work_dir = Path(self.work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        config_path = work_dir / "config.yaml"
        config_path.write_text(json.dumps(self.config, indent=2))
        command = [str(self.binary), "--config", f"file:{config_path}"]
        for extra in self.extra_config_paths:
            command += ["--config", f"file:{Path(extra).resolve()}"]
        self._process = ManagedProcess(command, log_path=self.log_path)
        self._process.start()
        deadline = time.monotonic() + timeout_s
        while True:
            if not self._process.running():
                raise CollectorError(f"the Collector exited with {self._process.returncode}:\n{self._tail()}")
            ready = _READY_LINE in self.log_text()
            if ready and (self.http_port is None or port_is_open("127.0.0.1", self.http_port)):
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise CollectorError(f"the Collector was not ready within {timeout_s:.0f}s:\n{self._tail()}")
            time.sleep(0.1)

    def _tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def running(self) -> bool:
        return self._process is not None and self._process.running()

    def stop(self, timeout_s: float = _DEFAULT_STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (the Collector shuts its pipelines down), SIGKILL after ``timeout_s``; the exit code."""
        if self._process is None:
            return None
        return self._process.stop(timeout_s)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def otlp_to_kafka(brokers: str, work_dir: Path | str, *, topic: str = DEFAULT_TOPIC, encoding: str = "otlp_proto",
                  partition_traces_by_id: bool = False, http_port: int = 0, grpc_port: int = 0) -> Collector:
    """A Collector (not started) taking OTLP on 127.0.0.1 (free ports by default) into Kafka ``topic``."""
    http_port, grpc_port = http_port or free_port(), grpc_port or free_port()
    config = collector_config(
        {"otlp": otlp_receiver(http_port, grpc_port)},
        {"kafka": kafka_exporter(brokers, topic=topic, encoding=encoding,
                                 partition_traces_by_id=partition_traces_by_id)},
        {"traces": (["otlp"], ["kafka"])},
    )
    return Collector(config, Path(work_dir), http_port=http_port, grpc_port=grpc_port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.otelcol", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["build", "config", "run"])
    parser.add_argument("--if-go", action="store_true",
                        help="build: succeed, saying why, when Go is absent or the build fails (the tests report it)")
    parser.add_argument("--force", action="store_true", help="build: even when the last build is current")
    parser.add_argument("--kafka", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
                        help="Kafka bootstrap servers [env KAFKA_BOOTSTRAP_SERVERS]")
    parser.add_argument("--topic", default=os.environ.get("RELOADTRACE_OTLP_TOPIC", DEFAULT_TOPIC))
    parser.add_argument("--encoding", choices=ENCODINGS, default="otlp_proto")
    parser.add_argument("--partition-traces-by-id", action="store_true")
    parser.add_argument("--http-port", type=int, default=4318, help="OTLP/HTTP port (0 = a free one)")
    parser.add_argument("--grpc-port", type=int, default=4317, help="OTLP/gRPC port (0 = a free one)")
    parser.add_argument("--work-dir", default=None, help="run: config and log directory [default: a temporary one]")
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    try:
        if args.command == "build":
            if args.if_go and go_binary() is None:
                print("otelcol: Go is not on PATH; not building the Collector (the interop tests will skip)")
                return 0
            try:
                result = build(force=args.force, quiet=False)
            except CollectorError as error:
                if not args.if_go:
                    raise
                # make test goes on: the interop tests build again and fail with this reason
                print(f"otelcol: the build failed; the interop tests will fail with it:\n{error}", file=sys.stderr)
                return 0
            how = f"built in {result.seconds:.1f}s" if result.built else "up to date"
            print(f"otelcol: {result.binary} ({how})")
            return 0
        work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="otelcol-"))
        collector = otlp_to_kafka(args.kafka, work_dir, topic=args.topic, encoding=args.encoding,
                                  partition_traces_by_id=args.partition_traces_by_id,
                                  http_port=args.http_port, grpc_port=args.grpc_port)
        if args.command == "config":
            print(json.dumps(collector.config, indent=2))
            return 0
        build()
        with running(collector):
            print(f"otelcol: OTLP/HTTP on {collector.otlp_http_endpoint}, gRPC on 127.0.0.1:{collector.grpc_port}"
                  f" -> Kafka {args.kafka} topic {args.topic} ({args.encoding}); log {collector.log_path}", flush=True)
            if command:
                env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.http_port}",
                       "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
                return run_in_foreground(command, env)
            stop: list[int] = []
            signal.signal(signal.SIGTERM, lambda signum, _frame: stop.append(signum))
            try:
                while not stop:
                    if not collector.running():
                        print(f"error: the Collector exited:\n{collector.log_text()[-4000:]}", file=sys.stderr)
                        return 1
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
            return 0
    except CollectorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
