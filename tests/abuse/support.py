"""Real processes for the abuse suite: the fake upstream and gateways as subprocesses
(``tests.reliability.support.start_gateway``), and floods as subprocesses of their own
(``tests.abuse.floods``), so the measured key's latency is the gateway's, not the GIL's."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


def start_fake_upstream(port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tallygate", "fake-upstream", "--port", str(port),
             "--chunks", "4"], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(errors="replace")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    process.kill()
    raise AssertionError("the fake upstream did not start")


def start_flood(kind: str, url: str, **options: Any) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "tests.abuse.floods", kind, url]
    for name, value in options.items():
        argv += [f"--{name}", str(value)]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def flood_result(process: subprocess.Popen[str], timeout: float = 60) -> dict[str, Any]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def p99(values: list[float]) -> float:
    """Nearest-rank 99th percentile (as bench/gateway_load.percentile)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(0.99 * len(ordered))) - 1]
