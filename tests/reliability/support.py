"""Real ``tallygate serve`` processes under load, and what their ledger holds afterwards.

A gateway runs as a subprocess (so it can be sent SIGTERM or SIGKILL, and its memory and open
files read from /proc), with its settings in the environment and its routes in a TOML file;
its stderr goes to a file, never a pipe that a busy server could fill. The load comes from
client threads that remember, for each call, its ``x-request-id``, its status and whether
the whole answer arrived; the ledger is then read straight from the database.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from tallygate.app import create_app
from tallygate.config import Route, load_settings
from tallygate.keys.schemas import KeyCreate
from tallygate.keys.service import KeyService
from tallygate.ledger.maintenance import check_rollups
from tallygate.ledger.service import Ledger
from tallygate.store.database import Database
from tests.conftest import RECENT
from tests.servers import free_port, serve_app

ADMIN = "tga-reliability-admin-token"
CHAT = "cltech/deepseek-r1-32b"


@dataclass
class ServedGateway:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def tcp_connections(self) -> int:
        """Established TCP connections of the process (sockets among its open files that
        the kernel lists as ESTABLISHED)."""
        inodes = set()
        for fd in os.listdir(f"/proc/{self.process.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{self.process.pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        established = 0
        for table in ("tcp", "tcp6"):
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "01" and parts[9] in inodes:
                    established += 1
        return established


def routes_toml(upstream_url: str, *, api_key_env: str | None = None) -> str:
    credential = f'api_key_env = "{api_key_env}"\n' if api_key_env else ""
    return (f'[[routes]]\nmodel = "{CHAT}"\nbase_url = "{upstream_url}/v1"\n'
            f'upstream_model = "deepseek-r1-32b"\ncategory = "chat"\n{credential}'
            '[routes.price]\ninput_per_million = "0.50"\noutput_per_million = "2.00"\n')


def start_gateway(tmp_path: Path, database_url: str, upstream_url: str, *,
                  env: dict[str, str] | None = None, api_key_env: str | None = None,
                  more_routes: dict[str, str] | None = None,
                  name: str = "gateway") -> ServedGateway:
    """``tallygate serve`` on a free port, ready to answer. ``more_routes``: public model
    name → upstream base URL."""
    config = tmp_path / f"{name}.toml"
    config.write_text(routes_toml(upstream_url, api_key_env=api_key_env) + "".join(
        f'[[routes]]\nmodel = "{model}"\nbase_url = "{base}/v1"\n'
        for model, base in (more_routes or {}).items()))
    port = free_port()
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith("TALLYGATE_") or k.startswith("TALLYGATE_TEST_")}
    environment |= {"TALLYGATE_DATABASE_URL": database_url, "TALLYGATE_ADMIN_TOKEN": ADMIN,
                    "TALLYGATE_FLUSH_INTERVAL_MS": "50", **(env or {})}
    log_path = tmp_path / f"{name}-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tallygate", "--config", str(config), "serve", "--port",
             str(port)], env=environment, stdout=log, stderr=subprocess.STDOUT)
    served = ServedGateway(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the gateway exited: {served.log()}")
        try:
            if httpx.get(f"{served.url}/healthz", timeout=1).status_code == 200:
                return served
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    served.stop(signal.SIGKILL)
    raise AssertionError(f"the gateway did not start: {served.log()}")


@contextmanager
def app_in_process(database_url: str, routes: list[Route], **settings: Any
                   ) -> Iterator[tuple[Any, str]]:
    """The app in this process (a thread), for faults that need no signal: the app (its
    parts are on ``app.state`` once started) and its base URL."""
    app = create_app(load_settings(database_url=database_url, admin_token=ADMIN, routes=routes,
                                   **({"flush_interval_ms": 10, "key_cache_seconds": 0}
                                      | settings)))
    with serve_app(app) as url:
        yield app, url


@contextmanager
def gateway_in_process(database_url: str, routes: list[Route], **settings: Any
                       ) -> Iterator[str]:
    with app_in_process(database_url, routes, **settings) as (_, url):
        yield url


def record_of(url: str, request_id: str, timeout: float = 10) -> dict[str, Any]:
    """The call record of ``request_id``, through the admin API, once it is written."""
    def find() -> dict[str, Any] | None:
        response = httpx.get(f"{url}/api/v1/usage/calls", timeout=10,
                             params={"period": RECENT, "limit": 1000},
                             headers={"Authorization": f"Bearer {ADMIN}"})
        response.raise_for_status()
        return next((r for r in response.json()["data"]
                     if (r["metadata"] or {}).get("request_id") == request_id), None)
    found: dict[str, Any] = wait_until(find, timeout=timeout)
    return found


def new_key(database_url: str, **fields: Any) -> tuple[str, str]:
    db = Database(database_url)
    try:
        created = KeyService(db).create(KeyCreate(name=fields.pop("name", "load"), **fields),
                                        "test")
    finally:
        db.dispose()
    return created.id, created.key


@dataclass(frozen=True)
class Outcome:
    """One call as the client saw it: ``complete`` means the whole answer arrived."""

    request_id: str | None
    status: int | None
    complete: bool
    stream: bool
    finished_at: float  # time.monotonic() when the answer ended (or failed)
    error: str | None = None


def chat_body(number: int, *, stream: bool, fake: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    body: dict[str, Any] = {"model": CHAT, "max_tokens": 40,
                            "messages": [{"role": "user", "content": f"call {number}"}]}
    if stream:
        body["stream"] = True
    if fake:
        body["fake"] = fake
    return body


def call_once(client: httpx.Client, key: str, number: int, *, stream: bool,
              fake: dict[str, Any] | None = None) -> Outcome:
    headers = {"Authorization": f"Bearer {key}"}
    body = chat_body(number, stream=stream, fake=fake)
    request_id = status = None
    try:
        with client.stream("POST", "/v1/chat/completions", json=body,
                           headers=headers) as response:
            request_id = response.headers.get("x-request-id")
            status = response.status_code
            content = b"".join(response.iter_raw())
        complete = (not stream or status != 200
                    or content.rstrip().endswith(b"data: [DONE]"))
        return Outcome(request_id, status, complete, stream, time.monotonic())
    except httpx.HTTPError as exc:
        return Outcome(request_id, status, False, stream, time.monotonic(),
                       exc.__class__.__name__)


@dataclass
class Load:
    """Client threads calling the gateway until stopped; every outcome is kept."""

    url: str
    key: str
    threads: int = 8
    stream_every: int = 2  # every n-th call of a thread is streamed
    fake: dict[str, Any] | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for number in range(self.threads):
            worker = threading.Thread(target=self._run, args=(number,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)
            assert not worker.is_alive(), "a client thread is stuck"
        return self.outcomes

    def completed_ok(self) -> int:
        with self._lock:
            return sum(1 for o in self.outcomes if o.status == 200 and o.complete)

    def wait_for_calls(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.completed_ok() < count:
            assert time.monotonic() < deadline, f"only {self.completed_ok()} calls answered"
            time.sleep(0.02)

    def _run(self, thread: int) -> None:
        number = 0
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                number += 1
                outcome = call_once(client, self.key, thread * 1_000_000 + number,
                                    stream=number % self.stream_every == 0, fake=self.fake)
                with self._lock:
                    self.outcomes.append(outcome)
                if outcome.error is not None and outcome.status is None:
                    time.sleep(0.01)  # the server is away: do not spin


def ledger_request_ids(database_url: str) -> list[str]:
    """``metadata.request_id`` of every call record (repeated if a call were stored twice
    under two ids)."""
    return [row[0] for row in ledger_rows(database_url)]


def ledger_rows(database_url: str) -> list[tuple[str, int, bool]]:
    """(request id, status, estimated) of every call record with a request id."""
    db = Database(database_url)
    try:
        with db.read() as conn:
            rows = conn.execute(text("SELECT metadata, status_code, estimated FROM calls"))
            found = []
            for metadata, status, estimated in rows:
                tags = json.loads(metadata) if isinstance(metadata, str) else metadata
                if tags and "request_id" in tags:
                    found.append((tags["request_id"], status, bool(estimated)))
            return found
    finally:
        db.dispose()


def assert_each_answered_call_recorded_once(outcomes: list[Outcome],
                                            request_ids: list[str]) -> int:
    """Every call answered 200 in full is in the ledger exactly once; no call is there
    twice. Returns how many such calls there were."""
    assert len(request_ids) == len(set(request_ids)), "a call is in the ledger twice"
    stored = set(request_ids)
    answered = [o for o in outcomes if o.status == 200 and o.complete]
    missing = [o for o in answered if o.request_id not in stored]
    assert not missing, f"{len(missing)} of {len(answered)} answered calls are not in the " \
                        f"ledger, e.g. {missing[:3]}"
    return len(answered)


def assert_rollups_match_raw(database_url: str) -> None:
    """The rollups hold each stored call once: rebuilt from the raw records, they are equal."""
    db = Database(database_url)
    try:
        report = check_rollups(Ledger(db))
    finally:
        db.dispose()
    assert report.ok, report.differences[:5]


def wait_until(condition: Any, timeout: float = 30, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(interval)


def iter_lines(path: Path) -> Iterator[str]:
    yield from path.read_text(errors="replace").splitlines()
