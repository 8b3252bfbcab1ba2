"""A fake upstream in this process, for the gateway under test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tallygate.fake_upstream import FakeSettings, FakeUpstream
from tests.servers import serve_app


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serve_app(FakeUpstream(FakeSettings(chunks=4))) as url:
        yield url
