"""The admin API's providers and models (/admin/providers, /admin/models).

Both come from the YAML config, from the store, or both, and the store wins; only the
store is written here (the config is the operator's file). A provider's API key is
stored encrypted and never comes back: listings say only whether one is there. Every
change is announced, so each worker reloads its catalogue.

A model written here may name only providers and fallback models that exist (in the config,
the store, or for fallbacks the catalogue, which has the discovered ones): a typo is a 400
naming it, not a model the workers quietly leave out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ghostllm.accounts import validation
from ghostllm.accounts.audit import Actor
from ghostllm.accounts.cipher import SecretCipher
from ghostllm.accounts.keyring import load_cipher
from ghostllm.accounts.models import ModelRepository, check_deployments, check_fallbacks, check_id
from ghostllm.accounts.providers import ProviderRepository
from ghostllm.accounts.records import ModelRecord, ProviderRecord
from ghostllm.accounts.repository import UNSET, Unset
from ghostllm.api import admin_messages as msg
from ghostllm.api.admin_access import actor, admitted
from ghostllm.api.boundary import unary
from ghostllm.cluster.changes import CATALOGUE
from ghostllm.config import TIMEOUT_FIELDS, Config, DeploymentConfig, ModelConfig, ProviderConfig
from ghostllm.errors import ConfigError, InternalError, InvalidRequest
from ghostllm.gateway.context import RequestContext
from ghostllm.gateway.pipeline import Pipeline
from ghostllm.protocol.endpoints import Endpoint
from ghostllm.providers.factory import TRANSLATORS
from ghostllm.routing.catalogue import Catalogue
from ghostllm.routing.health import ProviderHealth
from ghostllm.routing.merge import StoredProvider, stored_provider_config
from ghostllm.store import Store
from ghostllm.v1 import admin_pb2

READ, WRITE = Endpoint.ADMIN_READ, Endpoint.ADMIN_WRITE
# A provider's config values under names like these are never shown (the store may hold
# whatever an operator put there: headers with tokens, say).
SECRET_WORDS = ("key", "secret", "token", "password", "authorization", "cookie", "credential")
HIDDEN = "(hidden)"
MODEL_FIELDS = (
    "upstream_model", "context_length", "input_price_per_1m", "output_price_per_1m", "owned_by", "strategy", "retries"
)  # fmt: skip
# What an update's `clear` may name (as the proto's comment lists them).
MODEL_CLEARABLE = ("fallbacks", "retries")


def redacted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: HIDDEN if any(w in k.lower() for w in SECRET_WORDS) else redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value


def provider_key(request: admin_pb2.PutProviderRequest, config: dict[str, Any] | None) -> str | None:
    """The key to store, from `api_key` or the seed's `config.api_key` (taken out of the
    config: it must never be stored in clear); checked before anything is written."""
    top = msg.optional(request, "api_key")
    inner = None if config is None else config.pop("api_key", None)
    if top is not None and inner is not None:
        raise InvalidRequest("api_key: give it once (at the top level or in config)", param="api_key")
    key = top if top is not None else inner
    return None if key is None else validation.secret("api_key", key)


def _provider_type(value: str) -> str:
    if value not in TRANSLATORS:
        raise InvalidRequest(
            f"type: unknown provider type {value[:100]!r}; known: {', '.join(TRANSLATORS)}", param="type"
        )
    return value


def check_definition(provider_id: str, fields: Mapping[str, Any], yaml: ProviderConfig | None) -> None:
    """What the workers will build from the row (routing/merge.py), built now: a definition
    they could not use is a 400 here, not a warning in their logs later."""
    settings: Mapping[str, Any] = fields["config"]
    if "api_key_env" in settings:
        # It would name any variable of the gateway's environment (GHOSTLLM_ADMIN_KEY, say)
        # as what is sent to this provider's base_url.
        raise InvalidRequest(
            "config.api_key_env: cannot be set through the admin API; give api_key (stored encrypted)",
            param="config.api_key_env",
        )
    row = StoredProvider(provider_id, True, fields["provider_type"], fields["base_url"], settings)
    try:
        stored_provider_config(row, yaml)
    except ConfigError as exc:
        raise InvalidRequest(f"config: {exc}", param="config", code="invalid_value") from None


def deployment_message(d: DeploymentConfig) -> admin_pb2.Deployment:
    return msg.fill(admin_pb2.Deployment, dataclasses.asdict(d))


def deployments_given(request: Any) -> list[DeploymentConfig]:
    """The request's deployments (an absent weight is 1, absent prices the model's)."""
    return [
        DeploymentConfig(
            provider=d.provider,
            upstream_model=d.upstream_model,
            weight=d.weight if d.HasField("weight") else 1.0,
            input_price_per_1m=msg.optional(d, "input_price_per_1m"),
            output_price_per_1m=msg.optional(d, "output_price_per_1m"),
            **{name: msg.optional(d, name) for name in TIMEOUT_FIELDS},
        )
        for d in request.deployments
    ]


def catalogue_model(record: ModelRecord) -> admin_pb2.CatalogueModel:
    return msg.fill(
        admin_pb2.CatalogueModel,
        record.to_dict(),
        provider=record.provider_id,
        deployments=[deployment_message(d) for d in record.targets],
        source="database",
    )


def configured_model(m: ModelConfig) -> admin_pb2.CatalogueModel:
    return msg.fill(
        admin_pb2.CatalogueModel,
        dataclasses.asdict(m),
        capabilities=list(m.capabilities),
        deployments=[deployment_message(d) for d in m.targets],
        fallbacks=list(m.fallbacks),
        source="config",
    )


class CatalogueAdmin:
    pipeline: Pipeline
    catalogue: Catalogue
    health: ProviderHealth
    store: Store
    config: Config
    models: ModelRepository
    changed: Callable[[str], Awaitable[None]]

    def _cipher(self) -> SecretCipher:
        """Loaded for each key written, so a rotation (`ghostllm secrets rotate`) is picked up."""
        try:
            return load_cipher(self.config, create=True)
        except ConfigError as exc:
            raise InternalError(f"Provider keys cannot be stored: {exc}") from None

    def _yaml(self, provider_id: str) -> ProviderConfig | None:
        """The provider as ghostllm.yaml defines it (None: the store alone does)."""
        return next((p for p in self.config.providers if p.id == provider_id), None)

    def _provider(
        self, provider_id: str, stored: ProviderRecord | None, health: Mapping[str, bool]
    ) -> admin_pb2.Provider:
        yaml = self._yaml(provider_id)
        served = [m.id for m in self.catalogue.models if m.deployment.provider.id == provider_id]
        enabled = stored.enabled if stored is not None else True
        if not enabled:
            status = "disabled"
        elif provider_id in health:
            status = "healthy" if health[provider_id] else "unhealthy"
        else:  # not (yet) built by this worker: the store's definition is not usable, or not loaded yet
            status = "unknown"
        return admin_pb2.Provider(
            id=provider_id,
            name=(stored.name if stored is not None else "") or provider_id,
            type=stored.provider_type if stored is not None else yaml.type if yaml is not None else "",
            base_url=stored.base_url if stored is not None else yaml.base_url if yaml is not None else "",
            enabled=enabled,
            sources=[name for name, there in (("config", yaml), ("database", stored)) if there is not None],
            models=served,
            health_status=status,
            has_key=(stored is not None and stored.has_key) or (yaml is not None and bool(yaml.api_key)),
            config=msg.struct(redacted(stored.config) if stored is not None else {}),
            api_key_env=(yaml.api_key_env or None) if yaml is not None else None,
        )

    # Providers

    @unary
    async def ListProviders(
        self, request: admin_pb2.ListProvidersRequest, rc: RequestContext
    ) -> admin_pb2.ListProvidersResponse:
        async with admitted(self.pipeline, rc, READ):
            stored = {p.id: p for p in await ProviderRepository(self.store).list_providers()}
            health = await self.health.get()
            configured = [p.id for p in self.config.providers]
            ids = [*configured, *sorted(set(stored) - set(configured))]
            return admin_pb2.ListProvidersResponse(providers=[self._provider(i, stored.get(i), health) for i in ids])

    @unary
    async def PutProvider(self, request: admin_pb2.PutProviderRequest, rc: RequestContext) -> admin_pb2.Provider:
        async with admitted(self.pipeline, rc, WRITE) as p:
            who = actor(p, rc)
            provider_id = validation.provider_id(request.id)
            config = msg.plain(request.config) if request.HasField("config") else None
            key = provider_key(request, config)
            kind, url = msg.given(request, "type"), msg.given(request, "base_url")
            given = {
                name: value
                for name, value in {
                    "name": msg.given(request, "name"),
                    "provider_type": kind if kind is UNSET else _provider_type(kind),
                    "base_url": url if url is UNSET else validation.base_url(url),
                    "enabled": msg.given(request, "enabled"),
                    "config": UNSET if config is None else config,
                }.items()
                if value is not UNSET
            }
            repo = ProviderRepository(self.store, None if key is None else self._cipher())
            existing = await repo.find_provider(provider_id)
            if existing is None:
                await self._create_provider(repo, provider_id, given, who)
            else:
                current = {"provider_type": existing.provider_type, "base_url": existing.base_url}
                check_definition(provider_id, {**current, "config": existing.config, **given}, self._yaml(provider_id))
                if given:
                    await repo.update_provider(provider_id, **given, actor=who)
                elif key is None:
                    raise InvalidRequest("nothing to update")
            if key is not None:
                await repo.set_key(provider_id, key, actor=who)
            await self.changed(CATALOGUE)
            return self._provider(provider_id, await repo.get_provider(provider_id), await self.health.get())

    async def _create_provider(
        self, repo: ProviderRepository, provider_id: str, given: dict[str, Any], who: Actor
    ) -> None:
        """A store row for the provider; what the request leaves out comes from the config's."""
        yaml = self._yaml(provider_id)
        defaults = {} if yaml is None else {"provider_type": yaml.type, "base_url": yaml.base_url}
        fields = {"name": provider_id, "enabled": True, "config": {}, **defaults, **given}
        for field, param in (("provider_type", "type"), ("base_url", "base_url")):
            if field not in fields:
                raise InvalidRequest(
                    f"{param}: needed to create provider {provider_id!r} (the config does not define it)", param=param
                )
        check_definition(provider_id, fields, yaml)
        await repo.create_provider(provider_id, **fields, actor=who)

    # Models

    async def _check_references(
        self, model_id: str, provider: str, deployments: list[DeploymentConfig], fallbacks: list[str]
    ) -> None:
        """The providers and fallback models named exist (their shapes checked first, so an
        error names what is wrong with a value before saying it is unknown)."""
        checked_id = check_id(model_id)
        named: list[tuple[str, str]] = []
        if deployments:
            named = [
                (f"deployments[{i}].provider", d.provider)
                for i, d in enumerate(check_deployments(checked_id, deployments))
            ]
        elif provider:
            named = [("provider", validation.provider_id(provider))]
        if named:
            stored = {p.id for p in await ProviderRepository(self.store).list_providers()}
            known = [*(p.id for p in self.config.providers), *sorted(stored)]
            for field, value in named:
                if value not in known:
                    raise InvalidRequest(
                        f"{field}: unknown provider {value!r}; known: {', '.join(known)}",
                        param=field,
                        code="invalid_value",
                    )
        wanted = check_fallbacks(checked_id, fallbacks)
        if wanted:
            models = {m.id for m in await self.models.list_models()}
            models.update(m.id for m in self.config.models)
            models.update(m.id for m in self.catalogue.models)
            for i, f in enumerate(wanted):
                if f not in models:
                    raise InvalidRequest(f"fallbacks[{i}]: unknown model {f!r}", param=f"fallbacks[{i}]")

    @unary
    async def ListModels(
        self, request: admin_pb2.ListCatalogueModelsRequest, rc: RequestContext
    ) -> admin_pb2.ListCatalogueModelsResponse:
        async with admitted(self.pipeline, rc, READ):
            stored = await self.models.list_models()
            ids = {m.id for m in stored}
            return admin_pb2.ListCatalogueModelsResponse(
                models=[
                    *(catalogue_model(m) for m in stored),
                    *(configured_model(m) for m in self.config.models if m.id not in ids),
                ]
            )

    @unary
    async def CreateModel(
        self, request: admin_pb2.CreateCatalogueModelRequest, rc: RequestContext
    ) -> admin_pb2.CatalogueModel:
        async with admitted(self.pipeline, rc, WRITE) as p:
            optional = {f: v for f in MODEL_FIELDS if (v := msg.given(request, f)) is not UNSET}
            deployments, fallbacks = deployments_given(request), list(request.fallbacks)
            await self._check_references(request.id, request.provider, deployments, fallbacks)
            created = await self.models.create_model(
                request.id,
                provider=request.provider,
                capabilities=list(request.capabilities) or None,
                deployments=deployments or None,
                fallbacks=fallbacks,
                **optional,
                actor=actor(p, rc),
            )
            await self.changed(CATALOGUE)
            return catalogue_model(created)

    @unary
    async def UpdateModel(
        self, request: admin_pb2.UpdateCatalogueModelRequest, rc: RequestContext
    ) -> admin_pb2.CatalogueModel:
        async with admitted(self.pipeline, rc, WRITE) as p:
            clear = msg.cleared(request, MODEL_CLEARABLE)
            deployments = deployments_given(request)
            fallbacks: list[str] | Unset | None = (
                None if "fallbacks" in clear else list(request.fallbacks) if request.fallbacks else UNSET
            )
            provider = msg.given(request, "provider")
            await self._check_references(
                request.id,
                provider if isinstance(provider, str) else "",
                deployments,
                fallbacks if isinstance(fallbacks, list) else [],
            )
            updated = await self.models.update_model(
                request.id,
                provider=provider,
                capabilities=list(request.capabilities) or UNSET,
                deployments=deployments or UNSET,
                fallbacks=fallbacks,
                **{f: msg.given(request, f, clear) for f in MODEL_FIELDS},
                actor=actor(p, rc),
            )
            await self.changed(CATALOGUE)
            return catalogue_model(updated)

    @unary
    async def DeleteModel(self, request: admin_pb2.DeleteRequest, rc: RequestContext) -> admin_pb2.Deleted:
        async with admitted(self.pipeline, rc, WRITE) as p:
            gone = await self.models.delete_model(request.id, actor=actor(p, rc))
            await self.changed(CATALOGUE)
            return admin_pb2.Deleted(id=gone.id, deleted=True)
