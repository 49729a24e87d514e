"""Environment helpers for settings: every knob is an environment variable."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit


def envbool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def envint(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def envsecret(name: str, fallback_file: Path | None = None) -> str:
    """A secret from NAME, from the file named by NAME_FILE, or generated once into fallback_file."""
    if os.environ.get(name):
        return os.environ[name]
    if os.environ.get(f"{name}_FILE"):
        return Path(os.environ[f"{name}_FILE"]).read_text().strip()
    if fallback_file is None:
        raise RuntimeError(f"{name} is not set")
    if not fallback_file.exists():
        fallback_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(fallback_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(50))
    return fallback_file.read_text().strip()


def database_from_url(url: str) -> dict:
    """Django's DATABASES entry for postgres://user:password@host:port/name?sslmode=... ."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"DATABASE_URL: only postgres:// is supported, not {parts.scheme or url!r}")
    if not parts.path.strip("/"):
        raise ValueError("DATABASE_URL: the database name is missing (postgres://user:pass@host:5432/NAME)")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "OPTIONS": dict(parse_qsl(parts.query)),
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
    }
