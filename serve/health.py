"""Standard `grpc.health.v1` health service: NOT_SERVING while loading or draining, SERVING in between."""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICES = ("", "inference.GRPCInferenceService", "hidecl.v1.ContinualClassifier")


class Health:
    def __init__(self) -> None:
        self.servicer = health.aio.HealthServicer()
        self.serving = False

    def add_to(self, server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    async def set(self, serving: bool) -> None:
        self.serving = serving
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in SERVICES:
            await self.servicer.set(name, status)

    async def drain(self) -> None:
        """Every service NOT_SERVING for good (later `set` calls are ignored by the servicer)."""
        self.serving = False
        await self.servicer.enter_graceful_shutdown()
