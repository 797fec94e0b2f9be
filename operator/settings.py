"""The operator's own settings: the broker image, how it reaches brokers, how often it checks.

Built by ``millstream operator`` (:mod:`millstream.cli.operator`) from its flags and
environment, and read by the handlers through the runtime. Pure: parsing only.

How the operator reaches brokers: in Kubernetes, broker N of Cluster ``events`` in namespace
``NS`` is ``http://events-N.events-brokers.NS.svc:9092``, a stable name the headless Service
gives each pod (:func:`~millstream.operator.resources.broker_urls`). Outside a cluster (tests,
development) there are no pods and no cluster DNS: ``MILLSTREAM_BROKER_URLS`` lists the brokers
by id instead (``http://127.0.0.1:9101,http://127.0.0.1:9102`` is broker 0, then broker 1), for
every Cluster the operator manages. These URLs are also what the operator pushes to the brokers
as the cluster's metadata, so clients follow them too. Never set it in a real deployment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from millstream import __version__
from millstream.operator import resources
from millstream.operator.status import RefreshSchedule

BROKER_IMAGE_ENV: Final = "MILLSTREAM_BROKER_IMAGE"
BROKER_URLS_ENV: Final = "MILLSTREAM_BROKER_URLS"
NAMESPACE_ENV: Final = "MILLSTREAM_OPERATOR_NAMESPACE"
# The chart's image when it sets none: one release, one image for operator and brokers.
DEFAULT_BROKER_IMAGE: Final = f"ghcr.io/millstream/millstream:{__version__}"


@dataclass(frozen=True, slots=True)
class OperatorSettings:
    broker_image: str = DEFAULT_BROKER_IMAGE
    # The test/development override of broker URLs, by broker id; None: cluster DNS.
    broker_urls: tuple[str, ...] | None = None
    # How often each Cluster's brokers are compared with the Topic resources (drift check).
    drift_interval: float = 30.0
    group_refresh: RefreshSchedule = field(default_factory=RefreshSchedule)
    # How soon a handler that could not finish (brokers not reachable yet) tries again.
    retry_delay: float = 5.0
    # How long one call to a broker may take.
    broker_timeout: float = 5.0

    def __post_init__(self) -> None:
        for name in ("drift_interval", "retry_delay", "broker_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")

    def urls(self, cluster: str, namespace: str, brokers: int) -> list[str]:
        """The URL of brokers 0 to ``brokers``-1 of a Cluster; ValueError when the override
        lists fewer."""
        if self.broker_urls is None:
            return resources.broker_urls(cluster, namespace, brokers)
        if len(self.broker_urls) < brokers:
            raise ValueError(
                f"{BROKER_URLS_ENV} lists {len(self.broker_urls)} brokers, "
                f"Cluster {cluster!r} has {brokers}"
            )
        return list(self.broker_urls[:brokers])

    def group_bootstrap(self, cluster: str, namespace: str) -> str:
        """Where consumer-group calls start: the client Service (the client then follows the
        cluster's metadata to each group's coordinator), or broker 0 of the override."""
        if self.broker_urls is not None:
            return self.broker_urls[0]
        return resources.bootstrap_url(cluster, namespace)


def parse_broker_urls(text: str) -> tuple[str, ...] | None:
    """``MILLSTREAM_BROKER_URLS``: comma-separated http(s) URLs, broker 0 first; empty: None."""
    urls = tuple(u.strip().rstrip("/") for u in text.split(",") if u.strip())
    if not urls:
        return None
    for url in urls:
        if not url.startswith(("http://", "https://")) or url[-3:] == "://":
            raise ValueError(f"{BROKER_URLS_ENV}: not an http:// or https:// URL: {url!r}")
    return urls


def settings_from(
    env: Mapping[str, str],
    *,
    drift_interval: float | None = None,
    group_refresh_interval: float | None = None,
    group_refresh_min_interval: float | None = None,
    retry_delay: float | None = None,
) -> OperatorSettings:
    """Settings from the environment and the command line's flags (None: the default)."""
    defaults = OperatorSettings()
    schedule = defaults.group_refresh
    interval = schedule.interval.total_seconds()
    if group_refresh_interval is not None:
        interval = group_refresh_interval
    minimum = min(schedule.min_interval.total_seconds(), interval)
    if group_refresh_min_interval is not None:
        minimum = group_refresh_min_interval
    return OperatorSettings(
        broker_image=env.get(BROKER_IMAGE_ENV, "").strip() or DEFAULT_BROKER_IMAGE,
        broker_urls=parse_broker_urls(env.get(BROKER_URLS_ENV, "")),
        drift_interval=defaults.drift_interval if drift_interval is None else drift_interval,
        retry_delay=defaults.retry_delay if retry_delay is None else retry_delay,
        group_refresh=RefreshSchedule(
            interval=timedelta(seconds=interval), min_interval=timedelta(seconds=minimum)
        ),
    )
