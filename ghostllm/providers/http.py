"""A provider reached over HTTP: one translator (the wire format) over one transport."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from ghostllm.config import DeploymentConfig, ProviderConfig
from ghostllm.errors import GhostError, ProviderError
from ghostllm.protocol.embeddings import as_base64
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.providers.base import Call, Json, Provider, Reply, StreamBatch
from ghostllm.providers.translator import Translator
from ghostllm.providers.transport import HTTPTransport, Timeouts


class HTTPProvider(Provider):
    def __init__(
        self,
        config: ProviderConfig,
        translator: Translator,
        max_response_bytes: int,
        stream_total_s: float | None = None,
        stream_silence_s: float | None = None,
    ) -> None:
        super().__init__(config)
        self.translator = translator
        self.transport = HTTPTransport(
            config, translator.headers(), max_response_bytes, stream_total_s, stream_silence_s
        )

    async def start(self) -> None:
        await self.transport.start()

    async def close(self) -> None:
        await self.transport.close()

    def timeouts_for(self, deployment: DeploymentConfig) -> Timeouts:
        return self.transport.resolve(deployment)

    async def complete(self, endpoint: Endpoint, body: Json, model: str, call: Call) -> Reply:
        t = self.translator
        req = t.request(endpoint, body, model, stream=False, entry=call.entry)
        reply = t.reply(endpoint, await self.transport.post(req.path, req.body, call, t.error))
        if endpoint is Endpoint.EMBEDDINGS and body.get("encoding_format") == "base64":
            # Upstreams with floats only: packed as asked (an OpenAI upstream's base64 stays as it came).
            as_base64(reply.data)
        return reply

    async def stream(self, endpoint: Endpoint, body: Json, model: str, call: Call) -> AsyncGenerator[StreamBatch]:
        t = self.translator
        req = t.request(endpoint, body, model, stream=True, entry=call.entry)
        decoder = t.stream_decoder(endpoint)
        async with aclosing(self.transport.stream(req.path, req.body, call, t.error)) as reads:
            async for data in reads:
                chunks = decoder.feed(data)
                if chunks or decoder.done:
                    # The batch that ends the stream carries its last chunks, so callers can
                    # write the terminator together with them.
                    yield StreamBatch(chunks, decoder.usage, decoder.done)
                if decoder.done:
                    return
        chunks = decoder.end()
        if decoder.done:
            yield StreamBatch(chunks, decoder.usage, True)
            return
        raise ProviderError(f"provider {self.id} ended the stream before it was complete")

    async def list_models(self, limit_s: float | None = None) -> list[str]:
        t = self.translator
        return t.models(await self.transport.get(t.models_path(), t.error, limit_s))

    async def health(self) -> bool:
        try:
            await self.list_models(limit_s=2.0)
        except GhostError:
            return False
        return True
