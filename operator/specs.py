"""Typed, frozen specs parsed from the bodies of Cluster, Topic and ConsumerGroup resources.

The kopf handlers call :func:`parse_cluster`, :func:`parse_topic` and :func:`parse_group` on the
body kopf hands them, before anything else; everything past this module works on these types and
never on raw dictionaries. A body that cannot be understood raises :class:`SpecError`, whose
message names the field (``spec.partitions: must be an integer from 1 to 10000, got 0``): the
handlers report it as a permanent failure, since retrying the same body cannot help.

The API server already checks bodies against the CRDs (crds/) and fills in their defaults, so a
:class:`SpecError` means a resource written past the schema: a CRD older or newer than this
operator, or a test. Parsing checks the same types and bounds as the CRDs and applies the same
defaults, so that a body without them (``spec: {}``) means what the API server would make of it.
Fields the CRDs do not declare are refused rather than ignored: the server prunes them, so one
that arrives here is a version mismatch, and ignoring it would silently do less than was asked.

Topic names beginning with ``__`` are reserved (:mod:`millstream.internal_topics`): only the
Topic the operator keeps for a Cluster's group offsets (:func:`is_internal_topic`) may name one,
which :func:`.internal_topic.check_reserved_name` checks apart from parsing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, TypeVar

API_GROUP: Final = "millstream.io"
API_VERSION: Final = "millstream.io/v1alpha1"

# A Kubernetes quantity, as the CRDs' pattern (which the API server's own parser also accepts).
QUANTITY = re.compile(r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[mkMGTPE]|[eE][-+]?[0-9]+)?$")
# A Cluster name becomes a DNS-1035 label; 40 leaves room for the suffixes of pod and PVC names.
CLUSTER_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
CLUSTER_NAME_MAX = 40
# Kafka's topic name rule, as the broker enforces it.
TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
MAX_PARTITIONS = 10_000
INT64_MAX = 2**63 - 1
# Marks the Topic that the operator keeps for each Cluster's committed group offsets
# (:mod:`.internal_topic`); with its name, it is what lets that Topic serve a reserved name.
INTERNAL_LABEL: Final = "millstream.io/internal"

# Topic settings: inclusive bounds and refused values, the same as the CRDs and as
# broker/storage/config.py (which the operator may not import; a test compares the three).
TOPIC_CONFIG_BOUNDS: Final[Mapping[str, tuple[int, int]]] = MappingProxyType(
    {
        "retention.ms": (-1, 2**62),
        "retention.bytes": (-1, 2**62),
        "segment.bytes": (4096, 1024 * 1024 * 1024),
        "segment.ms": (1, 2**62),
        "flush.ms": (0, 86_400_000),
        "max.message.bytes": (1024, 64 * 1024 * 1024),
        "index.interval.bytes": (1, 64 * 1024 * 1024),
    }
)
TOPIC_CONFIG_REFUSED: Final[Mapping[str, int]] = MappingProxyType({"retention.ms": 0})

Policy = Literal["Delete", "Retain"]
_Int = TypeVar("_Int", int, None)
_Str = TypeVar("_Str", str, None)
_V = TypeVar("_V")
ResetTarget = Literal["earliest", "latest", "timestamp", "offsets"]


def _frozen(values: dict[str, _V]) -> Mapping[str, _V]:
    """A read-only view, so that a frozen spec's mappings are frozen too."""
    return MappingProxyType(values)


class SpecError(ValueError):
    """A resource body that cannot be understood; ``field`` is its path (``spec.brokers``)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Meta:
    """What the operator needs of a resource's metadata: who it is and which spec it saw."""

    name: str
    namespace: str
    uid: str
    generation: int


@dataclass(frozen=True, slots=True)
class Storage:
    size: str = "10Gi"
    storage_class_name: str | None = None  # None: the namespace's default StorageClass


@dataclass(frozen=True, slots=True)
class Resources:
    """A container's requests and limits, quantities as strings (``{"memory": "1Gi"}``)."""

    requests: Mapping[str, str] = field(default_factory=lambda: _frozen({}))
    limits: Mapping[str, str] = field(default_factory=lambda: _frozen({}))


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Broker settings; None leaves a setting to the broker's own default."""

    housekeeping_interval_seconds: int | None = None
    shutdown_timeout_seconds: int | None = None
    topic_defaults: Mapping[str, int] = field(default_factory=lambda: _frozen({}))


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    meta: Meta
    brokers: int = 3
    image: str | None = None  # None: the operator's own image (MILLSTREAM_BROKER_IMAGE)
    storage: Storage = Storage()
    resources: Resources = Resources()
    config: BrokerConfig = BrokerConfig()
    pvc_policy: Policy = "Retain"
    throttle_bytes_per_s: int | None = None  # spec.rebalance.throttleBytesPerSecond


