"""Versioned plain-SQL migrations shipped as package data, and a store's state against them.

Files are `sql/<dialect>/<version>_<name>.sql`; both dialects carry the same versions.
Each is applied in its own transaction together with its `schema_migrations` row.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files

from ghostllm.store.url import Dialect

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str = field(repr=False)

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    name: str
    applied_at: str  # ISO 8601
    checksum: str


@cache
def load_migrations(dialect: Dialect) -> tuple[Migration, ...]:
    """The code's migrations for `dialect`, in version order."""
    found = []
    for entry in files("ghostllm.store").joinpath("sql", dialect).iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions for {dialect}: {versions}")
    return tuple(found)


@dataclass(frozen=True)
class SchemaStatus:
    """What the code has, what the database has recorded, and how they differ."""

    known: tuple[Migration, ...]
    applied: tuple[AppliedMigration, ...]

    @property
    def pending(self) -> tuple[Migration, ...]:
        done = {a.version for a in self.applied}
        return tuple(m for m in self.known if m.version not in done)

    @property
    def unknown(self) -> tuple[AppliedMigration, ...]:
        """Recorded in the database but not in this code: a newer GhostLLM migrated it."""
        ours = {m.version for m in self.known}
        return tuple(a for a in self.applied if a.version not in ours)

    @property
    def changed(self) -> tuple[Migration, ...]:
        """Applied, but the file's text differs from what was applied."""
        recorded = {a.version: a.checksum for a in self.applied}
        return tuple(m for m in self.known if recorded.get(m.version, m.checksum) != m.checksum)

    @property
    def newer_than_code(self) -> bool:
        latest = max((m.version for m in self.known), default=0)
        return any(a.version > latest for a in self.unknown)

    @property
    def current(self) -> bool:
        return not self.pending and not self.unknown

    def lines(self) -> list[str]:
        """One line per migration, for `ghostllm migrate status`."""
        applied = {a.version: a for a in self.applied}
        changed = {m.version for m in self.changed}
        out = []
        for m in self.known:
            a = applied.get(m.version)
            state = f"applied {a.applied_at}" if a else "pending"
            note = " (the file changed since it was applied)" if m.version in changed else ""
            out.append(f"{m.version:04d}_{m.name}: {state}{note}")
        out += [f"{a.version:04d}_{a.name}: applied {a.applied_at} (unknown to this version)" for a in self.unknown]
        return out
