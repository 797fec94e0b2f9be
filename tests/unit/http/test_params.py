"""Parameters and JSON bodies: the integers and numbers the HTTP layer takes."""

from __future__ import annotations

import pytest

from millstream.broker.http.params import INT64_MAX, _json_number, parse_int
from millstream.errors import InvalidRequest


@pytest.mark.parametrize("raw", ["0", "42", "-1", str(INT64_MAX)])
def test_decimal_integers_are_taken(raw: str) -> None:
    assert parse_int("p", raw, minimum=-1, maximum=INT64_MAX) == int(raw)


@pytest.mark.parametrize(
    "raw",
    ["", " 1", "1 ", "+1", "1_000", "1.0", "0x10", "\u0661", "\u00b2", "9" * 5000, str(2**63)],
)
def test_anything_else_is_refused(raw: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_int("p", raw, minimum=-1, maximum=INT64_MAX)


@pytest.mark.parametrize(
    ("literal", "number"),
    [("2.0", 2), ("1e3", 1000), ("-0.0", 0), ("1.7e12", 1_700_000_000_000), ("1e18", 10**18)],
)
def test_integral_json_numbers_are_integers(literal: str, number: int) -> None:
    # JSON Schema, and so the OpenAPI document, counts 2.0 as the integer 2.
    value = _json_number(literal)
    assert value == number
    assert isinstance(value, int)


@pytest.mark.parametrize("literal", ["1.5", "1e-3", "1e400"])
def test_other_json_numbers_stay_floats(literal: str) -> None:
    assert isinstance(_json_number(literal), float)
