"""The group coordinator's settings, and the bounds they put on what members ask for.

Given to the :class:`~millstream.broker.groups.coordinator.GroupCoordinator` by the server
(defaults) and by tests (short delays).
"""

from __future__ import annotations

from dataclasses import dataclass

from millstream import errors
from millstream.broker.groups.group import JoinRequest


@dataclass(frozen=True, slots=True)
class GroupSettings:
    min_session_timeout_ms: int = 1_000
    max_session_timeout_ms: int = 300_000
    max_rebalance_timeout_ms: int = 300_000
    initial_rebalance_delay_ms: int = 0
    # The first rebalance of a group this broker takes over without its membership (its
    # offsets partition moved here, or the broker restarted, in the middle of a rebalance)
    # waits this long, so that every member that was consuming has heard (its heartbeat
    # fails) and rejoins into the same generation rather than a later one.
    takeover_rebalance_delay_ms: int = 3_000

    def check_timeouts(self, request: JoinRequest) -> None:
        """Refuse a join whose timeouts are out of these bounds."""
        session_ms = request.session_timeout_s * 1000
        if not self.min_session_timeout_ms <= session_ms <= self.max_session_timeout_ms:
            raise errors.InvalidSessionTimeout(
                f"session_timeout_ms must be between {self.min_session_timeout_ms} and "
                f"{self.max_session_timeout_ms}, got {session_ms:.0f}"
            )
        rebalance_ms = request.rebalance_timeout_s * 1000
        if not 1 <= rebalance_ms <= self.max_rebalance_timeout_ms:
            raise errors.InvalidSessionTimeout(
                f"rebalance_timeout_ms must be between 1 and {self.max_rebalance_timeout_ms}, "
                f"got {rebalance_ms:.0f}"
            )
