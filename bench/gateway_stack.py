"""The processes of the gateway benchmark: fake upstream, tallygate, LiteLLM proxy.

Each runs as its own process on 127.0.0.1 with one worker, its output in a log file of the
run's temporary directory (never a pipe, which would block a chatty server). LiteLLM is
installed into its own virtual environment, reused between runs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LITELLM_VERSION = "1.100.5"  # PRODUCT.md's anchor
# Not under a "tallygate-bench-*" name: another benchmark cleans those up.
LITELLM_VENV = Path("/tmp/tallygate-gateway-litellm")
MODEL = "bench-model"
ANTHROPIC_MODEL = "bench-claude"  # a protocol = "anthropic" route: POST /v1/messages
TALLYGATE = Path(sys.executable).parent / "tallygate"


class StackError(RuntimeError):
    """A process of the benchmark did not start or did not answer as it must."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(slots=True)
class Server:
    """A running server process and what the benchmark needs to reach it."""

    name: str
    process: subprocess.Popen[bytes]
    base_url: str  # http://127.0.0.1:PORT
    health_path: str
    log: Path
    started_s: float  # from spawn to the first answered health check

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def v1(self) -> str:
        return f"{self.base_url}/v1"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def http_get(url: str, headers: dict[str, str] | None = None,
             timeout: float = 2.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post_json(url: str, body: dict[str, object], headers: dict[str, str] | None = None,
                   timeout: float = 30.0) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def spawn(name: str, argv: list[str], *, port: int, health_path: str, log: Path,
          env: dict[str, str] | None = None, timeout_s: float = 120.0) -> Server:
    """Start a server and wait until its health check answers 200 (polled every 5 ms, so the
    time to it is the cold start)."""
    with log.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env)
    base_url = f"http://127.0.0.1:{port}"
    deadline = started + timeout_s
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise StackError(f"{name} exited with {process.returncode}; its log "
                             f"{log}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            status, _ = http_get(base_url + health_path, timeout=1.0)
        except OSError:
            status = 0
        if status == 200:
            return Server(name, process, base_url, health_path, log,
                          time.perf_counter() - started)
        time.sleep(0.005)
    process.kill()
    raise StackError(f"{name} did not answer {health_path} within {timeout_s:.0f} s; "
                     f"its log {log}:\n{log.read_text(errors='replace')[-3000:]}")


def start_fake_upstream(workdir: Path) -> Server:
    """No artificial latency: streams take their chunk count and delay per request from the
    body's ``fake`` field, which both gateways forward as an unknown field."""
    port = free_port()
    return spawn("fake upstream", [str(TALLYGATE), "fake-upstream", "--port", str(port)],
                 port=port, health_path="/healthz", log=workdir / "fake-upstream.log")


@dataclass(frozen=True, slots=True)
class TallygateSetup:
    """A migrated SQLite ledger, a config with one route, a key without limits."""

    env: dict[str, str]
    config: Path
    api_key: str
    admin_token: str


def prepare_tallygate(workdir: Path, upstream: Server) -> TallygateSetup:
    admin_token = "bench-admin-" + secrets.token_hex(8)
    env = {**os.environ, "TALLYGATE_DATABASE_URL": f"sqlite:///{workdir / 'tallygate.db'}",
           "TALLYGATE_ADMIN_TOKEN": admin_token}
    env.pop("TALLYGATE_REDIS_URL", None)
    config = workdir / "tallygate.toml"
    config.write_text(f'[[routes]]\nmodel = "{MODEL}"\nbase_url = "{upstream.v1}"\n\n'
                      f'[[routes]]\nmodel = "{ANTHROPIC_MODEL}"\nbase_url = "{upstream.v1}"\n'
                      'protocol = "anthropic"\n')
    _run([str(TALLYGATE), "db", "upgrade"], env)
    created = _run([str(TALLYGATE), "keys", "create", "--name", "bench"], env)
    lines = [line.strip() for line in created.splitlines() if line.strip()]
    if not lines:
        raise StackError("`tallygate keys create` printed nothing")
    return TallygateSetup(env, config, lines[-1], admin_token)


def start_tallygate(workdir: Path, setup: TallygateSetup, log_name: str = "tallygate.log",
                    ) -> Server:
    port = free_port()
    return spawn("tallygate",
                 [str(TALLYGATE), "--config", str(setup.config), "serve", "--port", str(port)],
                 port=port, health_path="/healthz", log=workdir / log_name, env=setup.env)


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600,
                            check=False)
    if result.returncode != 0:
        raise StackError(f"{' '.join(argv)} failed ({result.returncode}):\n"
                         f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


def ensure_litellm(say: Callable[[str], None]) -> str:
    """LiteLLM proxy in its own virtual environment (reused); returns its version."""
    python = LITELLM_VENV / "bin" / "python"
    if not (LITELLM_VENV / "bin" / "litellm").exists():
        if LITELLM_VENV.exists():
            shutil.rmtree(LITELLM_VENV)
        say(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV} (once)")
        _run([sys.executable, "-m", "venv", str(LITELLM_VENV)])
        _run([str(python), "-m", "pip", "install", "--quiet",
              f"litellm[proxy]=={LITELLM_VERSION}"])
    return _run([str(python), "-c", "import importlib.metadata as m; "
                 "print(m.version('litellm'))"]).strip()


def find_litellm() -> str | None:
    """The LiteLLM proxy's version if its environment is already there (never installs)."""
    if not (LITELLM_VENV / "bin" / "litellm").exists():
        return None
    return _run([str(LITELLM_VENV / "bin" / "python"), "-c", "import importlib.metadata as m; "
                 "print(m.version('litellm'))"]).strip()


def start_litellm(workdir: Path, upstream: Server, log_name: str = "litellm.log") -> Server:
    """One worker, no database, two model entries pointing at the fake upstream: an OpenAI
    one (chat, Responses) and an Anthropic one (LiteLLM adds /v1/messages to its base)."""
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {upstream.v1}\n"
        "      api_key: sk-bench-dummy\n"
        f"  - model_name: {ANTHROPIC_MODEL}\n"
        "    litellm_params:\n"
        f"      model: anthropic/{ANTHROPIC_MODEL}\n"
        f"      api_base: {upstream.base_url}\n"
        "      api_key: sk-bench-dummy\n")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    port = free_port()
    return spawn("LiteLLM",
                 [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--host",
                  "127.0.0.1", "--port", str(port), "--num_workers", "1"],
                 port=port, health_path="/health/liveliness", log=workdir / log_name, env=env,
                 timeout_s=180)


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB (10^6 bytes)."""
    return sum(_status_kb(p, "VmRSS") for p in _tree(pid)) * 1024 / 1e6


def peak_rss_mb(pid: int) -> float:
    """The process's own high-water mark of resident memory, in MB."""
    return _status_kb(pid, "VmHWM") * 1024 / 1e6


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found
