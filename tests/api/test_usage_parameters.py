"""Every bad parameter of /api/v1/usage/* is a 400 in OpenAI's error shape naming it."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.api.support import Api

SUMMARY = "/api/v1/usage/summary"
TREND = "/api/v1/usage/trend"
BREAKDOWN = "/api/v1/usage/breakdown"
CALLS = "/api/v1/usage/calls"
EXPORT = "/api/v1/usage/export"
ALL = (SUMMARY, TREND, BREAKDOWN, CALLS, EXPORT)


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# (endpoint, query, the parameter the error must name)
CASES: list[tuple[str, Any, str]] = [
    *((path, {"period": "2d"}, "period") for path in ALL),
    *((path, {"period": "7d", "start": "2026-01-01"}, "period") for path in ALL),
    *((path, {"start": "yesterday"}, "start") for path in ALL),
    *((path, {"end": "2026-13-40"}, "end") for path in ALL),
    *((path, {"tz": "Mars/Olympus_Mons"}, "tz") for path in ALL),
    *((path, {"start": "2026-02-01", "end": "2026-01-01"}, "end") for path in ALL),
    *((path, {"call_type": "batch"}, "call_type") for path in ALL),
    *((path, {"model_category": "video"}, "model_category") for path in ALL),
    (SUMMARY, {"period": "7"}, "period"),
    (SUMMARY, {"period": ""}, "period"),
    (SUMMARY, {"start": "2026-01-01", "end": "2026-01-01"}, "end"),
    (SUMMARY, {"start": "2026-01-01T10:00:00Z", "end": "2026-01-01T09:59:59Z"}, "end"),
    # 02:30 does not exist in New York that day: it is read as 03:30 EDT, after the end.
    (SUMMARY, {"start": "2026-03-08T02:30:00", "end": "2026-03-08T03:15:00",
               "tz": "America/New_York"}, "end"),
    (SUMMARY, {"start": "2026-03-08T02:30:00", "end": "2026-03-08T03:30:00",
               "tz": "America/New_York"}, "end"),
    (SUMMARY, {"start": "2999-01-01"}, "start"),  # the range would end (now) before it
    (SUMMARY, {"start": "2026-02-30"}, "start"),
    (SUMMARY, {"start": "2026-01-01T25:00:00Z"}, "start"),
    (SUMMARY, {"end": "1764000000"}, "end"),
    (SUMMARY, {"start": "2000-01-01", "end": "2026-01-01"}, "start"),  # over ten years
    (SUMMARY, {"tz": "Asia"}, "tz"),
    (SUMMARY, {"tz": "../../etc/passwd"}, "tz"),
    (SUMMARY, {"tz": "UTC\x00"}, "tz"),
    (SUMMARY, {"tz": "A" * 300}, "tz"),
    (SUMMARY, {"call_type": ["model", "nope"]}, "call_type"),
    (SUMMARY, {"api_key_id": ""}, "api_key_id"),
    (SUMMARY, {"api_key_id": "k" * 201}, "api_key_id"),
    (SUMMARY, {"model": ""}, "model"),
    (SUMMARY, {"model": "m" * 201}, "model"),
    (SUMMARY, {"model": [f"m{i}" for i in range(201)]}, "model"),
    # PostgreSQL refuses NUL characters: they must be a 400, not a database error.
    (SUMMARY, {"model": "a\x00b"}, "model"),
    (BREAKDOWN, {"api_key_id": ["ok", "a\x00b"]}, "api_key_id"),
    (SUMMARY, {"upstream_model": ""}, "upstream_model"),
    (CALLS, {"upstream_model": "u" * 201}, "upstream_model"),
    (BREAKDOWN, {"upstream_model": ["ok", "a\x00b"]}, "upstream_model"),
    (TREND, {"metric": "units"}, "unit"),
    (TREND, {"metric": "units", "unit": "token"}, "unit"),
    (EXPORT, {"what": "trend", "metric": "units"}, "unit"),
    # Dates no calendar arithmetic can reach: 400, never an overflow.
    (SUMMARY, {"start": "0001-01-01", "end": "0001-01-02"}, "start"),
    (SUMMARY, {"start": "0001-01-01T00:00:00Z", "end": "0001-01-02T00:00:00Z"}, "start"),
    (SUMMARY, {"end": "0001-01-02T00:00:00Z"}, "end"),
    (SUMMARY, {"start": "9999-12-31", "end": "9999-12-31T23:59:00-05:00",
               "tz": "America/New_York"}, "start"),
    (TREND, {"start": "0001-01-01", "end": "0001-01-05"}, "start"),
    (TREND, {"metric": "calls"}, "metric"),
    (TREND, {"metric": ""}, "metric"),
    (TREND, {"granularity": "week"}, "granularity"),
    (TREND, {"granularity": "minute", "period": "3d"}, "granularity"),
    (TREND, {"granularity": "hour", "start": "2025-01-01", "end": "2026-01-01"},
     "granularity"),
    (TREND, {"group_by": "owner"}, "group_by"),
    (BREAKDOWN, {"group_by": "owner"}, "group_by"),
    (BREAKDOWN, {"group_by": "model,api_key,call_type"}, "group_by"),
    (BREAKDOWN, {"group_by": ["model", "model"]}, "group_by"),
    (BREAKDOWN, {"group_by": ""}, "group_by"),
    (BREAKDOWN, {"sort": "name"}, "sort"),
    (BREAKDOWN, {"sort": "-api_key", "group_by": "model"}, "sort"),
    (CALLS, {"limit": 0}, "limit"),
    (CALLS, {"limit": 1001}, "limit"),
    (CALLS, {"limit": "ten"}, "limit"),
    (CALLS, {"cursor": "not a cursor!"}, "cursor"),
    (CALLS, {"cursor": _cursor("12345")}, "cursor"),
    (CALLS, {"cursor": _cursor("abc:some-id")}, "cursor"),
    (CALLS, {"cursor": base64.urlsafe_b64encode(b"\xff\xfe:x").decode()}, "cursor"),
    (CALLS, {"cursor": _cursor("1" * 30 + ":some-id")}, "cursor"),
    (CALLS, {"cursor": _cursor("-" + "9" * 25 + ":some-id")}, "cursor"),
    (CALLS, {"cursor": _cursor("1764000000000000:a\x00b")}, "cursor"),
    (CALLS, {"cursor": _cursor("1764000000000000:" + "x" * 129)}, "cursor"),
    (EXPORT, {"format": "pdf"}, "format"),
    (EXPORT, {"format": ""}, "format"),
    (EXPORT, {"what": "everything"}, "what"),
    (EXPORT, {"what": "trend", "metric": "calls"}, "metric"),
    (EXPORT, {"what": "trend", "granularity": "week"}, "granularity"),
    (EXPORT, {"what": "trend", "group_by": "owner"}, "group_by"),
    (EXPORT, {"what": "breakdown", "group_by": "model,api_key,call_type"}, "group_by"),
]


def _id(case: tuple[str, Any, str]) -> str:
    path, query, param = case
    return f"{path.rsplit('/', 1)[1]}-{param}-{str(query)[:40]}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_a_bad_parameter_is_a_400_naming_it(shared_api: Api, case: tuple[str, Any, str]) -> None:
    path, query, param = case
    response = shared_api.get(path, query)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert isinstance(error["message"], str) and error["message"]


def test_good_parameters_of_every_kind_are_accepted(shared_api: Api) -> None:
    """The other side of the coin: the valid spellings of the same parameters answer 200."""
    good: list[tuple[str, Any]] = [
        (SUMMARY, {}),
        (SUMMARY, {"period": "1d", "tz": "Asia/Kathmandu"}),
        (SUMMARY, {"start": "2026-01-01", "end": "2026-01-08", "tz": "America/New_York"}),
        (SUMMARY, {"start": "2026-01-01T08:00:00Z", "end": "2026-01-01T09:30:00+01:00"}),
        (SUMMARY, {"start": "2026-01-01T08:00:00", "tz": "Asia/Shanghai"}),
        (SUMMARY, {"end": "2026-01-01"}),
        (SUMMARY, {"call_type": ["model", "internal"], "model_category": "chat",
                   "api_key_id": ["a", "b"], "model": "m"}),
        (TREND, {"metric": "cost", "granularity": "hour", "group_by": "api_key"}),
        (TREND, {"granularity": "minute", "period": "1d"}),
        (BREAKDOWN, {"group_by": "api_key,model", "sort": "cost"}),
        (BREAKDOWN, {"group_by": ["call_type", "model_category"], "sort": "-model_category"}),
        (CALLS, {"limit": 1000}),
        (EXPORT, {"format": "json", "what": "summary"}),
    ]
    for path, query in good:
        response = shared_api.get(path, query)
        assert response.status_code == 200, (path, query, response.text)


def test_ranges_are_absolute_instants_from_the_calendar_in_tz(shared_api: Api) -> None:
    """docs/api.md, "Time ranges, exactly", through the API."""
    def edges(query: dict[str, str]) -> list[str]:
        summary = shared_api.ok(SUMMARY, query)
        return [summary[k] for k in ("start", "end", "previous_start", "previous_end")]

    # 11 hours of New York's spring-forward day: the previous period lasts 11 hours too.
    assert edges({"start": "2026-03-08T00:00", "end": "2026-03-08T12:00",
                  "tz": "America/New_York"}) == [
        "2026-03-08T00:00:00-05:00", "2026-03-08T12:00:00-04:00",
        "2026-03-07T13:00:00-05:00", "2026-03-08T00:00:00-05:00"]
    # Havana skips midnight on 2026-03-08: end alone covers the 7 whole days before it.
    assert edges({"end": "2026-03-08", "tz": "America/Havana"}) == [
        "2026-03-01T00:00:00-05:00", "2026-03-08T01:00:00-04:00",
        "2026-02-22T00:00:00-05:00", "2026-03-01T00:00:00-05:00"]
    # A start in the gap moves forward by it: 02:30 is 03:30 EDT.
    assert edges({"start": "2026-03-08T02:30", "end": "2026-03-08T04:00",
                  "tz": "America/New_York"})[:2] == [
        "2026-03-08T03:30:00-04:00", "2026-03-08T04:00:00-04:00"]


# Each parameter where it is read (the common filters are parsed once for every endpoint).
READ_AT = [*((SUMMARY, name) for name in ("period", "start", "end", "tz", "call_type",
                                          "model_category", "model", "api_key_id")),
           *((TREND, name) for name in ("metric", "granularity", "group_by")),
           (BREAKDOWN, "group_by"), (BREAKDOWN, "sort"), (CALLS, "limit"), (CALLS, "cursor"),
           *((EXPORT, name) for name in ("format", "what", "metric", "granularity"))]
GARBAGE = ["%ff", "\u2603", "-1", "0", "1e309", "nan", "[]", "'", "9" * 40,
           "2026-01-01T00:00:00+99:99", "0000-00-00", "P1D"]


def test_nothing_in_a_garbage_query_string_is_a_server_error(shared_api: Api) -> None:
    for path, name in READ_AT:
        for value in GARBAGE:
            query = {"what": "trend", name: value} if path == EXPORT else {name: value}
            response = shared_api.get(path, query)
            assert response.status_code in (200, 400), (path, name, value, response.text)
            if response.status_code == 400:
                assert response.json()["error"]["param"] == name, (path, name, value)
