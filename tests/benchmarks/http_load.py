"""A small HTTP/1.1 load generator for loopback benchmarks: keep-alive connections on raw asyncio streams.

Open loop (``paced``): requests are due at a fixed rate and each latency counts from when the
request was due, so a server that falls behind is charged for the wait (no coordinated omission).
Closed loop (``saturate``): every connection sends its next request as soon as the answer came.
Only loopback addresses are accepted; every run is bounded in time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    sent: int = 0
    answered: int = 0
    elapsed_s: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)

    @property
    def rate_per_s(self) -> float:
        return self.answered / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_ms(self, fraction: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


def get_request(host: str, port: int, target: str, headers: dict[str, str] | None = None) -> bytes:
    """The bytes of one keep-alive GET."""
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _loopback(host: str) -> None:
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"load is only sent to loopback addresses, not {host}")


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _run(
    host: str, port: int, requests: Sequence[bytes], connections: int, duration_s: float, rate: float | None
) -> LoadResult:
    result = LoadResult()
    cycle = itertools.cycle(requests)
    started = time.perf_counter()
    deadline = started + duration_s
    due: asyncio.Queue[float] = asyncio.Queue()

    async def pace() -> None:
        assert rate is not None
        count = 0
        while True:
            at = started + count / rate
            if at >= deadline:
                break
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            due.put_nowait(at)
            count += 1
        for _ in range(connections):
            due.put_nowait(-1.0)

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                if rate is None:
                    at = time.perf_counter()
                    if at >= deadline:
                        return
                else:
                    at = await due.get()
                    if at < 0:
                        return
                result.sent += 1
                status = await _exchange(reader, writer, next(cycle))
                result.latencies_s.append(time.perf_counter() - at)
                result.answered += 1
                result.statuses[status] = result.statuses.get(status, 0) + 1
        finally:
            writer.close()

    tasks = [asyncio.create_task(connection()) for _ in range(connections)]
    if rate is not None:
        tasks.append(asyncio.create_task(pace()))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=duration_s + 30)
    result.elapsed_s = time.perf_counter() - started
    return result


def saturate(host: str, port: int, requests: Sequence[bytes], *, connections: int, duration_s: float) -> LoadResult:
    """Closed loop: as many answers as ``connections`` keep-alive connections get in ``duration_s``."""
    _loopback(host)
    return asyncio.run(_run(host, port, requests, connections, duration_s, None))


def paced(
    host: str, port: int, requests: Sequence[bytes], *, rate_per_s: float, connections: int, duration_s: float
) -> LoadResult:
    """Open loop: ``rate_per_s`` requests due per second for ``duration_s``, latency from when each was due."""
    _loopback(host)
    return asyncio.run(_run(host, port, requests, connections, duration_s, rate_per_s))
