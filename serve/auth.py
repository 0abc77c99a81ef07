"""Bearer-token authentication via gRPC metadata (`authorization: Bearer <token>`), off by default.

Health checks stay open (orchestrators probe without secrets). `ContinualAdmin` always needs an admin token:
with none configured, admin calls are refused.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

import grpc

HEALTH_PREFIX = "/grpc.health.v1.Health/"
ADMIN_PREFIX = "/hidecl.v1.ContinualAdmin/"


def bearer_matches(header: str | None, tokens: tuple[str, ...]) -> bool:
    """`Bearer <token>` (the scheme is case-insensitive, RFC 7235) with one of `tokens`, in constant time."""
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    return any(hmac.compare_digest(given.strip().encode(), token.encode()) for token in tokens)


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same RPC kind that only refuses."""
    async def unary(request, context):
        await context.abort(code, message)

    async def streaming(request_iterator, context):
        await context.abort(code, message)
        yield  # pragma: no cover  (makes this an async generator)

    codec = (handler.request_deserializer, handler.response_serializer)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, *codec)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, *codec)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, *codec)
    return grpc.unary_unary_rpc_method_handler(unary, *codec)


class TokenAuth(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: tuple[str, ...], admin_tokens: tuple[str, ...],
                 on_failure: Callable[[str], None] = lambda reason: None) -> None:
        self._tokens, self._admin, self._on_failure = tokens, admin_tokens, on_failure

    async def intercept_service(self, continuation, details):
        method = details.method
        if method.startswith(HEALTH_PREFIX):
            return await continuation(details)
        admin = method.startswith(ADMIN_PREFIX)
        tokens = self._admin if admin else self._tokens
        if not tokens and not admin:
            return await continuation(details)
        headers = [v for k, v in (details.invocation_metadata or ()) if k == "authorization"]
        if admin and not tokens:
            reason, code, message = "admin_disabled", grpc.StatusCode.PERMISSION_DENIED, (
                "admin calls are disabled: start the server with --admin-token-file FILE to allow them.")
        elif not headers:
            reason, code, message = "missing", grpc.StatusCode.UNAUTHENTICATED, (
                "missing 'authorization: Bearer <token>' metadata" + (" (admin token)" if admin else "") + ".")
        elif len(headers) > 1:
            reason, code, message = "ambiguous", grpc.StatusCode.UNAUTHENTICATED, (
                f"{len(headers)} 'authorization' headers: send exactly one.")
        elif not bearer_matches(headers[0], tokens):
            reason, code, message = "invalid", grpc.StatusCode.UNAUTHENTICATED, (
                "invalid bearer token" + (": admin calls need an admin token" if admin else "") + ".")
        else:
            return await continuation(details)
        self._on_failure(reason)
        handler = await continuation(details)
        return None if handler is None else _refusal(handler, code, message)
