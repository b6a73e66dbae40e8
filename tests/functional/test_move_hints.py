"""The ``novalite serve`` banner says when a resize can never find a host (issue 10)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from novalite import cli


def node(hosts: list[str], same_host: bool) -> Any:
    settings = SimpleNamespace(
        allow_resize_to_same_host=same_host, db_url="sqlite:///x.db", transport_url="memory://", driver="fake"
    )
    return SimpleNamespace(
        settings=settings,
        roles=["api", "compute"],
        rt=None,
        compute_hosts=lambda: hosts,
        guest_network=None,
    )


INFO = SimpleNamespace(
    api_url="http://127.0.0.1:8774",
    state_dir="/tmp/x",
    admin_password_source="setting",
    generated_password=None,
    clouds_yaml=None,
    migrations_applied=[],
)


@pytest.mark.parametrize(
    ("hosts", "same_host", "shown"),
    [(["hv"], False, True), (["hv"], True, False), (["hv-1", "hv-2"], False, False)],
)
def test_one_host_banner_hints_at_allow_resize_to_same_host(capsys, hosts, same_host, shown):
    cli._print_banner(node(hosts, same_host), INFO)
    out = capsys.readouterr().out
    assert ("allow_resize_to_same_host = true" in out) is shown
