"""The fake upstream served over real HTTP, for the official SDKs to talk to directly."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tallygate.fake_upstream import FakeSettings, FakeUpstream
from tests.servers import serve_app


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    with serve_app(FakeUpstream(FakeSettings(chunks=4))) as url:
        yield url


@pytest.fixture(scope="module")
def oai(fake_url: str) -> Iterator[openai.OpenAI]:
    """The official openai SDK, pointed straight at the fake upstream."""
    with openai.OpenAI(base_url=f"{fake_url}/v1", api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def claude(fake_url: str) -> Iterator[Any]:
    """The official anthropic SDK (when installed), pointed straight at the fake upstream."""
    anthropic = pytest.importorskip("anthropic")
    with anthropic.Anthropic(base_url=fake_url, api_key="unused", max_retries=0) as client:
        yield client
