"""`model: "auto"`: the gateway chooses the model, by `routing.auto`.

The candidates are the catalogue's models (only those `routing.auto.order` lists, when it
lists any) that offer what the request needs (the endpoint's capability; streaming, functions
or vision when the request uses them), ranked by `prefer`:

- cheapest: lowest input + output price per 1M tokens of the model's cheapest deployment;
- fastest: lowest time to first token among its deployments, as this worker's router has
  measured it. A model with an unmeasured deployment comes first, as untried deployments do
  for the least-latency strategy: ranked last, it would never be tried, so never measured;
- order: as `order` lists them.

Ties keep `order`'s order, else the catalogue's. A request gets those its key may use that can
serve now: with a deployment whose circuit is not open (a half-open one counts, as for
`Router.serving`) and whose provider did not fail its last health check (routing/health.py's
checks; a provider not checked yet counts, since a request cannot wait for its first check the
way /health does). When none can, the key's candidates are still tried in rank order, as the
router still tries a deployment whose circuit is open when every one is.

The first is the request's model; the next `fallbacks` become its fallbacks for this request
only (the router's plan walks them like configured ones, which they replace: every candidate
is one the key may use, a configured fallback maybe not). The answer names the model that
served it, as for any fallback.

The ranking by price and order is rebuilt only when the catalogue changes; per request it is
one walk over it, stopped once enough candidates are found (fastest: every usable one, then
sorted by the latest averages). A few microseconds for a dozen models.
"""

from __future__ import annotations

import logging
import math
import operator
from collections.abc import Callable, Iterable
from dataclasses import replace

from ghostllm.config import AUTO_MODEL, AutoConfig, Capability
from ghostllm.errors import InvalidRequest, ModelNotFound, PermissionDenied
from ghostllm.routing.catalogue import Catalogue, Model
from ghostllm.routing.circuit import CircuitState
from ghostllm.routing.health import ProviderHealth
from ghostllm.routing.router import Router
from ghostllm.routing.strategies import fresh_ttft

log = logging.getLogger(__name__)

# May the caller's key use this model (by id)? None: any model.
Allowed = Callable[[str], bool] | None
# Chosen models (with their fallbacks) kept for reuse: a handful of candidate lists recur.
MAX_CHOSEN = 256


def cost(model: Model) -> float:
    """What `cheapest` ranks by: the model's cheapest deployment."""
    return min(d.cost_rank for d in model.deployments)


