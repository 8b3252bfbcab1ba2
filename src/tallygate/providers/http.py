"""Paged GETs to a provider's admin API: every page followed, 429 and 5xx retried.

The admin key goes in a header and nowhere else: errors name the environment variable it
came from, never the key, and the provider's own error text is quoted only with the key
removed from it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

log = logging.getLogger("tallygate.providers")
MAX_PAGES = 1000  # a provider that keeps answering has_more is stopped, not followed for ever


class ProviderError(RuntimeError):
    """A provider's report could not be fetched; the message says which and why (never the
    admin key)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries of 429, 5xx and failed connections, ``first_backoff_s`` doubling
    (at most ``max_backoff_s``) unless the answer's ``Retry-After`` says how long."""

    max_attempts: int = 5
    first_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    timeout_s: float = 30.0


Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to ask one provider: its name (for messages), base URL, auth headers and
    the environment variable its key came from."""

    provider: str
    base_url: str
    headers: dict[str, str]
    key_env: str
    secret: str

    def scrub(self, text: str) -> str:
        return text.replace(self.secret, "[admin key]") if self.secret else text


async def pages(endpoint: Endpoint, path: str, params: list[tuple[str, str]], *,
                client: httpx.AsyncClient, retry: RetryPolicy,
                sleep: Sleep = asyncio.sleep) -> AsyncIterator[dict[str, Any]]:
    """Every page of a paged report: ``page=<next_page>`` until ``has_more`` is false."""
    page: str | None = None
    for _ in range(MAX_PAGES):
        query = params if page is None else [*params, ("page", page)]
        body = await _get(endpoint, path, query, client=client, retry=retry, sleep=sleep)
        yield body
        page = body.get("next_page")
        if not body.get("has_more") or not page:
            return
    raise ProviderError(f"provider {endpoint.provider}: {path} kept answering has_more "
                        f"after {MAX_PAGES} pages")


async def _get(endpoint: Endpoint, path: str, query: list[tuple[str, str]], *,
               client: httpx.AsyncClient, retry: RetryPolicy, sleep: Sleep) -> dict[str, Any]:
    where = f"provider {endpoint.provider}: GET {path}"
    for attempt in range(1, retry.max_attempts + 1):
        wait: float | None = None
        try:
            response = await client.get(endpoint.base_url + path,
                                        params=tuple(query),
                                        headers=endpoint.headers, timeout=retry.timeout_s)
        except httpx.HTTPError as exc:
            # The class, not the text: the text may quote the request (and its headers).
            problem = f"failed ({exc.__class__.__name__})"
        else:
            status = response.status_code
            if status in (401, 403):
                raise ProviderError(f"{where}: the admin key was refused ({status}); check "
                                    f"the key in the environment variable {endpoint.key_env}")
            if 200 <= status < 300:
                return _json_of(response, where)
            problem = f"answered {status}"
            if status != 429 and status < 500:
                raise ProviderError(f"{where} {problem}: "
                                    f"{endpoint.scrub(_error_text(response))}")
            wait = _retry_after(response)
        if attempt == retry.max_attempts:
            raise ProviderError(f"{where} {problem}, {attempt} times; giving up")
        backoff = min(retry.max_backoff_s, retry.first_backoff_s * 2 ** (attempt - 1))
        delay = min(retry.max_backoff_s, wait) if wait is not None else backoff
        log.warning("%s %s; trying again in %.1f s", where, problem, delay)
        await sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _json_of(response: httpx.Response, where: str) -> dict[str, Any]:
    try:
        # Decimals, not floats: OpenAI's cost amounts are JSON numbers.
        body = json.loads(response.content, parse_float=Decimal)
    except ValueError:
        raise ProviderError(f"{where}: the answer is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise ProviderError(f"{where}: the answer has no data list")
    return body


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        message = body.get("error", {}).get("message")
        if isinstance(message, str):
            return message[:300]
    except (ValueError, AttributeError):
        pass
    return response.text[:300]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
