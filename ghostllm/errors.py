"""Every error a caller can see, and the one place that maps it to HTTP and gRPC.

Handlers raise these; `ghostllm.api.status` turns them into a gRPC status plus
trailing metadata (`ghostllm-http-status`, `ghostllm-error`) from which Envoy's
Lua filter writes the OpenAI-shaped REST error. Native gRPC clients get the
gRPC code and the message.
"""

from __future__ import annotations

import json

import grpc


class GhostError(Exception):
    http_status: int = 500
    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    error_type: str = "server_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.retry_after = retry_after
        # Sent with the error (REST headers, gRPC trailing metadata): the x-ratelimit-* of a 429.
        self.headers = headers

    def to_dict(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_json(self) -> str:
        # ASCII-only on purpose: the body travels as gRPC metadata, which must be printable ASCII.
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=True)


class ConfigError(Exception):
    """Invalid configuration: reported at start-up, never to a client."""


class StoreError(Exception):
    """The store cannot be used as configured: unreachable, or its schema does not match
    the code (migrations pending, or a schema newer than this version). Reported by the
    command line like a configuration error (exit code 2), never to a client."""


class InvalidRequest(GhostError):
    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    error_type = "invalid_request_error"


class AuthenticationFailed(GhostError):
    http_status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"


class PermissionDenied(GhostError):
    http_status = 403
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    error_type = "permission_error"
    default_code = "permission_denied"


class NotFound(GhostError):
    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND
    error_type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFound(NotFound):
    default_code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model '{model}' does not exist or you do not have access to it.", param="model")


class AlreadyExists(GhostError):
    """A record with that unique value (email, team name) exists already."""

    http_status = 409
    grpc_code = grpc.StatusCode.ALREADY_EXISTS
    error_type = "invalid_request_error"
    default_code = "already_exists"


class LastAdmin(GhostError):
    """Deleting, demoting or deactivating the last active admin user, which would leave no
    one able to use the admin API. FAILED_PRECONDITION rather than a 400: the request is
    well formed and becomes acceptable once the store changes (another admin exists)."""

    http_status = 409
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    error_type = "invalid_request_error"
    default_code = "last_admin"

    def __init__(self, email: str, *, param: str | None = None) -> None:
        super().__init__(f"user {email} is the last active admin: make another user admin first", param=param)


class PayloadTooLarge(GhostError):
    http_status = 413
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimited(GhostError):
    http_status = 429
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class QuotaExceeded(GhostError):
    """A budget is spent: OpenAI's own words for it (its SDK raises RateLimitError)."""

    http_status = 429
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    error_type = "insufficient_quota"
    default_code = "insufficient_quota"


class InternalError(GhostError):
    pass


class ProviderError(GhostError):
    """The upstream provider failed or answered something we cannot use."""

    http_status = 502
    grpc_code = grpc.StatusCode.UNAVAILABLE
    error_type = "provider_error"
    default_code = "provider_error"


class UnusableAnswer(ProviderError):
    """An answer that arrived whole but cannot be used (not JSON, the wrong shape, over the
    size limit): the same deployment asked again answers the same, so routing moves on to
    the next one instead of retrying it."""


class ServiceUnavailable(GhostError):
    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE
    error_type = "server_error"
    default_code = "service_unavailable"


class UpstreamTimeout(GhostError):
    http_status = 504
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    error_type = "timeout_error"
    default_code = "timeout"