class Auto:
    def __init__(
        self,
        catalogue: Catalogue,
        router: Router,
        health: ProviderHealth | None = None,
        config: AutoConfig | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.router = router
        self.health = health
        self.config = config or AutoConfig()
        # The catalogue's models the rankings were made from (a reload makes new Model objects).
        self._source: list[Model] = []
        self._pool: tuple[Model, ...] = ()
        self._ranked: dict[frozenset[Capability], tuple[Model, ...]] = {}
        # By the identities of the candidates (kept alive in the value, so the ids stay theirs).
        self._chosen: dict[tuple[int, ...], tuple[tuple[Model, ...], Model]] = {}

    # ------------------------------------------------------------------ the ranking

    def _refresh(self) -> None:
        models = self.catalogue.models
        src = self._source
        if len(models) == len(src) and all(map(operator.is_, models, src)):
            return
        self._source = models
        self._ranked.clear()
        self._chosen.clear()
        self._pool = self._candidates(models)

    def _candidates(self, models: list[Model]) -> tuple[Model, ...]:
        if any(m.id == AUTO_MODEL for m in models):
            log.warning("routing.auto: the catalogue's model %r is hidden by routing.auto", AUTO_MODEL)
        if not self.config.order:
            return tuple(m for m in models if m.id != AUTO_MODEL)
        by_id = {m.id: m for m in models}
        missing = [m for m in self.config.order if m not in by_id]
        if missing:
            log.warning("routing.auto.order: not in the catalogue (skipped): %s", ", ".join(missing))
        return tuple(by_id[m] for m in self.config.order if m in by_id)

    def _rank(self, needs: frozenset[Capability]) -> tuple[Model, ...]:
        ranked = self._ranked.get(needs)
        if ranked is None:
            offering = [m for m in self._pool if needs <= m.capabilities]
            if self.config.prefer == "cheapest":
                offering.sort(key=cost)  # stable: ties keep the pool's order
            ranked = self._ranked[needs] = tuple(offering)
        return ranked

    # ------------------------------------------------------------------ per request

    def _score(self, model: Model, now: float, fastest: bool) -> float | None:
        """None: no deployment of `model` can serve now. Else its latency (fastest) or 0."""
        health, router = self.health, self.router
        best = math.inf
        for d in model.deployments:
            if health is not None:
                check = health.check_of(d.provider.id)
                if check is not None and not check.healthy:
                    continue
            # state() makes the deployment's entry when it has none: the one its first request makes.
            st = router.state(d)
            if st.circuit.current(now) is CircuitState.OPEN:
                continue
            if not fastest:
                return 0.0
            ttft = fresh_ttft(st, now, router.config.latency_stale_s)
            if ttft is None:
                return 0.0  # unmeasured (or long ago): first, so that it gets measured
            best = min(best, ttft)
        return best if best < math.inf else None

    def candidates(self, needs: Iterable[Capability] = (), allowed: Allowed = None, most: int = 0) -> list[Model]:
        """The models this request would try, best first (at most `most`; 0: all of them).
        Raises the client's error when there are none: 400 when no model offers what the
        request needs, 403 when the key may use none of those that do."""
        self._refresh()
        wanted = needs if isinstance(needs, frozenset) else frozenset(needs)
        ranked = self._rank(wanted)
        fastest = self.config.prefer == "fastest"
        limit = most or len(ranked)
        now = self.router.clock()
        found: list[tuple[float, Model]] = []
        permitted: list[Model] = []
        for m in ranked:
            if allowed is not None and not allowed(m.id):
                continue
            permitted.append(m)
            score = self._score(m, now, fastest)
            if score is None:
                continue
            found.append((score, m))
            if not fastest and len(found) >= limit:
                break
        if found:
            if fastest:
                found.sort(key=operator.itemgetter(0))  # stable: ties keep the ranking's order
            return [m for _, m in found[:limit]]
        if permitted:
            # Nothing looks able to serve: try them anyway (the health check or circuit may be wrong).
            return permitted[:limit]
        if not ranked:
            if not wanted:
                raise ModelNotFound(AUTO_MODEL)
            what = ", ".join(sorted(c.value for c in wanted))
            raise InvalidRequest(f"model '{AUTO_MODEL}' has no model that supports {what}", param="model")
        raise PermissionDenied(
            f"This key is not allowed to use any of the models '{AUTO_MODEL}' chooses from.", param="model"
        )

    def choose(self, needs: Iterable[Capability] = (), allowed: Allowed = None) -> Model:
        """The request's model: the best candidate, the next ones its fallbacks."""
        chosen = self.candidates(needs, allowed, 1 + self.config.fallbacks)
        key = tuple(map(id, chosen))
        hit = self._chosen.get(key)
        if hit is not None:
            return hit[1]
        first = chosen[0]
        fallbacks = tuple(m.id for m in chosen[1:])
        model = first
        if fallbacks != first.config.fallbacks:
            model = Model(replace(first.config, fallbacks=fallbacks), first.capabilities, first.deployments)
        if len(self._chosen) >= MAX_CHOSEN:
            self._chosen.clear()
        self._chosen[key] = (tuple(chosen), model)
        return model

    def capabilities(self, allowed: Allowed = None) -> frozenset[Capability]:
        """What "auto" offers a key: everything one of the models it may choose offers (the
        listing's entry; empty: the key may use none, so it is not listed)."""
        self._refresh()
        out: frozenset[Capability] = frozenset()
        for m in self._pool:
            if allowed is None or allowed(m.id):
                out |= m.capabilities
        return out
