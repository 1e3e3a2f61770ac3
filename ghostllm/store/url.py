"""A store URL (`postgresql://...` or `sqlite:///path`) taken apart."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from ghostllm.config import POSTGRES_PREFIXES, SQLITE_PREFIX
from ghostllm.errors import ConfigError

Dialect = Literal["postgresql", "sqlite"]


@dataclass(frozen=True)
class StoreURL:
    dialect: Dialect
    # PostgreSQL: the libpq connection URI (query parameters such as
    # `options=-csearch_path%3Dname` pass through). SQLite: the database file.
    conninfo: str = ""
    path: Path | None = None

    def __str__(self) -> str:
        """For messages: the password is never shown."""
        if self.path is not None:
            return f"{SQLITE_PREFIX}{self.path}"
        parts = urlsplit(self.conninfo)
        if parts.password is None:
            return self.conninfo
        netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))


def parse_store_url(url: str) -> StoreURL:
    # sqlite:///relative/file.db and sqlite:////absolute/file.db, as SQLAlchemy spells them.
    if url.startswith(SQLITE_PREFIX) and len(url) > len(SQLITE_PREFIX):
        return StoreURL("sqlite", path=Path(url[len(SQLITE_PREFIX) :]))
    if url.startswith(POSTGRES_PREFIXES):
        return StoreURL("postgresql", conninfo=url)
    raise ConfigError("store.url: expected postgresql://... or sqlite:///path")
