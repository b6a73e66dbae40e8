"""The clouds.yaml ``novalite serve`` writes into its state dir (never into ~/.config)."""

from __future__ import annotations

import os
from pathlib import Path

from novalite.config import Settings


def render(settings: Settings, password: str) -> str:
    return (
        "# Written by novalite serve. Use it with:\n"
        f"#   export OS_CLIENT_CONFIG_FILE={settings.state_dir / 'clouds.yaml'} OS_CLOUD=novalite\n"
        "clouds:\n"
        "  novalite:\n"
        "    auth:\n"
        f"      auth_url: {settings.public_base}/identity/v3\n"
        "      username: admin\n"
        f"      password: {_quote(password)}\n"
        "      project_name: admin\n"
        "      user_domain_name: Default\n"
        "      project_domain_name: Default\n"
        f"    region_name: {settings.region}\n"
        "    identity_api_version: 3\n"
        "    interface: public\n"
    )


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def write(settings: Settings, password: str) -> Path:
    path = settings.state_dir / "clouds.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(render(settings, password))
    return path


def read_password(settings: Settings) -> str | None:
    """The admin password recorded in an earlier clouds.yaml, if any."""
    path = settings.state_dir / "clouds.yaml"
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("password:"):
            value = stripped.split(":", 1)[1].strip()
            if value.startswith("'") and value.endswith("'"):
                value = value[1:-1].replace("''", "'")
            return value
    return None
