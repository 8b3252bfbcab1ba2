"""Schemathesis against tallygate's own OpenAPI document: every ``/api/v1`` operation, with
the admin token, gets generated valid and invalid input; no answer is a 5xx, and every answer
conforms to the document (status, content type, headers, body schema).

About 50 examples an operation keep the whole run under a minute on the 2-core machine.
The examples are the same on every run (``TALLYGATE_FUZZ_EXAMPLES`` for more, and fresh ones).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from tallygate.app import create_app
from tallygate.config import load_settings
from tallygate.domain.records import CallRecord
from tallygate.keys.schemas import KeyCreate
from tallygate.keys.service import KeyService
from tallygate.ledger.service import Ledger
from tallygate.store.database import Database
from tests.servers import serve_app

ADMIN = "tga-schemathesis-admin"
# The same examples on every run, so CI's verdict is reproducible; for a deeper search with
# fresh examples: TALLYGATE_FUZZ_EXAMPLES=2000 .venv/bin/pytest tests/security/test_openapi_fuzz.py
EXAMPLES = int(os.environ.get("TALLYGATE_FUZZ_EXAMPLES", "50"))
DERANDOMIZE = "TALLYGATE_FUZZ_EXAMPLES" not in os.environ


def seed(db: Database) -> None:
    """Keys and calls, so that listings, filters and exports have something to show."""
    keys = KeyService(db)
    key_ids = [keys.create(KeyCreate(name=f"fuzz {n}", rpm_limit=60), "test").id
               for n in range(2)]
    now = datetime.now(UTC)
    Ledger(db).store([CallRecord(
        id=f"fuzz-{i}", ts_us=int((now - timedelta(minutes=7 * i)).timestamp() * 1e6),
        model=("cltech/deepseek-r1-32b", "bge-m3")[i % 2], call_type="model",
        api_key_id=key_ids[i % 2], model_category=("chat", "embedding")[i % 2],
        input_tokens=10 * i, output_tokens=i, total_tokens=11 * i, cost_nano=1000 * i,
        latency_ms=100 + i, metadata={"team": "fuzz"}) for i in range(200)])


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path: Path = tmp_path_factory.mktemp("openapi") / "ledger.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    seed(db)
    app = create_app(load_settings(database_url=db.url, admin_token=ADMIN))
    with serve_app(app) as url:
        yield url
    db.dispose()


# The document as the app serves it at /openapi.json (building it needs no database).
DOCUMENT = create_app(load_settings(database_url="sqlite:///:memory:",
                                    admin_token=ADMIN)).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT).include(path_regex=r"^/api/v1/")


# Checks left out, each for a reason of its own:
# - positive_data_acceptance: tallygate validates beyond what a schema can say (a price must be
#   in the ledger's currency, a discount a decimal string); and the document does not yet
#   carry the filters' own bounds (a model or key id of 1-200 characters, api/filters.py) nor
#   the events body (api/usage.py reads it raw). Rejections there are 400s, checked below.
EXCLUDED = [checks.positive_data_acceptance]
# A query string has no types: `model=false` is a model name like any other, so "negative"
# query values are not negative at all; the filters check their values themselves (400).
EXCLUDED_FOR_QUERIES = [checks.negative_data_rejection]
# Known deviations of one operation, until fixed (see the final report of issue 6):
KNOWN: dict[str, list[Any]] = {}


def openai_error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every error answer of the app, documented or not, is OpenAI's error shape."""
    if 400 <= response.status_code < 500 and response.status_code != 405:
        body = response.json()
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "code", "param"}, body
    return None


# The HTTP server's own answer to a request it cannot parse (a query string of 100 KB):
# given before the app sees the request, so neither the app nor its document has a say.
UNPARSEABLE = "Invalid HTTP request received."


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE,
          suppress_health_check=list(HealthCheck))
def test_every_api_operation_conforms(case: Any, base_url: str) -> None:
    label = f"{case.method.upper()} {case.path}"
    excluded = EXCLUDED + KNOWN.get(label, []) + (
        EXCLUDED_FOR_QUERIES if case.method.upper() == "GET" else [])
    headers = {"Authorization": f"Bearer {ADMIN}"}
    response = case.call(base_url=base_url, headers=headers)
    if response.status_code == 400 and response.text == UNPARSEABLE:
        return
    case.validate_response(response, headers=headers, excluded_checks=excluded,
                           additional_checks=[openai_error_shape])


def test_a_wrong_method_names_every_method_of_the_path(base_url: str) -> None:
    import httpx

    answer = httpx.put(f"{base_url}/api/v1/keys", headers={"Authorization": f"Bearer {ADMIN}"},
                       timeout=30)
    assert answer.status_code == 405
    assert set(answer.headers["allow"].split(", ")) >= {"GET", "POST"}
    assert set(answer.json()) == {"error"}
