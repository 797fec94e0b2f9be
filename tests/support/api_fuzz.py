"""Schemathesis hooks for fuzzing a real broker from its own OpenAPI document.

Loaded by schemathesis through ``SCHEMATHESIS_HOOKS=tests.support.api_fuzz``, from the
repository root: by ``tests/integration/test_api_fuzz.py``, and by hand against a broker whose
topics ``fuzz`` and ``fuzz2`` exist (``create_fuzz_topics``)::

    SCHEMATHESIS_HOOKS=tests.support.api_fuzz st --config-file tests/support/api_fuzz.toml \\
        run http://127.0.0.1:PORT/v1/openapi.json --checks all -n 1000 --seed 1

What they add to schemathesis:

- raw produce bodies worth sending: good RecordBatch v2 bytes, several in a row, damaged ones
  (a flipped byte, cut short, garbage after), batches whose CRC holds over broken records, and
  plain random bytes;
- fetches that sometimes ask for raw batches, and a check that those decode as whole batches;
- limits that keep a run fast and within one machine: long polls and partition counts are
  clamped (only where the value was valid, so refused values stay refused), and the topics
  the config names are never deleted.
"""

from __future__ import annotations

import zlib
from typing import Any

import requests
import schemathesis
from crc32c import crc32c
from hypothesis import strategies as st

from millstream.records import CRC_START, HEADER_SIZE, BatchBuilder, check_batch

BATCH = "application/vnd.kafka.record-batch"
MAX_WAIT_MS = 50  # the broker allows a minute; a fuzzing run cannot wait that long per call
# Every partition holds a file open: thousands of topics of thousands of partitions would
# exhaust the process's descriptors (a storage limit, reported separately), not test the API.
MAX_PARTITIONS = 4
MAX_REBALANCE_MS = 200
MAX_SESSION_MS = 1_000  # the least the broker allows
_MAX_PARTITIONS_VALID = 10_000

_records = st.lists(
    st.tuples(
        st.none() | st.binary(max_size=32),
        st.none() | st.binary(max_size=32),
        st.integers(0, 2**41),
        st.lists(st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=8)), max_size=2),
    ),
    min_size=1,
    max_size=5,
)


@st.composite
def good_batch(draw: st.DrawFn) -> bytes:
    builder = BatchBuilder()
    for key, value, timestamp, headers in draw(_records):
        builder.append(value, key, timestamp, headers)
    return builder.build()


def with_fresh_crc(raw: bytearray) -> bytes:
    """The batch with its length and CRC made right again, whatever its records say."""
    raw[8:12] = (len(raw) - 12).to_bytes(4, "big")
    raw[17:21] = crc32c(bytes(raw[CRC_START:])).to_bytes(4, "big")
    return bytes(raw)


@st.composite
def damaged_batch(draw: st.DrawFn, *, fix_crc: bool) -> bytes:
    raw = bytearray(draw(good_batch()))
    start = HEADER_SIZE if fix_crc else 0  # past the header, the records' own framing breaks
    for _ in range(draw(st.integers(1, 3))):
        raw[draw(st.integers(start, len(raw) - 1))] = draw(st.integers(0, 255))
    return with_fresh_crc(raw) if fix_crc else bytes(raw)


batches = st.one_of(
    good_batch(),
    st.lists(good_batch(), min_size=2, max_size=3).map(b"".join),
    damaged_batch(fix_crc=False),
    damaged_batch(fix_crc=True),
    st.tuples(good_batch(), st.integers(1, 60)).map(lambda t: t[0][: -t[1]]),
    st.tuples(good_batch(), st.binary(min_size=1, max_size=70)).map(lambda t: t[0] + t[1]),
    st.binary(max_size=200),
)
schemathesis.openapi.media_type(BATCH, batches, aliases=["application/octet-stream"])


@schemathesis.deserializer(BATCH)
def whole_batches(ctx: schemathesis.DeserializationContext, response: Any) -> str:
    """A raw fetch must answer whole, sound batches; the schema then sees a binary string."""
    data, position = response.content, 0
    while position < len(data):
        position += check_batch(data, position, deep=True).size
    return ""


def _clamp(mapping: Any, name: str, limit: int, valid_up_to: int) -> None:
    # Only values the broker would take are clamped (3.0 counts as 3, as in JSON Schema): a
    # refused one must stay refused.
    value = mapping.get(name) if isinstance(mapping, dict) else None
    if isinstance(value, str) and value.isdigit():
        if limit < int(value) <= valid_up_to:
            mapping[name] = str(limit)
    elif _integral(value) and limit < value <= valid_up_to:
        mapping[name] = limit


def _integral(value: Any) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and float(value).is_integer()


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case, kwargs: Any) -> None:
    operation = case.operation.label
    if operation.startswith("GET /v1/topics/{topic}/partitions/{partition}/records"):
        _clamp(case.query, "wait_ms", MAX_WAIT_MS, 60_000)
        # Schemathesis sends no Accept header; ask for raw batches in about a third of calls,
        # chosen from the case itself so that a seeded run stays the same run.
        if zlib.crc32(repr(sorted((case.query or {}).items())).encode()) % 3 == 0:
            case.headers = {**(case.headers or {}), "Accept": BATCH}
            # A raw stream (follow=true) answers for as long as the client listens: no call
            # of a bounded run can wait for its end. The integration tests cover it.
            if isinstance(case.query, dict) and case.query.get("follow") == "true":
                case.query = {**case.query, "follow": "false"}
    if operation == "POST /v1/groups/{group}/join":
        # A join waits up to the rebalance timeout for the group's other members; a session
        # outlives the call. Both are clamped so that no call outwaits the request timeout.
        for name, limit in (
            ("rebalance_timeout_ms", MAX_REBALANCE_MS),
            ("session_timeout_ms", MAX_SESSION_MS),
        ):
            if isinstance(case.body, dict) and case.body.get(name) is None:
                case.body[name] = limit  # the defaults (10 s) are the slow part
            _clamp(case.body, name, limit, 300_000)
    if operation in ("POST /v1/topics", "PATCH /v1/topics/{topic}"):
        _clamp(case.body, "partitions", MAX_PARTITIONS, _MAX_PARTITIONS_VALID)
    if case.method == "DELETE" and (case.path_parameters or {}).get("topic") in FUZZ_TOPICS:
        # Keep the shared topics for the calls after this one; the stateful phase deletes the
        # topics it creates itself, which covers deletion.
        case.path_parameters = {**case.path_parameters, "topic": "fuzz-scratch"}


# The topics api_fuzz.toml names (with their partition counts): calls get past the 404.
FUZZ_TOPICS = {"fuzz": 2, "fuzz2": 1}


def create_fuzz_topics(base_url: str) -> None:
    for name, partitions in FUZZ_TOPICS.items():
        reply = requests.post(
            f"{base_url}/v1/topics", json={"name": name, "partitions": partitions}, timeout=10
        )
        reply.raise_for_status()
