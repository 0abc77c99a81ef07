"""Request errors that carry their gRPC status: raised anywhere in serve/, turned into a status by the servicers."""

from __future__ import annotations

import grpc


class ServeError(Exception):
    """An error the caller sees as `code` with this message (one sentence: the problem and the fix)."""

    code = grpc.StatusCode.INTERNAL


class InvalidArgument(ServeError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServeError):
    code = grpc.StatusCode.NOT_FOUND


class QueueFull(ServeError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ServeError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ServeError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class BundleBroken(ServeError):
    """The bundle misbehaved (e.g. a router task id out of range): our side, not the caller's."""

    code = grpc.StatusCode.INTERNAL
