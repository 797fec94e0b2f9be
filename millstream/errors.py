"""The one error hierarchy of Millstream, shared by the broker, the client and the CLI.

Every failure a user can cause or see is a subclass of :class:`MillstreamError` carrying a
stable, machine-readable ``code`` (snake_case, never renamed once released). Storage raises
these errors; the HTTP layer maps codes to statuses at the edge (``broker/http/errors.py``);
the client turns the JSON error it receives back into the same class with :func:`for_code`.
No class here knows about HTTP.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar


class MillstreamError(Exception):
    """Root of every Millstream error. ``code`` is the stable identifier sent over the wire."""

    code: ClassVar[str] = "internal_error"
    retriable: ClassVar[bool] = False

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code)
        self.message = message or self.code


class InvalidRequest(MillstreamError):
    """The request is well-formed HTTP but its content is wrong (types, missing fields...)."""

    code = "invalid_request"


class MalformedJson(InvalidRequest):
    code = "malformed_json"


class InvalidTopicName(InvalidRequest):
    code = "invalid_topic_name"


class InvalidConfig(InvalidRequest):
    code = "invalid_config"


class InvalidPartitions(InvalidRequest):
    """A partition count that is not a positive integer, or that would shrink a topic."""

    code = "invalid_partitions"


class InvalidOffset(InvalidRequest):
    code = "invalid_offset"


class CorruptBatch(InvalidRequest):
    """A record batch whose CRC, magic, lengths or record framing do not check out."""

    code = "corrupt_batch"


class RecordTooLarge(InvalidRequest):
    code = "record_too_large"


class BodyTooLarge(InvalidRequest):
    code = "body_too_large"


class UnsupportedMediaType(InvalidRequest):
    code = "unsupported_media_type"


class MethodNotAllowed(InvalidRequest):
    code = "method_not_allowed"


class InvalidGroupId(InvalidRequest):
    code = "invalid_group_id"


class InvalidSessionTimeout(InvalidRequest):
    code = "invalid_session_timeout"


class InvalidPlacement(InvalidRequest):
    """Cluster metadata that does not hold together: a partition placed on no broker or on
    one the cluster does not list, a broker listed twice, a topic pushed before the cluster."""

    code = "invalid_placement"


class NotFound(MillstreamError):
    code = "not_found"


class UnknownMove(NotFound):
    """No move of that partition onto this broker is known."""

    code = "unknown_move"


class UnknownTopic(NotFound):
    code = "unknown_topic"


class UnknownPartition(NotFound):
    code = "unknown_partition"


class UnknownGroup(NotFound):
    code = "unknown_group"


class GroupConflict(MillstreamError):
    """The request does not fit the group's current state; the member should rejoin."""

    code = "group_conflict"


class UnknownMember(GroupConflict):
    """The member was evicted (session timeout, left, group reset) or never joined."""

    code = "unknown_member"


class IllegalGeneration(GroupConflict):
    """The member speaks for a generation that has ended (it missed a rebalance)."""

    code = "illegal_generation"


class RebalanceInProgress(GroupConflict):
    code = "rebalance_in_progress"


class FencedInstanceId(GroupConflict):
    """Another process joined with this member's group instance id (static membership) and
    took its place: this one must stop, not rejoin (it would only fence the other in turn)."""

    code = "fenced_instance_id"


class InconsistentGroupProtocol(GroupConflict):
    """No protocol every member supports, or a protocol type other than the group's."""

    code = "inconsistent_group_protocol"


class GroupNotEmpty(GroupConflict):
    """Deleting a group or resetting its offsets needs a group without live members."""

    code = "group_not_empty"


class TopicExists(MillstreamError):
    code = "topic_exists"


class ManagedByOperator(MillstreamError):
    """The broker is part of an operator-managed cluster, whose topics are Topic resources."""

    code = "managed_by_operator"


class MoveConflict(MillstreamError):
    """A move that its partition's state does not allow: started for a partition this broker
    already serves or from another broker than the one serving it, or cancelled once it is
    switching (the previous broker no longer takes writes)."""

    code = "move_conflict"


class StaleEpoch(MillstreamError):
    """Cluster metadata older than what the broker already has (a late or replayed push)."""

    code = "stale_epoch"


class Unauthorized(MillstreamError):
    """An admin route called without credentials."""

    code = "unauthorized"


class Forbidden(MillstreamError):
    """An admin route called with the wrong credentials, or on a broker that has none."""

    code = "forbidden"


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """A broker of the cluster, as a misdirected request's error names it."""

    id: int
    url: str


class Misdirected(MillstreamError):
    """The request belongs to another broker of the cluster; ``broker`` says which, when
    known. Retriable: the client refreshes its metadata and sends the request there."""

    code = "misdirected"
    retriable = True

    def __init__(self, message: str = "", broker: BrokerAddress | None = None) -> None:
        super().__init__(message)
        self.broker = broker


class NotLeader(Misdirected):
    """The partition is served by another broker."""

    code = "not_leader"


class NotCoordinator(Misdirected):
    """The group is coordinated by another broker."""

    code = "not_coordinator"


class PartitionMoving(MillstreamError):
    """The partition is placed on this broker, but the last of its log is still being copied
    from the broker that served it before. Retriable: it is served in a moment."""

    code = "partition_moving"
    retriable = True


class CoordinatorNotAvailable(MillstreamError):
    """No broker coordinates the group right now: the partition of the group-offsets topic
    that holds it is not placed yet, or is moving onto this broker. Retriable."""

    code = "coordinator_not_available"
    retriable = True


class OffsetOutOfRange(MillstreamError):
    """A fetch at an offset below the log start or above the log end."""

    code = "offset_out_of_range"


class StorageError(MillstreamError):
    """The disk failed under us (ENOSPC, EIO...). Nothing was acknowledged."""

    code = "storage_error"
    retriable = True


class BrokerUnavailable(MillstreamError):
    """The client could not reach a broker, or the broker is shutting down."""

    code = "broker_unavailable"
    retriable = True


class RequestTimedOut(MillstreamError):
    code = "request_timed_out"
    retriable = True


@functools.cache
def _registry() -> dict[str, type[MillstreamError]]:
    found: dict[str, type[MillstreamError]] = {}
    pending: list[type[MillstreamError]] = [MillstreamError]
    while pending:
        cls = pending.pop()
        found[cls.code] = cls
        pending.extend(cls.__subclasses__())
    return found


def for_code(code: str) -> type[MillstreamError]:
    """The error class for a wire code; unknown codes (from a newer broker) map to the root."""
    return _registry().get(code, MillstreamError)


def is_known(code: str) -> bool:
    return code in _registry()