@dataclass(frozen=True, slots=True)
class TopicSpec:
    meta: Meta
    cluster: str
    topic_name: str  # spec.topicName, else metadata.name
    partitions: int = 1
    replication_factor: int = 1
    config: Mapping[str, int] = field(default_factory=lambda: _frozen({}))
    deletion_policy: Policy = "Delete"
    # The Cluster's own group-offsets Topic (:func:`is_internal_topic`), which the operator
    # creates; it alone may name a reserved (``__``) topic.
    internal: bool = False


@dataclass(frozen=True, slots=True)
class PartitionOffset:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class OffsetReset:
    """A declared reset; exactly the fields its ``to`` uses are set (as the CRD's oneOf)."""

    to: ResetTarget
    topics: tuple[str, ...] | None = None  # None: every topic the group has offsets for
    timestamp: int | None = None
    offsets: tuple[PartitionOffset, ...] | None = None


@dataclass(frozen=True, slots=True)
class ConsumerGroupSpec:
    meta: Meta
    cluster: str
    group_id: str  # spec.groupId, else metadata.name
    offset_reset: OffsetReset | None = None


def parse_cluster(body: Mapping[str, Any]) -> ClusterSpec:
    """The spec of a Cluster body; raises :class:`SpecError` naming the first bad field."""
    meta = parse_meta(body)
    _check_cluster_name(meta.name, "metadata.name")
    spec = _Fields(body.get("spec", {}), "spec")
    brokers = spec.integer("brokers", 3, low=1, high=INT64_MAX)
    image = spec.string("image", None)
    storage = spec.object("storage")
    resources = spec.object("resources")
    config = spec.object("config")
    pvc_policy = spec.choice("pvcPolicy", "Retain", ("Delete", "Retain"))
    rebalance = spec.object("rebalance")
    spec.done()
    parsed = ClusterSpec(
        meta=meta,
        brokers=brokers,
        image=image,
        storage=Storage(
            size=storage.string("size", "10Gi", pattern=QUANTITY),
            storage_class_name=storage.string("storageClassName", None, min_length=0),
        ),
        resources=Resources(
            requests=_quantities(resources.object("requests")),
            limits=_quantities(resources.object("limits")),
        ),
        config=BrokerConfig(
            housekeeping_interval_seconds=config.integer(
                "housekeepingIntervalSeconds", None, low=1, high=86_400
            ),
            shutdown_timeout_seconds=config.integer(
                "shutdownTimeoutSeconds", None, low=1, high=3_600
            ),
            topic_defaults=_topic_config(config.object("topicDefaults")),
        ),
        pvc_policy=pvc_policy,
        throttle_bytes_per_s=rebalance.integer(
            "throttleBytesPerSecond", None, low=1, high=INT64_MAX
        ),
    )
    for fields in (storage, resources, config, rebalance):
        fields.done()
    return parsed


def parse_topic(body: Mapping[str, Any]) -> TopicSpec:
    """The spec of a Topic body; raises :class:`SpecError` naming the first bad field."""
    meta = parse_meta(body)
    spec = _Fields(_required_spec(body), "spec")
    topic_name = spec.string("topicName", meta.name, pattern=TOPIC_NAME)
    if topic_name in (".", ".."):
        where = "spec.topicName" if "topicName" in spec.raw else "metadata.name"
        raise SpecError(where, f"{topic_name!r} cannot name a topic")
    if not TOPIC_NAME.match(topic_name):
        raise SpecError("metadata.name", "is not a topic name: set spec.topicName")
    cluster = _cluster_ref(spec)
    labels = (body.get("metadata") or {}).get("labels")
    internal = isinstance(labels, Mapping) and is_internal_topic(meta.name, labels, cluster)
    parsed = TopicSpec(
        meta=meta,
        cluster=cluster,
        topic_name=topic_name,
        partitions=spec.integer("partitions", 1, low=1, high=MAX_PARTITIONS),
        replication_factor=spec.integer("replicationFactor", 1, low=1, high=INT64_MAX),
        config=_topic_config(spec.object("config")),
        deletion_policy=spec.choice("deletionPolicy", "Delete", ("Delete", "Retain")),
        internal=internal,
    )
    spec.done()
    return parsed


