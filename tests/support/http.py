"""Raw HTTP helpers: the exact bytes the gateway sends, for schema checks."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from tests.support.auth import ADMIN_KEY
from tests.support.openapi import validate


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[str]:
        """The data payloads of an SSE body, in order."""
        return [line[6:] for line in self.body.decode().split("\n") if line.startswith("data: ")]


def request(
    url: str,
    body: bytes | dict[str, Any] | None = None,
    *,
    method: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
    key: str | None = ADMIN_KEY,
) -> Reply:
    """`key`: sent as `Authorization: Bearer key` unless `headers` has its own (None: none)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    req.add_header("content-type", "application/json")
    if key is not None and not any(k.lower() == "authorization" for k in headers or {}):
        req.add_header("authorization", f"Bearer {key}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Reply(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


def check_error(reply: Reply, status: int, etype: str | None = None, code: str | None = None) -> dict[str, Any]:
    """An OpenAI-shaped error with this status (and type, code), and nothing of gRPC's showing."""
    assert reply.status == status, reply.body[:500]
    assert reply.headers["content-type"] == "application/json"
    assert "grpc-status" not in reply.headers and "ghostllm-error" not in reply.headers
    body = reply.json()
    validate("ErrorResponse", body)
    assert set(body["error"]) == {"message", "type", "param", "code"}
    err: dict[str, Any] = body["error"]
    assert err["message"]
    if etype is not None:
        assert err["type"] == etype, err
    if code is not None:
        assert err["code"] == code, err
    return err


def upstream_last_request(upstream_url: str) -> Any:
    return request(upstream_url + "/_dev/stats").json()["last_request"]


def upstream_stats(upstream_url: str) -> Any:
    return request(upstream_url + "/_dev/stats").json()


def envoy_counter(admin_url: str, name: str) -> int:
    """One of Envoy's counters, from its admin interface."""
    text = request(f"{admin_url}/stats?filter=^{name}$").body.decode()
    return int(text.split(": ")[1]) if text else 0
