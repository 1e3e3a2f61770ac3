"""A provider that needs no connection, for tests and the bench that script its answers in
memory (complete, stream): only the gateway's own work runs around it."""

from __future__ import annotations

from ghostllm.providers.base import Provider


class InMemory(Provider):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def health(self) -> bool:
        return True

    async def list_models(self) -> list[str]:
        return []
