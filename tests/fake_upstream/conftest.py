"""The fake upstream served over real HTTP, for the official SDKs to talk to directly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tallygate.fake_upstream import FakeSettings, FakeUpstream
from tests.servers import serve_app


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    with serve_app(FakeUpstream(FakeSettings(chunks=4))) as url:
        yield url
