"""Every shared fidelity case (../shared/fidelity/cases) through the real gateway.

Per case: the provider's replay upstream is loaded with the recorded answer, the case's
OpenAI request goes through Envoy with the openai SDK (streamed when it says so), and both
sides are judged: the client's answer against `expected_openai`, what the gateway sent
against `upstream_http_must` / `upstream_request_must` (tests/fidelity/judge.py). The
holdout cases (the leads' acceptance check) run the same way in their own test.
"""

from __future__ import annotations

import warnings

import pytest

from tests.fidelity.cases import CASES_DIR, HOLDOUT_DIR, Case, is_chat, load, require, upstream_body
from tests.fidelity.environment import LISTING_CASES, CaseEnvironment
from tests.fidelity.judge import judge
from tests.support.http import request

CASES = load(CASES_DIR)
HOLDOUT = load(HOLDOUT_DIR)


def _ids(case: Case) -> str:
    return str(case["id"])


def replay(env: CaseEnvironment, case: Case) -> None:
    server = env.replays[case["provider"]]
    server.load(case["upstream_status"], case["upstream_headers"], upstream_body(case))
    answer = env.client.send(case["openai_request"])
    verdict = judge(case, answer, server.received())
    for advice in verdict.advice:
        warnings.warn(f"{case['id']}: {advice}", stacklevel=1)
    assert not verdict.problems, verdict.report(case)


def test_the_cases_are_there() -> None:
    require(CASES_DIR)
    assert len([c for c in CASES if is_chat(c)]) >= 40


@pytest.mark.parametrize("case", [c for c in CASES if is_chat(c)], ids=_ids)
def test_case(case: Case, case_env: CaseEnvironment) -> None:
    replay(case_env, case)


@pytest.mark.parametrize("case", [c for c in HOLDOUT if is_chat(c)], ids=_ids)
def test_holdout_case(case: Case, case_env: CaseEnvironment) -> None:
    replay(case_env, case)


@pytest.mark.parametrize("case", [c for c in CASES + HOLDOUT if not is_chat(c)], ids=_ids)
def test_listing_case(case: Case, case_env: CaseEnvironment) -> None:
    """A recorded model listing, served to the gateway's discovery and health checks: its
    models appear in /v1/models under that provider, and the provider reads as healthy."""
    if case["id"] not in LISTING_CASES:
        pytest.skip(f"{case['id']}: not a chat exchange nor a listing; translator-only")
    provider = case["provider"]
    listed = case_env.replays[provider].listing_requests()
    path = case["upstream_endpoint"]["path"]
    assert any(r.method == "GET" and r.path.partition("?")[0] == path for r in listed), (
        f"the gateway never asked {provider} for {path}: {[(r.method, r.path) for r in listed]}"
    )
    names = _listed_names(case)
    models = {m.id: m.to_dict() for m in case_env.client.sdk.models.list()}
    for name in names:
        assert name in models, f"{name} (listed by {provider}) is not in /v1/models: {sorted(models)}"
        assert models[name].get("provider") == provider, models[name]
    health = request(f"http://127.0.0.1:{case_env.stack.rest_port}/health").json()
    providers = {p["id"]: p for p in health["providers"]}
    assert providers[provider]["healthy"] is True, providers[provider]


def _listed_names(case: Case) -> list[str]:
    body = case["upstream_response"]
    if "models" in body:
        return [str(m["name"]) for m in body["models"]]
    return [str(m["id"]) for m in body["data"]]
