"""Where usage rows wait while the store cannot take them: NDJSON files in
`<data_dir>/spool/`, each line one row, fsynced when written, so a worker that dies
keeps them. Any worker of the same data dir replays them once the store is back; a file
is claimed (renamed, atomically) before it is read, so two workers never replay the same
one, and rows are written with ON CONFLICT DO NOTHING, so a replay cut short and done
again counts nothing twice.

A file is written under a name no one claims (`.tmp`) and renamed to its own only once
every row is on disk: a worker listing the spool while another writes never claims (and
replays, and deletes) a file before it is complete. Rows the store refuses on their own
(not for being away) go to `rejected/`, kept for an operator and never replayed."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

_counter = itertools.count()
PREFIX = "usage-"
# Being written: `usage-<pid>-<n>.ndjson.tmp`; claimed: `usage-<pid>-<n>.ndjson.claimed-<pid>`.
_TMP = ".tmp"
_CLAIMED = ".claimed-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _fsync_dir(directory: Path) -> None:
    """The directory's entries (a new or renamed file) on disk too."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_file(directory: Path, name: str, rows: Sequence[Sequence[Any]]) -> Path:
    """`rows` in `directory/name`, complete and fsynced before the name appears."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    tmp = path.with_name(path.name + _TMP)
    data = b"".join(orjson.dumps(list(r)) + b"\n" for r in rows)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    _fsync_dir(directory)
    return path


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def rejected_dir(self) -> Path:
        return self.directory / "rejected"

    def write(self, rows: Sequence[Sequence[Any]]) -> Path:
        """The rows in a new file, on disk (fsynced) before this returns."""
        return _write_file(self.directory, f"{PREFIX}{os.getpid()}-{next(_counter)}.ndjson", rows)

    def reject(self, rows: Sequence[Sequence[Any]]) -> Path:
        """Rows the store refused on their own: kept, never replayed."""
        return _write_file(self.rejected_dir, f"{PREFIX}{os.getpid()}-{next(_counter)}.ndjson", rows)

    def claim(self) -> Iterator[Path]:
        """Files to replay, each renamed to this process first: written ones, ones a
        process that died had claimed, and ones a process died while writing (their
        complete lines are rows)."""
        if not self.directory.is_dir():
            return
        me = os.getpid()
        for path in sorted(self.directory.iterdir()):
            name = path.name
            if not name.startswith(PREFIX) or not path.is_file():
                continue
            base, sep, tail = name.partition(".ndjson")
            if not sep:
                continue
            if tail == "":
                pass
            elif tail.startswith(_CLAIMED):
                pid = _pid(tail[len(_CLAIMED) :])
                if pid is None or pid == me or _alive(pid):
                    continue
            elif tail == _TMP:
                # `usage-<writer pid>-<n>`: only a writer that died leaves it behind.
                pid = _pid(base[len(PREFIX) :].rpartition("-")[0])
                if pid is None or pid == me or _alive(pid):
                    continue
            else:
                continue
            target = path.with_name(f"{base}.ndjson{_CLAIMED}{me}")
            try:
                os.rename(path, target)  # atomic: whoever renames it first owns it
            except FileNotFoundError:
                continue
            yield target

    @staticmethod
    def unclaim(path: Path) -> None:
        """A claimed file back to the pool, for whoever can write next."""
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, path.with_name(path.name.split(_CLAIMED)[0]))

    @staticmethod
    def read(path: Path) -> list[tuple[Any, ...]]:
        out = []
        for line in path.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):  # a torn last line of a crash
                out.append(tuple(orjson.loads(line)))
        return out

    def count(self) -> int:
        """Files waiting to be replayed (by anyone), or being written."""
        if not self.directory.is_dir():
            return 0
        return sum(1 for p in self.directory.glob(f"{PREFIX}*.ndjson*") if p.is_file())
