"""A custom service route's settings are checked when the configuration is loaded."""

from __future__ import annotations

from typing import Any

import pytest

from tallygate.config import ConfigError, load_settings

BASE = "http://upstream.invalid/v1"


def settings_with(*routes: dict[str, Any]) -> Any:
    return load_settings(routes=[{"base_url": BASE} | route for route in routes])


def test_a_service_route_with_a_path_unit_and_pointer_is_accepted() -> None:
    settings = settings_with({"model": "ocr", "kind": "service", "path": "/v1/ocr",
                              "unit": "page", "units_from": "/usage/pages"},
                             {"model": "ping", "kind": "service", "path": "/v1/ping"})
    assert [route.path for route in settings.routes] == ["/v1/ocr", "/v1/ping"]


@pytest.mark.parametrize(("route", "named"), [
    ({"path": "/v1/ocr"}, 'kind = "service"'),
    ({"kind": "service", "units_from": "/pages", "unit": "page"}, "units_from: only a route "
                                                                  "with a path"),
    ({"kind": "service", "path": "/v1/ocr", "units_from": "/pages"}, "unit: required"),
    ({"kind": "service", "path": "/v1/rerank"}, "one of the gateway's own endpoints"),
    ({"kind": "service", "path": "/v1/models"}, "one of the gateway's own endpoints"),
    ({"kind": "service", "path": "/v1/messages"}, "one of the gateway's own endpoints"),
    ({"kind": "service", "path": "/ocr"}, "path"),
    ({"kind": "service", "path": "/v1/ocr", "units_from": "pages", "unit": "page"},
     "units_from"),
])
def test_a_wrong_service_route_is_refused_naming_the_field(route: dict[str, Any],
                                                           named: str) -> None:
    with pytest.raises(ConfigError, match="routes.0") as raised:
        settings_with({"model": "svc"} | route)
    assert named in str(raised.value)


def test_two_routes_cannot_serve_one_path() -> None:
    with pytest.raises(ConfigError, match="path /v1/ocr is served by another route"):
        settings_with({"model": "a", "kind": "service", "path": "/v1/ocr"},
                      {"model": "b", "kind": "service", "path": "/v1/ocr"})