def internal_topic_name(cluster: str) -> str:
    """The name of the Topic resource that holds a Cluster's group offsets."""
    return f"{cluster}-group-offsets"


def is_internal_topic(name: str, labels: Mapping[str, Any], cluster: str) -> bool:
    """Whether a Topic is its Cluster's group-offsets Topic: named for the Cluster and labelled
    internal. Both, so that neither a label on a user's Topic nor a user's Topic of that name
    can take a reserved name by accident; the operator creates the one Topic that has both."""
    return name == internal_topic_name(cluster) and labels.get(INTERNAL_LABEL) == "true"


def parse_group(body: Mapping[str, Any]) -> ConsumerGroupSpec:
    """The spec of a ConsumerGroup body; raises :class:`SpecError` naming the first bad field."""
    meta = parse_meta(body)
    spec = _Fields(_required_spec(body), "spec")
    parsed = ConsumerGroupSpec(
        meta=meta,
        cluster=_cluster_ref(spec),
        group_id=spec.string("groupId", meta.name),
        offset_reset=_offset_reset(spec) if "offsetReset" in spec.raw else None,
    )
    spec.done()
    return parsed


def parse_meta(body: Mapping[str, Any]) -> Meta:
    """Name, namespace, uid and generation of any resource body."""
    metadata = body.get("metadata")
    if not isinstance(metadata, Mapping):
        raise SpecError("metadata", "missing")
    fields = _Fields(metadata, "metadata")
    name, namespace, uid = (fields.string(key, None) for key in ("name", "namespace", "uid"))
    if name is None or namespace is None or uid is None:
        absent = "name" if name is None else "namespace" if namespace is None else "uid"
        raise SpecError(f"metadata.{absent}", "missing")
    # A resource read before the API server counted its generation is at the first one.
    generation = fields.integer("generation", 1, low=1, high=INT64_MAX)
    return Meta(name=name, namespace=namespace, uid=uid, generation=generation)


def _required_spec(body: Mapping[str, Any]) -> Any:
    if "spec" not in body:
        raise SpecError("spec", "missing")
    return body["spec"]


def _check_cluster_name(name: str, field: str) -> None:
    if len(name) > CLUSTER_NAME_MAX or not CLUSTER_NAME.match(name):
        raise SpecError(
            field,
            f"{name!r} is not a cluster name: at most {CLUSTER_NAME_MAX} lowercase letters, "
            "digits and '-', starting with a letter and ending with a letter or digit",
        )


def _cluster_ref(spec: _Fields) -> str:
    name = spec.string("cluster", None)
    if name is None:
        raise SpecError("spec.cluster", "missing: name the Cluster that holds this resource")
    _check_cluster_name(name, "spec.cluster")
    return name


def _quantities(fields: _Fields) -> Mapping[str, str]:
    quantities = {}
    for name in fields.raw:
        value = fields.raw[name]
        # Kubernetes accepts resource quantities as numbers too (cpu: 2); keep them as text.
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            value = str(value)
        if not isinstance(value, str) or not QUANTITY.match(value):
            raise SpecError(f"{fields.path}.{name}", f"not a quantity: {value!r}")
        quantities[name] = value
    return _frozen(quantities)


def _topic_config(fields: _Fields) -> Mapping[str, int]:
    config = {}
    for name in sorted(fields.raw):
        if name not in TOPIC_CONFIG_BOUNDS:
            known = ", ".join(sorted(TOPIC_CONFIG_BOUNDS))
            raise SpecError(f"{fields.path}.{name}", f"unknown setting; known: {known}")
        low, high = TOPIC_CONFIG_BOUNDS[name]
        value = fields.integer(name, None, low=low, high=high)
        assert value is not None
        if value == TOPIC_CONFIG_REFUSED.get(name):
            raise SpecError(f"{fields.path}.{name}", f"{value} is refused")
        config[name] = value
    return _frozen(config)


