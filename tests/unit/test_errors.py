"""The error registry: stable, unique codes, and the class for each code."""

from __future__ import annotations

from millstream import errors


def all_error_classes() -> list[type[errors.MillstreamError]]:
    found, pending = [], [errors.MillstreamError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_code_is_unique_and_snake_case() -> None:
    codes = [cls.code for cls in all_error_classes()]
    assert len(codes) == len(set(codes))
    assert all(code.replace("_", "").isalpha() and code.islower() for code in codes)


def test_for_code_returns_the_class_and_falls_back_to_the_root() -> None:
    assert errors.for_code("unknown_topic") is errors.UnknownTopic
    assert issubclass(errors.for_code("corrupt_batch"), errors.InvalidRequest)
    assert errors.for_code("from_a_newer_broker") is errors.MillstreamError


def test_message_defaults_to_the_code() -> None:
    assert str(errors.UnknownTopic()) == "unknown_topic"
    assert errors.UnknownTopic("no topic x").message == "no topic x"
