"""The second SDK: ``tests/interop/node/send.js`` (OpenTelemetry JavaScript SDK, OTLP/HTTP protobuf)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any


def send_with_node(node_dir: Path, endpoint: str, *, service_name: str, service_instance_id: str,
                   base_time_unix_nano: int, timeout_s: float = 60.0) -> dict[str, Any]:
    """Run the Node sender against ``endpoint``; the ids and times it used (see send.js).

    Raises:
        AssertionError: the sender failed (its output is quoted).
    """
    env = {**os.environ, "OTLP_TRACES_URL": endpoint, "SERVICE_NAME": service_name,
           "SERVICE_INSTANCE_ID": service_instance_id, "BASE_TIME_UNIX_NANO": str(base_time_unix_nano)}
    done = subprocess.run(["node", str(node_dir / "send.js")], cwd=node_dir, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout_s, check=False)
    assert done.returncode == 0, f"node send.js failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])
