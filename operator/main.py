"""Running the operator: kopf, standalone, over the handlers of :mod:`.handlers`.

Called by ``millstream operator`` (:mod:`millstream.cli.operator`), which the Helm chart's
Deployment runs as ``millstream operator --namespace=NS`` (or ``--all-namespaces``) with
``--liveness=http://0.0.0.0:8080/healthz``.

- **Standalone**: one operator per set of resources, no kopf peering (the chart runs exactly
  one replica, and Recreate upgrades keep it at one).
- **Progress in annotations**: kopf keeps its handler progress and the last handled spec in
  ``millstream.io/...`` annotations on each resource, and its finalizer is
  ``millstream.io/finalizer``; nothing is stored anywhere else.
- **No scanning**: kopf serves exactly the namespaces it is given (or all) and the resources
  the API server serves when it starts, and does not watch Namespaces and CRDs to follow
  changes, which would take cluster-wide rights beyond the chart's RBAC. Helm installs the
  CRDs before the operator starts; after adding or upgrading CRDs, restart the operator.
- **Events**: warnings and errors of the handlers are posted as Kubernetes events on the
  resource they concern, so that ``kubectl describe`` shows them; routine messages are only
  logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import kopf

from millstream.operator.handlers import build_registry
from millstream.operator.settings import OperatorSettings

PREFIX = "millstream.io"
FINALIZER = f"{PREFIX}/finalizer"


@dataclass(frozen=True, slots=True)
class Watch:
    """What the operator watches: these namespaces, or all of them (``namespaces`` empty)."""

    namespaces: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if any(not n for n in self.namespaces):
            raise ValueError("namespace names must not be empty")

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


def kopf_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    # Serve the namespaces named and the CRDs found at start, without watching namespaces and
    # CRDs come and go: that would need cluster-wide rights the chart does not grant.
    settings.scanning.disabled = True
    # A watch the server keeps open forever can go silent on a broken connection: reopen it
    # every few minutes so that such a stall cannot last.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    return settings


def run(
    settings: OperatorSettings,
    watch: Watch,
    *,
    liveness: str | None = None,
    verbose: bool = False,
    debug: bool = False,
) -> None:
    """Run until SIGINT or SIGTERM (kopf handles both)."""
    kopf.configure(verbose=verbose, debug=debug)
    kopf.run(
        registry=build_registry(settings),
        settings=kopf_settings(),
        standalone=True,
        clusterwide=watch.clusterwide,
        namespaces=list(watch.namespaces),
        liveness_endpoint=liveness,
    )


def namespaces_of(flags: Sequence[str] | None, all_namespaces: bool, default: str | None) -> Watch:
    """The namespaces to watch, from ``--namespace`` (repeatable), ``--all-namespaces`` and
    ``MILLSTREAM_OPERATOR_NAMESPACE`` (the operator's own, by default)."""
    if all_namespaces:
        if flags:
            raise ValueError("--namespace and --all-namespaces exclude each other")
        return Watch()
    chosen = tuple(flags or ([default] if default else []))
    if not chosen:
        raise ValueError(
            "say which namespaces to watch: --namespace=NS (repeatable) or --all-namespaces"
        )
    return Watch(chosen)
