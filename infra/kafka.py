"""Native Apache Kafka launcher: one KRaft broker+controller on 127.0.0.1, no Docker needed.

Usage (the Makefile wraps these)::

    python -m infra.kafka jars                 # resolve the broker jars from Maven Central
    python -m infra.kafka up [--port 9092]     # format storage, start, wait, create topics
    python -m infra.kafka status
    python -m infra.kafka down                 # stop; leaves no process behind
    python -m infra.kafka run -- CMD ...       # up, run CMD, always down; exits with CMD's code

Guarantees: ``up`` returns only once the broker answers metadata requests and every topic exists;
``down`` sends SIGTERM, waits for a clean shutdown and escalates to SIGKILL, and ``run`` stops the
broker even when CMD fails or is interrupted. State (pid file, logs, data) lives in one directory,
``--data-dir`` (default ``.kafka``), so several brokers can coexist on different ports.
Non-guarantee: ``up`` on a data directory whose broker is still running reuses it as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infra.processes import run_in_foreground, running

INFRA_DIR = Path(__file__).resolve().parent
JARS_DIR = INFRA_DIR / "target" / "libs"
_JARS_MARKER = JARS_DIR / ".resolved"

_DEFAULT_PORT = 9092
_DEFAULT_DATA_DIR = Path(".kafka")
_DEFAULT_START_TIMEOUT_S = 90.0
_DEFAULT_STOP_TIMEOUT_S = 30.0
_DEFAULT_HEAP = "-Xms256m -Xmx1g"

_LOG4J2_CONFIG = """\
Configuration:
  name: reloadtrace-kafka
  Appenders:
    File:
      name: file
      fileName: "{log_file}"
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: file
    Logger:
      - name: kafka.request.logger
        level: WARN
      - name: org.apache.kafka.controller
        level: WARN
      - name: state.change.logger
        level: WARN
