"""Child processes of the demo, the launchers, the fault tests and the benchmarks: started in their own group,
stopped for sure.

Guarantees: :meth:`ManagedProcess.stop` sends SIGTERM to the whole process group, waits, then
escalates to SIGKILL, so nothing the child started outlives it; :meth:`ManagedProcess.kill` is a
crash (SIGKILL, no clean-up) for fault injection. Output goes to a log file, quoted on failure.
:func:`running` stops a service (broker, Collector) whatever its block raised; :func:`run_in_foreground`
passes Ctrl-C on to the command and waits for it. Non-guarantee: a child that double-forks into
another session escapes the group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol, Self, TypeVar

_DEFAULT_STOP_TIMEOUT_S = 30.0


class Service(Protocol):
    """Something started and stopped as a whole: a broker, a Collector, a managed child."""

    def start(self) -> object: ...

    def stop(self) -> object: ...


ServiceT = TypeVar("ServiceT", bound=Service)


class ProcessError(RuntimeError):
    """A managed child exited when it should not have, or did not exit when told."""


class ManagedProcess:
    """One child process in its own session, its output in ``log_path``.

    Args:
        argv: the command.
        log_path: where stdout and stderr go (appended).
        env: extra environment variables on top of this process's environment.
        cwd: working directory.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path | str,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self._env = {**os.environ, **(env or {})}
        self._cwd = cwd
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def check_alive(self) -> None:
        """Raise :class:`ProcessError` (quoting the first error and the log's end) when the child has exited."""
        if self._process is not None and self._process.poll() is not None:
            first = self.first_error()
            raise ProcessError(
                f"{self.argv[0]} exited with {self._process.returncode}:\n"
                + (f"first error:\n{first}\n...\n" if first else "")
                + self.log_tail()
            )

    def first_error(self, lines: int = 30) -> str:
        """The log from its first ERROR line or traceback on (``lines`` of it), or ''."""
        with contextlib.suppress(FileNotFoundError):
            text = self.log_path.read_text(errors="replace").splitlines()
            for number, line in enumerate(text):
                if "ERROR" in line or line.startswith("Traceback"):
                    return "\n".join(text[number : number + lines])
        return ""

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(FileNotFoundError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _signal_group(self, signum: int) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signum)

    def stop(self, timeout_s: float = _DEFAULT_STOP_TIMEOUT_S) -> int | None:
        """SIGTERM the group, wait up to ``timeout_s``, then SIGKILL. Returns the exit code."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self._process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self._process.wait(10)
        self._signal_group(signal.SIGKILL)  # stragglers of the group, if any
        return self._process.returncode

    def kill(self) -> None:
        """Crash the child and its group: SIGKILL, no clean-up."""
        if self._process is None:
            return
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(10)

    def wait(self, timeout_s: float) -> int:
        """Wait for a child that ends by itself; raise :class:`ProcessError` on timeout."""
        assert self._process is not None
        try:
            return self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise ProcessError(f"{self.argv[0]} still running after {timeout_s:.0f}s:\n{self.log_tail()}") from None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def wait_until(condition, *, timeout_s: float, interval_s: float = 0.5, what: str = "condition", alive=()) -> None:
    """Poll ``condition()`` until true; fail after ``timeout_s`` or when a process in ``alive`` dies.

    Raises:
        ProcessError: a watched process exited.
        TimeoutError: the condition did not hold in time.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        for process in alive:
            process.check_alive()
        if condition():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:.0f}s")
        time.sleep(interval_s)


@contextlib.contextmanager
def running(service: ServiceT) -> Iterator[ServiceT]:
    """Start ``service`` for the duration of the block and stop it afterwards, whatever happens."""
    service.start()
    try:
        yield service
    finally:
        service.stop()


def run_in_foreground(command: Sequence[str], env: Mapping[str, str]) -> int:
    """Run ``command`` with exactly ``env`` until it exits, Ctrl-C passed on to it as SIGINT; its exit code."""
    child = subprocess.Popen(list(command), env=dict(env))
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        return child.wait()
