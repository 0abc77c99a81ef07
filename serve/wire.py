"""Requests that are not the message they claim to be: INVALID_ARGUMENT with one sentence, no traceback.

gRPC itself answers a request it cannot parse with UNKNOWN and logs a traceback per call, so a flood of
garbage would fill the log. This interceptor parses unary requests itself; garbage becomes INVALID_ARGUMENT.
Admin calls are parsed strictly: a field the server does not know (e.g. a version sent as a string, which
protobuf would keep aside and read as 0 = "newest") is refused instead of guessed at.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from .auth import ADMIN_PREFIX

log = logging.getLogger("serve.wire")


class _Malformed:
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _parser(deserialize, strict: bool):
    def parse(data: bytes):
        try:
            message = deserialize(data)
        except (DecodeError, ValueError, TypeError) as error:
            return _Malformed(f"the request is not a valid protobuf message ({len(data)} bytes): {error}")
        if strict and len(UnknownFieldSet(message)):
            return _Malformed("the request holds fields this server does not know (wrong type or a newer "
                              "client?): send the fields of the .proto in protos/ only.")
        return message
    return parse


def _guarded(behavior):
    async def handle(request, context):
        if isinstance(request, _Malformed):
            log.info("refused a malformed request: %s", request.reason)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        return await behavior(request, context)
    return handle


class MalformedRequests(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if (handler is None or handler.request_streaming or handler.response_streaming or handler.unary_unary is None
                or handler.request_deserializer is None):
            return handler
        parse = _parser(handler.request_deserializer, details.method.startswith(ADMIN_PREFIX))
        return grpc.unary_unary_rpc_method_handler(_guarded(handler.unary_unary), parse, handler.response_serializer)