"""


class KafkaLauncherError(RuntimeError):
    """The broker could not be resolved, started, reached or stopped."""


def resolve_jars(*, quiet: bool = True) -> Path:
    """Resolve the broker jars into ``infra/target/libs`` with Maven (once; a marker file remembers).

    Raises:
        KafkaLauncherError: Maven is missing or the resolution failed.
    """
    if _JARS_MARKER.exists():
        return JARS_DIR
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaLauncherError("Maven ('mvn') is not on PATH: install Maven and Java 17+, or use Docker")
    command = [
        mvn,
        "-B",
        *(["-q"] if quiet else []),
        "-f",
        str(INFRA_DIR / "pom.xml"),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={JARS_DIR}",
    ]
    result = subprocess.run(command, stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        raise KafkaLauncherError(f"resolving the Kafka jars failed (exit {result.returncode}): {' '.join(command)}")
    _JARS_MARKER.write_text("ok\n")
    return JARS_DIR


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise KafkaLauncherError("Java ('java') is not on PATH: Kafka 4 needs Java 17+")
    return java


def port_is_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout_s):
        return True
    return False


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class KafkaBroker:
    """A single-node KRaft Kafka broker (broker and controller in one JVM) bound to 127.0.0.1.

    Args:
        port: client listener port.
        controller_port: KRaft controller listener port; defaults to ``port + 1``.
        data_dir: holds ``server.properties``, the pid file, ``broker.log`` and the log segments.
        heap_opts: JVM heap flags.
        extra_properties: broker properties appended to the generated ``server.properties``.
    """

    port: int = _DEFAULT_PORT
    controller_port: int | None = None
    data_dir: Path = _DEFAULT_DATA_DIR
    heap_opts: str = _DEFAULT_HEAP
    extra_properties: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        if self.controller_port is None:
            self.controller_port = self.port + 1
        if not (0 < self.port < 65536 and 0 < self.controller_port < 65536):
            raise ValueError(f"ports must be in 1..65535, got {self.port} and {self.controller_port}")
        if self.port == self.controller_port:
            raise ValueError("port and controller_port must differ")

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    def pid(self) -> int | None:
        """The broker's pid when its process is alive, else None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            cmdline = b""
        if b"kafka.Kafka" not in cmdline:
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def _write_config(self) -> Path:
        logs = self.data_dir / "kraft-logs"
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(logs),
            "num.partitions": "4",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "log.retention.hours": "168",
            "log.segment.bytes": str(256 * 1024 * 1024),
            **self.extra_properties,
        }
        config = self.data_dir / "server.properties"
        config.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
        (self.data_dir / "log4j2.yaml").write_text(_LOG4J2_CONFIG.format(log_file=self.log_file))
        return config

    def _java_command(self, main_class: str, *args: str) -> list[str]:
        return [
            _java(),
            *self.heap_opts.split(),
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.yaml'}",
            "-cp",
            f"{resolve_jars()}/*",
            main_class,
            *args,
        ]

    def _format_storage(self, config: Path) -> None:
        if (self.data_dir / "kraft-logs" / "meta.properties").exists():
            return
        cluster_id = _kafka_uuid()
        command = self._java_command(
            "kafka.tools.StorageTool", "format", "--standalone", "-t", cluster_id, "-c", str(config)
        )
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise KafkaLauncherError(f"formatting Kafka storage failed: {result.stdout}{result.stderr}")

    def start(self, timeout_s: float = _DEFAULT_START_TIMEOUT_S) -> None:
        """Format storage (first time only), start the broker and wait until it serves metadata.

        Raises:
            KafkaLauncherError: the port is taken by something else, or the broker did not come up
                within ``timeout_s`` (its log is quoted).
        """
        if self.is_running():
            self.wait_ready(timeout_s)
            return
        for port in (self.port, self.controller_port):
            if port_is_open("127.0.0.1", port):
                raise KafkaLauncherError(f"port {port} is already in use by another process")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        self._format_storage(config)
        stdout = open(self.data_dir / "broker.out", "ab")  # noqa: SIM115 - handed to the child
        process = subprocess.Popen(
            self._java_command("kafka.Kafka", str(config)),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stdout.close()
        self.pid_file.write_text(f"{process.pid}\n")
        try:
            self.wait_ready(timeout_s, process=process)
        except KafkaLauncherError:
            self.stop()
            raise

    def wait_ready(self, timeout_s: float, process: subprocess.Popen[bytes] | None = None) -> None:
        """Block until the broker answers a metadata request (quoting its log when it does not)."""

        def still_alive() -> None:
            if process is not None and process.poll() is not None:
                raise KafkaLauncherError(f"the broker exited with {process.returncode}:\n{self._log_tail()}")

        try:
            wait_for_kafka(self.bootstrap_servers, timeout_s, check_alive=still_alive)
        except KafkaLauncherError as error:
            raise KafkaLauncherError(f"{error}\n{self._log_tail()}") from None

    def _log_tail(self, lines: int = 30) -> str:
        text = ""
        for path in (self.data_dir / "broker.out", self.log_file):
            with contextlib.suppress(FileNotFoundError):
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

    def stop(self, timeout_s: float = _DEFAULT_STOP_TIMEOUT_S) -> bool:
        """Stop the broker: SIGTERM, wait up to ``timeout_s``, then SIGKILL. True when one was running."""
        pid = self.pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        if not _wait_gone(pid, timeout_s):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            _wait_gone(pid, 10)
        self.pid_file.unlink(missing_ok=True)
        self._wait_ports_closed()
        return True

    def _wait_ports_closed(self, timeout_s: float = 15.0) -> None:
        # A killed JVM's leader thread can show as a zombie while its other threads still hold the
        # listening sockets; the broker is only gone once nothing accepts on its ports.
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not any(port_is_open("127.0.0.1", port) for port in (self.port, self.controller_port)):
                return
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the broker (a crash, for fault tests); data stays for a restart."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            _wait_gone(pid, 10)
            self.pid_file.unlink(missing_ok=True)
            self._wait_ports_closed()

    def wipe(self) -> None:
        """Stop the broker and delete its data directory."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            reaped, _ = os.waitpid(pid, os.WNOHANG)
            if reaped == pid:
                return True
        except ChildProcessError:
            pass
        if not Path(f"/proc/{pid}").exists():
            return True
        with contextlib.suppress(FileNotFoundError):
            if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
                return True
        time.sleep(0.1)
    return False


def wait_for_kafka(bootstrap_servers: str, timeout_s: float, check_alive: Callable[[], None] | None = None) -> None:
    """Block until a broker at ``bootstrap_servers`` answers a metadata request.

    Raises:
        KafkaLauncherError: no answer within ``timeout_s`` (or ``check_alive`` raised it).
    """
    from confluent_kafka.admin import AdminClient

    host, _, port = bootstrap_servers.split(",")[0].rpartition(":")
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if check_alive is not None:
            check_alive()
        if port_is_open(host or "127.0.0.1", int(port)):
            try:
                admin = AdminClient({"bootstrap.servers": bootstrap_servers, "log_level": 3})
                if admin.list_topics(timeout=2).brokers:
                    return
            except Exception as error:  # noqa: BLE001 - retried until the deadline
                last_error = error
        time.sleep(0.25)
    raise KafkaLauncherError(
        f"Kafka did not answer on {bootstrap_servers} within {timeout_s:.0f}s (last error: {last_error})"
    )


def _kafka_uuid() -> str:
    """A random Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    Never one that starts with "-" (1 in 64 would): the storage tool's argument parser takes it for an
    option and refuses ``-t -…`` ("expected one argument"). Kafka's own ``Uuid.randomUuid`` skips them too.
    """
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def create_topics(
    bootstrap_servers: str,
    names: Sequence[str] | Mapping[str, Mapping[str, str]],
    partitions: int,
    timeout_s: float = 30.0,
) -> None:
    """Create the topics that do not exist yet on a launched broker (replication factor 1, with their configs;
    :func:`schemas.kafka_io.ensure_topics`). Idempotent.

    Args:
        names: topic names, or topic name -> topic configs (e.g. ``message.timestamp.type``).

    Raises:
        ValueError: ``partitions`` < 1.
        TopicCreationError: a topic could not be created.
    """
    from schemas.kafka_io import ensure_topics

    client_config = {"bootstrap.servers": bootstrap_servers, "log_level": 3}
    ensure_topics(client_config, names, partitions=partitions, replication_factor=1, timeout_s=timeout_s)


def _broker_from_args(args: argparse.Namespace) -> KafkaBroker:
    return KafkaBroker(port=args.port, controller_port=args.controller_port, data_dir=Path(args.data_dir))


def _topic_names(prefix: str) -> dict[str, dict[str, str]]:
    from schemas.topics import TopicNames

    return TopicNames(prefix=prefix).with_configs()


def main(argv: Sequence[str] | None = None) -> int:
    from schemas.kafka_io import TopicCreationError

    parser = argparse.ArgumentParser(prog="python -m infra.kafka", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["jars", "up", "down", "status", "run"])
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("KAFKA_PORT", _DEFAULT_PORT)),
        help="client port (0 = pick a free one)",
    )
    parser.add_argument("--controller-port", type=int, default=None)
    parser.add_argument("--data-dir", default=os.environ.get("KAFKA_DATA_DIR", str(_DEFAULT_DATA_DIR)))
    parser.add_argument("--partitions", type=int, default=int(os.environ.get("RELOADTRACE_PARTITIONS", "4")))
    parser.add_argument("--topic-prefix", default=os.environ.get("RELOADTRACE_TOPIC_PREFIX", ""))
    parser.add_argument("--fresh", action="store_true", help="wipe the data directory first")
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)

    if args.port == 0:
        args.port = free_port()
        args.controller_port = args.controller_port or free_port()
    try:
        if args.command == "jars":
            print(f"Kafka jars in {resolve_jars(quiet=False)}")
            return 0
        broker = _broker_from_args(args)
        if args.command == "status":
            pid = broker.pid()
            if pid is None:
                print(f"Kafka: not running (data dir {broker.data_dir})")
                return 3
            print(f"Kafka: running, pid {pid}, bootstrap {broker.bootstrap_servers}, data dir {broker.data_dir}")
            return 0
        if args.command == "down":
            stopped = broker.stop()
            print("Kafka: stopped" if stopped else "Kafka: was not running")
            return 0
        if args.fresh:
            broker.wipe()
        if args.command == "up":
            broker.start()
            create_topics(broker.bootstrap_servers, _topic_names(args.topic_prefix), args.partitions)
            print(f"Kafka: up on {broker.bootstrap_servers} (pid {broker.pid()}, data dir {broker.data_dir})")
            return 0
        # run
        if not command:
            parser.error("run needs a command after --")
        with running(broker):
            create_topics(broker.bootstrap_servers, _topic_names(args.topic_prefix), args.partitions)
            return run_in_foreground(command, {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers})
    except (KafkaLauncherError, TopicCreationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
