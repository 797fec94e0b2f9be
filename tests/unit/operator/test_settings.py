"""The operator's settings and how it is run: the broker URL override, intervals, the
namespaces to watch, kopf's storage and finalizer, and the handlers registered."""

from __future__ import annotations

from datetime import timedelta

import pytest

from millstream.operator import main
from millstream.operator.handlers import build_registry
from millstream.operator.resources import broker_urls, labels
from millstream.operator.settings import (
    DEFAULT_BROKER_IMAGE,
    OperatorSettings,
    parse_broker_urls,
    settings_from,
)


def test_without_an_override_brokers_are_reached_by_their_pods_dns_names() -> None:
    settings = OperatorSettings()
    assert settings.urls("events", "streaming", 3) == broker_urls("events", "streaming", 3)
    assert settings.group_bootstrap("events", "streaming") == "http://events.streaming.svc:9092"


def test_the_override_lists_brokers_by_id() -> None:
    urls = parse_broker_urls(" http://127.0.0.1:9101/, http://127.0.0.1:9102 ,")
    assert urls == ("http://127.0.0.1:9101", "http://127.0.0.1:9102")
    settings = OperatorSettings(broker_urls=urls)
    assert settings.urls("events", "ns", 1) == ["http://127.0.0.1:9101"]
    assert settings.group_bootstrap("events", "ns") == "http://127.0.0.1:9101"
    with pytest.raises(ValueError, match="lists 2 brokers, Cluster 'events' has 3"):
        settings.urls("events", "ns", 3)


@pytest.mark.parametrize("text", ["127.0.0.1:9101", "ftp://host", "http://"])
def test_the_override_takes_http_urls_only(text: str) -> None:
    with pytest.raises(ValueError, match="MILLSTREAM_BROKER_URLS"):
        parse_broker_urls(text)


def test_settings_from_the_environment_and_flags() -> None:
    assert settings_from({}) == OperatorSettings()
    assert settings_from({"MILLSTREAM_BROKER_IMAGE": " "}).broker_image == DEFAULT_BROKER_IMAGE
    settings = settings_from(
        {"MILLSTREAM_BROKER_IMAGE": "registry/millstream:1", "MILLSTREAM_BROKER_URLS": "http://a"},
        drift_interval=2,
        group_refresh_interval=3,
        retry_delay=0.5,
    )
    assert settings.broker_image == "registry/millstream:1"
    assert settings.broker_urls == ("http://a",)
    assert settings.drift_interval == 2 and settings.retry_delay == 0.5
    # A refresh interval below the default minimum lowers the minimum with it.
    assert settings.group_refresh.interval == timedelta(seconds=3)
    assert settings.group_refresh.min_interval == timedelta(seconds=3)
    with pytest.raises(ValueError):
        settings_from({}, group_refresh_interval=2, group_refresh_min_interval=5)
    with pytest.raises(ValueError):
        OperatorSettings(drift_interval=0)


def test_namespaces_to_watch() -> None:
    assert main.namespaces_of(["a", "b"], False, "own") == main.Watch(("a", "b"))
    assert main.namespaces_of(None, False, "own") == main.Watch(("own",))
    assert main.namespaces_of(None, True, "own").clusterwide
    with pytest.raises(ValueError, match="--all-namespaces"):
        main.namespaces_of(None, False, None)
    with pytest.raises(ValueError):
        main.namespaces_of(["a"], True, None)


def test_kopf_keeps_its_state_in_millstream_annotations() -> None:
    settings = main.kopf_settings()
    assert settings.persistence.finalizer == "millstream.io/finalizer"
    assert settings.persistence.progress_storage.prefix == "millstream.io"  # type: ignore[attr-defined]
    assert settings.persistence.diffbase_storage.prefix == "millstream.io"  # type: ignore[attr-defined]
    assert settings.scanning.disabled


def test_the_registry_has_one_drift_check_per_cluster_and_none_per_topic() -> None:
    registry = build_registry(OperatorSettings(drift_interval=7))
    timers = registry._spawning.get_all_handlers()
    by_plural = {h.selector.any_name: h for h in timers if h.selector is not None}  # type: ignore[attr-defined]
    assert set(by_plural) == {"clusters", "consumergroups"}
    assert by_plural["clusters"].interval == 7  # type: ignore[attr-defined]
    assert by_plural["consumergroups"].interval == 5  # the refresh's min_interval
    changes = registry._changing.get_all_handlers()
    deletions = [h for h in changes if h.requires_finalizer]
    assert [h.selector.any_name for h in deletions] == ["topics"]  # type: ignore[union-attr]
    [watch] = registry._watching.get_all_handlers()
    assert watch.labels == {  # the StatefulSets the operator made, by their label
        "app.kubernetes.io/managed-by": labels("events")["app.kubernetes.io/managed-by"]
    }
