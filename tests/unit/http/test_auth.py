"""The admin token check: absent, wrong, right, rotated, and closed without a token file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request

from millstream import errors
from millstream.broker.http.auth import AdminAuth


def request(authorization: str | None = None) -> object:
    headers = {} if authorization is None else {"Authorization": authorization}
    return make_mocked_request("PUT", "/v1/admin/cluster", headers=headers)


def test_without_a_token_file_admin_routes_are_closed() -> None:
    with pytest.raises(errors.Forbidden, match="admin-token-file"):
        AdminAuth(None).check(request("Bearer anything"))  # type: ignore[arg-type]
    with pytest.raises(errors.Unauthorized):  # no credentials at all: 401, as HTTP has it
        AdminAuth(None).check(request())  # type: ignore[arg-type]


def test_the_token_is_required_and_compared(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("s3cret\n")
    auth = AdminAuth(path)
    with pytest.raises(errors.Unauthorized):
        auth.check(request())  # type: ignore[arg-type]
    for wrong in ("Bearer nope", "Bearer s3cret2", "Basic s3cret", "s3cret", "Bearer "):
        with pytest.raises(errors.Forbidden):
            auth.check(request(wrong))  # type: ignore[arg-type]
    auth.check(request("Bearer s3cret"))  # type: ignore[arg-type]
    auth.check(request("bearer  s3cret "))  # type: ignore[arg-type]


def test_a_rotated_token_takes_over_and_a_vanished_file_keeps_the_last(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first")
    auth = AdminAuth(path)
    replacement = tmp_path / "token.new"
    replacement.write_text("second")
    os.replace(replacement, path)  # as a Secret volume swaps its files
    auth.check(request("Bearer second"))  # type: ignore[arg-type]
    with pytest.raises(errors.Forbidden):
        auth.check(request("Bearer first"))  # type: ignore[arg-type]
    path.unlink()
    auth.check(request("Bearer second"))  # type: ignore[arg-type]


@pytest.mark.parametrize("content", [None, ""])
def test_a_missing_or_empty_token_file_stops_the_start(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(errors.InvalidRequest):
        AdminAuth(path)
