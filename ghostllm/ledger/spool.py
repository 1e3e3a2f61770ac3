"""Where usage rows wait while the store cannot take them: NDJSON files in
`<data_dir>/spool/`, each line one row, fsynced when written, so a worker that dies
keeps them. Any worker of the same data dir replays them once the store is back; a file
is claimed (renamed, atomically) before it is read, so two workers never replay the same
one, and rows are written with ON CONFLICT DO NOTHING, so a replay cut short and done
again counts nothing twice."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

_counter = itertools.count()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, rows: Sequence[Sequence[Any]]) -> Path:
        """The rows in a new file, on disk (fsynced) before this returns."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"usage-{os.getpid()}-{next(_counter)}.ndjson"
        data = b"".join(orjson.dumps(list(r)) + b"\n" for r in rows)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return path

    def claim(self) -> Iterator[Path]:
        """Files to replay, each renamed to this process first: written ones, and ones a
        process that died had claimed."""
        if not self.directory.is_dir():
            return
        me = os.getpid()
        for path in sorted(self.directory.iterdir()):
            name = path.name
            if name.endswith(".ndjson"):
                pass
            elif ".claimed-" in name:
                pid = int(name.rpartition("-")[2]) if name.rpartition("-")[2].isdigit() else me
                if pid == me or _alive(pid):
                    continue
            else:
                continue
            base = name.split(".ndjson")[0]
            target = path.with_name(f"{base}.ndjson.claimed-{me}")
            try:
                os.rename(path, target)  # atomic: whoever renames it first owns it
            except FileNotFoundError:
                continue
            yield target

    @staticmethod
    def read(path: Path) -> list[tuple[Any, ...]]:
        out = []
        for line in path.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):  # a torn last line of a crash
                out.append(tuple(orjson.loads(line)))
        return out

    def count(self) -> int:
        return sum(1 for _ in self.directory.glob("*.ndjson*")) if self.directory.is_dir() else 0
