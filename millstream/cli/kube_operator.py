"""``millstream operator``: run the Kubernetes operator (``millstream.operator``).

Called by :mod:`millstream.cli.main`; the Helm chart's Deployment runs it as
``millstream operator --namespace=NS --liveness=http://0.0.0.0:8080/healthz`` (or
``--all-namespaces``), with ``MILLSTREAM_BROKER_IMAGE`` and ``MILLSTREAM_OPERATOR_NAMESPACE``
in its environment. It needs the ``operator`` extra (kopf and the Kubernetes client), imported
only when this command runs, so that brokers and clients never need them.

``MILLSTREAM_BROKER_URLS`` is a test and development override: the brokers' URLs by id,
standing in for the pods' DNS names (see :mod:`millstream.operator.settings`).
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from millstream.cli.options import UsageError, positive_seconds

if TYPE_CHECKING:
    from millstream.cli.options import Commands


def register(commands: Commands) -> None:
    parser = commands.add_parser(
        "operator",
        help="run the Kubernetes operator",
        description=(
            "Run the Kubernetes operator: Cluster, Topic and ConsumerGroup resources become "
            "broker pods, partition placements and status. Logs in as kopf does: the pod's "
            "service account, else $KUBECONFIG."
        ),
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--namespace",
        action="append",
        metavar="NS",
        help="watch this namespace (repeatable; default: $MILLSTREAM_OPERATOR_NAMESPACE)",
    )
    where.add_argument("--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument(
        "--liveness",
        metavar="URL",
        help="serve a liveness endpoint, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument(
        "--drift-interval",
        type=positive_seconds,
        help="seconds between two checks of each Cluster's brokers (default: 30)",
    )
    parser.add_argument(
        "--group-refresh-interval",
        type=positive_seconds,
        help="seconds between two refreshes of a ConsumerGroup's status (default: 30)",
    )
    parser.add_argument(
        "--group-refresh-min-interval",
        type=positive_seconds,
        help="the least seconds between two refreshes, even when one is pending (default: 5)",
    )
    parser.add_argument(
        "--retry-delay",
        type=positive_seconds,
        help="seconds before a reconcile that could not finish is tried again (default: 5)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("--debug", action="store_true", help="log everything kopf does")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        from millstream.operator import main, settings
    except ImportError as exc:  # pragma: no cover - depends on what is installed
        raise UsageError(
            f"the operator needs the 'operator' extra (pip install 'millstream[operator]'): {exc}"
        ) from None
    try:
        watch = main.namespaces_of(
            args.namespace, args.all_namespaces, os.environ.get(settings.NAMESPACE_ENV)
        )
        operator_settings = settings.settings_from(
            os.environ,
            drift_interval=args.drift_interval,
            group_refresh_interval=args.group_refresh_interval,
            group_refresh_min_interval=args.group_refresh_min_interval,
            retry_delay=args.retry_delay,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    main.run(
        operator_settings, watch, liveness=args.liveness, verbose=args.verbose, debug=args.debug
    )
    return 0