def _offset_reset(spec: _Fields) -> OffsetReset:
    reset = spec.object("offsetReset")
    to = reset.choice("to", None, ("earliest", "latest", "timestamp", "offsets"))
    if to is None:
        raise SpecError(f"{reset.path}.to", "missing: earliest, latest, timestamp or offsets")
    topics = reset.string_list("topics", pattern=TOPIC_NAME) if "topics" in reset.raw else None
    timestamp = reset.integer("timestamp", None, low=0, high=INT64_MAX)
    offsets = _partition_offsets(reset) if "offsets" in reset.raw else None
    reset.done()
    # Each kind of reset takes exactly the fields it uses (the CRD's oneOf).
    allowed = {"earliest": {"topics"}, "latest": {"topics"}, "timestamp": {"topics", "timestamp"}}
    uses = allowed.get(to, {"offsets"})
    for name in ("topics", "timestamp", "offsets"):
        if name in reset.raw and name not in uses:
            raise SpecError(f"{reset.path}.{name}", f"not allowed with to: {to}")
    if to == "timestamp" and timestamp is None:
        raise SpecError(f"{reset.path}.timestamp", "missing: to: timestamp needs it")
    if to == "offsets" and offsets is None:
        raise SpecError(f"{reset.path}.offsets", "missing: to: offsets needs them")
    return OffsetReset(to=to, topics=topics, timestamp=timestamp, offsets=offsets)


def _partition_offsets(reset: _Fields) -> tuple[PartitionOffset, ...]:
    items = reset.value("offsets")
    path = f"{reset.path}.offsets"
    if not isinstance(items, list) or not items:
        raise SpecError(path, "must be a non-empty list")
    offsets = []
    for i, item in enumerate(items):
        entry = _Fields(item, f"{path}[{i}]")
        topic = entry.string("topic", None, pattern=TOPIC_NAME)
        partition = entry.integer("partition", None, low=0, high=MAX_PARTITIONS - 1)
        offset = entry.integer("offset", None, low=0, high=INT64_MAX)
        entry.done()
        for name, value in (("topic", topic), ("partition", partition), ("offset", offset)):
            if value is None:
                raise SpecError(f"{entry.path}.{name}", "missing")
        assert topic is not None and partition is not None and offset is not None
        offsets.append(PartitionOffset(topic, partition, offset))
    return tuple(offsets)


class _Fields:
    """Typed reads of one JSON object, each recorded so that :meth:`done` can refuse the rest."""

    def __init__(self, raw: Any, path: str) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise SpecError(path, f"must be an object, got {_kind(raw)}")
        self.raw: Mapping[str, Any] = raw
        self.path = path
        self._read: set[str] = set()

    def value(self, name: str) -> Any:
        """The field as it is, None if absent; for shapes the typed reads do not cover."""
        self._read.add(name)
        return self.raw.get(name)

    def integer(self, name: str, default: _Int, *, low: int, high: int) -> int | _Int:
        value = self.value(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            upper = "" if high >= INT64_MAX else f" to {high}"
            raise SpecError(
                f"{self.path}.{name}", f"must be an integer from {low}{upper}, got {value!r}"
            )
        return value

    def string(
        self,
        name: str,
        default: _Str,
        *,
        pattern: re.Pattern[str] | None = None,
        min_length: int = 1,
    ) -> str | _Str:
        value = self.value(name)
        if value is None:
            return default
        if not isinstance(value, str) or len(value) < min_length:
            raise SpecError(f"{self.path}.{name}", f"must be a non-empty string, got {value!r}")
        if pattern is not None and not pattern.match(value):
            raise SpecError(f"{self.path}.{name}", f"{value!r} does not match {pattern.pattern}")
        return value

    def choice(self, name: str, default: Any, choices: tuple[str, ...]) -> Any:
        value = self.value(name)
        if value is None:
            return default
        if value not in choices:
            raise SpecError(
                f"{self.path}.{name}", f"must be one of {', '.join(choices)}, got {value!r}"
            )
        return value

    def string_list(self, name: str, *, pattern: re.Pattern[str]) -> tuple[str, ...]:
        value = self.value(name)
        path = f"{self.path}.{name}"
        if not isinstance(value, list) or not value:
            raise SpecError(path, "must be a non-empty list of strings")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not pattern.match(item):
                raise SpecError(f"{path}[{i}]", f"{item!r} does not match {pattern.pattern}")
        return tuple(value)

    def object(self, name: str) -> _Fields:
        return _Fields(self.value(name), f"{self.path}.{name}")

    def done(self) -> None:
        """Refuse fields no read asked for (the API server would have pruned them)."""
        unknown = sorted(set(self.raw) - self._read)
        if unknown:
            raise SpecError(f"{self.path}.{unknown[0]}", "unknown field")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
