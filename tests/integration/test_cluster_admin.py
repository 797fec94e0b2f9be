"""The brokers' admin client (millstream.client.cluster_admin) against real broker processes:
cluster and topic pushes, what a broker then holds, deletion, and the token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from millstream import errors
from millstream.client.cluster_admin import BrokerAdmin, PlacedTopic
from tests.support.broker import BrokerProcess

TOKEN = "s3cret-token-of-the-operator"


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[list[BrokerProcess]]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    started = []
    try:
        for broker_id in (0, 1):
            args = ("--broker-id", str(broker_id), "--admin-token-file", str(token_file))
            started.append(BrokerProcess(tmp_path / f"b{broker_id}", extra_args=args).start())
        yield started
    finally:
        for broker in started:
            broker.kill()


async def test_pushes_and_reads_back(brokers: list[BrokerProcess]) -> None:
    urls = {0: brokers[0].url, 1: brokers[1].url}
    async with BrokerAdmin(brokers[1].url, TOKEN) as admin:
        before = await admin.metadata()
        assert not before.managed and before.broker_id == 1

        after = await admin.put_cluster(4, urls)
        assert (after.epoch, dict(after.brokers)) == (4, urls)

        described = await admin.put_topic(
            "orders", placement={0: 0, 1: 1}, config={"retention.ms": 60_000}, topic_id="id-7"
        )
        assert described["topic_id"] == "id-7"
        assert described["config"]["retention.ms"] == 60_000
        held = (await admin.metadata()).topics["orders"]
        assert held == PlacedTopic("orders", 2, {0: 0, 1: 1}, "id-7")
        rows = (await admin.describe_topic("orders"))["partitions"]
        assert [r["latest_offset"] is not None for r in rows] == [False, True]

        with pytest.raises(errors.StaleEpoch):
            await admin.put_cluster(3, urls)
        assert await admin.delete_topic("orders")
        assert not await admin.delete_topic("orders")
        assert await admin.describe_topic("orders") is None


async def test_the_token_is_required(brokers: list[BrokerProcess]) -> None:
    async with BrokerAdmin(brokers[0].url, "not-the-token") as admin:
        with pytest.raises(errors.Forbidden):
            await admin.put_cluster(1, {0: brokers[0].url})
        assert not (await admin.metadata()).managed  # the public route needs none
