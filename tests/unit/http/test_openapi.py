"""The OpenAPI document is valid and describes every route the app serves."""

from __future__ import annotations

from pathlib import Path

import pytest
from openapi_spec_validator import validate

from millstream.broker.groups.coordinator import GroupCoordinator
from millstream.broker.http.app import make_app
from millstream.broker.http.metrics import BrokerMetrics
from millstream.broker.http.openapi import openapi_document
from millstream.broker.http.schemas import CONFIG_BOUNDS, CONFIG_EXCLUDED
from millstream.broker.storage.config import TopicConfig
from millstream.broker.storage.log_manager import LogManager
from millstream.errors import InvalidConfig


def test_document_is_valid_openapi() -> None:
    validate(openapi_document())  # raises on any schema violation


def test_every_route_is_documented(tmp_path: Path) -> None:
    logs = LogManager(tmp_path)
    app = make_app(logs, GroupCoordinator(logs), BrokerMetrics())
    served = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    paths = openapi_document()["paths"]
    documented = {
        (path, method) for path, item in paths.items() for method in item if method != "parameters"
    }
    assert served == documented


def test_config_bounds_are_the_ones_storage_enforces() -> None:
    defaults = TopicConfig()
    assert set(CONFIG_BOUNDS) == set(defaults.to_mapping())
    for name, (low, high) in CONFIG_BOUNDS.items():
        defaults.with_updates({name: low})
        defaults.with_updates({name: high})
        for outside in (low - 1, high + 1, CONFIG_EXCLUDED.get(name)):
            if outside is not None:
                with pytest.raises(InvalidConfig):
                    defaults.with_updates({name: outside})
