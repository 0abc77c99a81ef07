"""`build_server(config)`: the grpc.aio server with every service, the metrics endpoint and the bundle watcher.

Lifecycle: `start()` binds the ports (health NOT_SERVING), loads and warms the newest bundle version that
loads, then turns SERVING and starts polling the bundle root; `stop(grace)` drains: health NOT_SERVING while
new calls get UNAVAILABLE and in-flight ones finish (up to `grace` seconds), then the gRPC server, the
batchers, the bundle and the metrics endpoint close.
"""

from __future__ import annotations

import asyncio
import logging
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_reflection.v1alpha import reflection

from .auth import TokenAuth
from .classifier_service import AdminServicer, ClassifierServicer
from .classifier_service import pb as continual_pb
from .classifier_service import pb_grpc as continual_grpc
from .config import ConfigError, ServeConfig
from .core import InferenceCore
from .decisions import DecisionCollector
from .health import Health
from .metrics import Metrics
from .metrics_http import MetricsEndpoint
from .oip import InferenceServicer
from .oip import pb as oip_pb
from .oip import pb_grpc as oip_grpc
from .protos import pool
from .runtime import BundleRuntime
from .versions import ModelRegistry
from .wire import MalformedRequests

log = logging.getLogger("serve")


class InferenceServer:
    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.metrics.registry.register(DecisionCollector(config.bundle_root))  # the deployment loop's decisions
        self._infer_pool = ThreadPoolExecutor(1, thread_name_prefix="infer")  # one batch at a time uses all cores
        self._load_pool = ThreadPoolExecutor(1, thread_name_prefix="bundle-load")
        self._decode_pool = ThreadPoolExecutor(config.decode_threads, thread_name_prefix="decode")
        self.registry = ModelRegistry(config, self._load_pool, on_swap=self._on_swap,
                                      on_failure=lambda version, error: self.metrics.load_failures.inc(),
                                      on_ignored=self.metrics.ignored_entries.set)
        self.core = InferenceCore(config, self.registry, self.metrics, self._infer_pool, self._decode_pool)
        self.health = Health()
        self._watcher: asyncio.Task | None = None
        self._swaps = 0
        self.port = 0
        self.metrics_port: int | None = None
        self._metrics_endpoint = MetricsEndpoint(self.metrics.registry, config.metrics_tokens)
        auth = TokenAuth(config.auth_tokens, config.admin_tokens,
                         on_failure=lambda reason: self.metrics.auth_failures.labels(reason).inc())
        self.server = grpc.aio.server(interceptors=[auth, MalformedRequests()], options=config.grpc_options())
        self._add_services()
        warn_about_secrets(config)

    def _add_services(self) -> None:
        oip_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(self.core, lambda: self.health.serving, self.config.server_name), self.server)
        continual_grpc.add_ContinualClassifierServicer_to_server(ClassifierServicer(self.core), self.server)
        continual_grpc.add_ContinualAdminServicer_to_server(AdminServicer(self.core), self.server)
        self.health.add_to(self.server)
        names = [oip_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
                 *(s.full_name for s in continual_pb.DESCRIPTOR.services_by_name.values()),
                 "grpc.health.v1.Health", reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, self.server, pool=pool())

    def _bind(self) -> int:
        """The gRPC port; a port another process holds is a ConfigError (no silent sharing: SO_REUSEPORT is off
        unless --reuse-port)."""
        address = f"{self.config.host}:{self.config.port}"
        try:
            if not self.config.tls:
                return self.server.add_insecure_port(address)
            ca = Path(self.config.tls_client_ca).read_bytes() if self.config.tls_client_ca else None
            credentials = grpc.ssl_server_credentials(
                [(Path(self.config.tls_key).read_bytes(), Path(self.config.tls_cert).read_bytes())],
                root_certificates=ca, require_client_auth=ca is not None)
            return self.server.add_secure_port(address, credentials)
        except RuntimeError:
            raise ConfigError(f"cannot listen on {address} for gRPC: the port is in use or the address is not this "
                              "machine's; choose another --port (0: any free one) or stop the other server.") from None

    async def _start_metrics(self) -> None:
        host = self.config.metrics_bind_host
        try:
            self.metrics_port = await self._metrics_endpoint.start(host, self.config.metrics_port)
        except OSError as error:
            raise ConfigError(f"cannot listen on {host}:{self.config.metrics_port} for /metrics ({error.strerror}): "
                              "choose another --metrics-port (-1: off) or stop the other server.") from None

    def _on_swap(self, runtime: BundleRuntime) -> None:
        m = runtime.manifest
        self.metrics.serving(m.version, m.method, m.routing, runtime.requested_providers, runtime.providers)
        self._swaps += 1
        if self._swaps > 1:
            self.metrics.swaps.inc()

    async def start(self) -> None:
        """Bind, load + warm the bundle (NOT_SERVING meanwhile), then SERVING and watch for new versions."""
        await self.health.set(False)
        self.port = self._bind()
        await self.server.start()
        self.core.start()
        try:
            if self.config.metrics_port is not None:
                await self._start_metrics()
            await self.registry.start(self.config.version)
        except BaseException:
            await self.stop(0)
            raise
        await self.health.set(True)
        if self.config.version is None and self.config.poll_interval_s > 0:
            self._watcher = asyncio.get_running_loop().create_task(
                self.registry.watch(self.config.poll_interval_s, on_error=self.metrics.poll_errors.inc))
        runtime = self.registry.current
        log.info("serving bundle version %d on port %d (metrics %s), providers %s", runtime.version, self.port,
                 self.metrics_port, runtime.providers)

    async def stop(self, grace: float | None = None) -> None:
        """Graceful drain: NOT_SERVING and UNAVAILABLE to new calls (health still answers), in-flight calls
        finish within `grace` seconds, then the listeners close."""
        grace = self.config.grace_s if grace is None else grace
        end = time.monotonic() + grace
        await self.health.set(False)
        self.core.drain()
        if self._watcher is not None:
            self._watcher.cancel()
        while self.core.active and time.monotonic() < end:
            await asyncio.sleep(0.01)
        await self.health.drain()
        await self.server.stop(max(0.0, end - time.monotonic()))
        await self.core.close()
        self.registry.close()
        await self._metrics_endpoint.stop()
        for executor in (self._infer_pool, self._load_pool, self._decode_pool):
            executor.shutdown(wait=False, cancel_futures=True)

    async def wait(self) -> None:
        await self.server.wait_for_termination()


def warn_about_secrets(config: ServeConfig) -> None:
    """Settings that work but leak: tokens in clear text, a private key others may read."""
    if (config.auth_tokens or config.admin_tokens or config.metrics_tokens) and not config.tls:
        log.warning("bearer tokens are checked but travel unencrypted: add --tls-cert/--tls-key, or terminate TLS "
                    "in front of this server")
    if config.tls_key is not None and Path(config.tls_key).stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("TLS key '%s' is readable by other users: chmod 600 it", config.tls_key)


def build_server(config: ServeConfig) -> InferenceServer:
    return InferenceServer(config)
