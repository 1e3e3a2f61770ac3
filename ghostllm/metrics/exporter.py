"""The metrics exporter: a small process `serve` starts beside the workers, answering
`GET /metrics` on `server.metrics_port` with every worker's metrics (prometheus-client's
multiprocess collector over the directory they write to) followed by Envoy's own stats
(its admin's /stats/prometheus), so one scrape sees the whole gateway.

A process of its own, not a thread of the supervisor (which forks workers with a preexec
hook, unsafe with threads) nor a worker (each sees only itself, and a scrape must not take
a worker's time): merging the files costs milliseconds a scrape, here, on nobody's request.
"""

from __future__ import annotations

import argparse
import logging
import os
import struct
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector

from ghostllm.metrics.families import ENVOY_UP

log = logging.getLogger(__name__)

# Envoy's admin answers at once when it is up; a scrape should not wait long for a dead one.
ENVOY_TIMEOUT_S = 2.0


class Exporter:
    def __init__(self, directory: Path, envoy_admin: str = "") -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        _SettledFiles(str(directory), self.registry)
        # Text format 0.0.4, which is what Envoy writes (ours is appended to, never mixed with, OpenMetrics).
        self.envoy_url = f"{envoy_admin.rstrip('/')}/stats/prometheus" if envoy_admin else ""
        self._session: aiohttp.ClientSession | None = None

    async def start(self, app: web.Application) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ENVOY_TIMEOUT_S))

    async def close(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def envoy_stats(self) -> bytes | None:
        if not self.envoy_url or self._session is None:
            return None
        try:
            async with self._session.get(self.envoy_url) as resp:
                if resp.status == 200:
                    return await resp.read()
                log.warning("Envoy's admin answered %s for its stats", resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("Envoy's stats could not be read: %r", exc)
        return None

    async def scrape(self) -> bytes:
        envoy = await self.envoy_stats()
        up = CollectorRegistry(auto_describe=False)
        up.register(_Constant(GaugeMetricFamily(ENVOY_UP.name, ENVOY_UP.help, value=1.0 if envoy else 0.0)))
        body = generate_latest(self.registry) + generate_latest(up)
        if envoy:
            body += envoy if envoy.endswith(b"\n") else envoy + b"\n"
        return body

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=await self.scrape(), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.on_startup.append(self.start)
        app.on_cleanup.append(self.close)
        return app


# A worker's metric file is created empty, then sized and given its header: fewer bytes than
# that header is a file being made, read next time.
HEADER_BYTES = 8
# A worker's file may also vanish mid-read (a dead worker's live gauges are removed).
READ_ATTEMPTS = 3


def _made(path: str) -> bool:
    try:
        return os.path.getsize(path) >= HEADER_BYTES
    except OSError:
        return False


class _SettledFiles(MultiProcessCollector):
    """prometheus-client's multiprocess collector, without its race with a worker creating or
    removing a file while a scrape reads the directory (seen as a 500 with a struct.error)."""

    def __init__(self, path: str, registry: CollectorRegistry) -> None:
        super().__init__(registry, path=path)  # type: ignore[no-untyped-call]
        self.directory = path

    def collect(self) -> Any:
        for _ in range(READ_ATTEMPTS - 1):
            try:
                return self._merged()
            except (FileNotFoundError, struct.error):
                continue  # the directory changed under the read: again
        return self._merged()

    def _merged(self) -> Any:
        with os.scandir(self.directory) as entries:
            files = [e.path for e in entries if e.name.endswith(".db") and _made(e.path)]
        return self.merge(files, accumulate=True)  # type: ignore[no-untyped-call]


class _Constant:
    """A collector of one family made beforehand."""

    def __init__(self, family: GaugeMetricFamily) -> None:
        self.family = family

    def collect(self) -> list[GaugeMetricFamily]:
        return [self.family]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ghostllm.metrics", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True, help="the workers' multiprocess directory")
    parser.add_argument("--envoy-admin", default="", help="Envoy's admin URL (its stats are appended)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s metrics %(levelname)s %(name)s: %(message)s")
    exporter = Exporter(args.dir, args.envoy_admin)
    try:
        web.run_app(exporter.app(), host=args.host, port=args.port, print=None, access_log=None)
    except OSError as exc:
        log.error("cannot serve metrics on %s:%d: %s", args.host, args.port, exc)
        return 1
    return 0
