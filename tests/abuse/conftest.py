"""One fake upstream and one gateway per module, each a real process on 127.0.0.1; a SQLite
ledger file the tests read straight."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tallygate.store.database import Database
from tests.abuse.support import start_fake_upstream
from tests.reliability.support import ServedGateway, start_gateway
from tests.servers import free_port

# Small enough that a test sees it act, large enough that a loaded CI machine never trips a
# well-behaved client on it.
CLIENT_IDLE_S = 1.0


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("abuse")


@pytest.fixture(scope="module")
def upstream_url(workdir: Path) -> Iterator[str]:
    port = free_port()
    process = start_fake_upstream(port, workdir / "upstream.log")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="module")
def database_url(workdir: Path) -> Iterator[str]:
    db = Database(f"sqlite:///{workdir / 'ledger.db'}")
    db.upgrade()
    db.dispose()
    yield db.url


@pytest.fixture(scope="module")
def gateway(workdir: Path, database_url: str, upstream_url: str) -> Iterator[ServedGateway]:
    served = start_gateway(workdir, database_url, upstream_url,
                           env={"TALLYGATE_CLIENT_IDLE_TIMEOUT_S": str(CLIENT_IDLE_S)})
    yield served
    served.stop()
