"""Today's admit stages. Each takes the exchange and either fills it in or raises the
error the client gets; the worker lists them in order (see server/worker.py)."""

from __future__ import annotations

from ghostllm.gateway.exchange import Exchange
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.routing.catalogue import Catalogue


async def decode_body(ex: Exchange) -> None:
    """Parse and validate the body by the endpoint's rules."""
    ex.decode()


class ResolveModel:
    """The public model in the catalogue, which must offer the endpoint's capability."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue

    async def __call__(self, ex: Exchange) -> None:
        if ex.endpoint is Endpoint.MODELS and "model" not in (ex.body or {}):
            return  # the listing: no one model
        ex.model = self.catalogue.resolve(ex.requested_model, ex.endpoint.capability)
        ex.deployment = ex.model.deployment
