"""The server's settings: one frozen dataclass, validated on construction, filled from the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PROVIDERS = {  # --provider → onnxruntime execution providers, best first (CPU is always the fallback)
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}
MiB = 1 << 20


class ConfigError(ValueError):
    """A setting that cannot work; the message names the flag and the fix."""


@dataclass(frozen=True)
class ServeConfig:
    bundle_root: Path
    host: str = "0.0.0.0"
    port: int = 8001  # 0: any free port (tests)
    metrics_port: int | None = 8002  # None: no Prometheus endpoint
    metrics_host: str | None = None  # None: the gRPC --host
    metrics_tokens: tuple[str, ...] = ()  # bearer tokens /metrics requires; empty: open
    reuse_port: bool = False  # SO_REUSEPORT: let several servers share the gRPC port (off: a clash is an error)
    version: int | None = None  # serve this version; None: the newest and follow new ones
    provider: str = "cpu"
    intra_op_threads: int = 0  # 0: onnxruntime's default (all cores)
    max_batch_size: int = 32  # samples per executed batch
    max_queue_delay_ms: float = 2.0  # how long the first request of a batch waits for company
    max_queue_size: int = 256  # waiting requests per model; beyond it: RESOURCE_EXHAUSTED
    max_message_bytes: int = 16 * MiB  # one request or response on the wire
    # Bounded work per request and in total (README "Limits"): a request is refused, not swapped to disk.
    max_images_per_request: int = 128  # encoded images or pixel_values rows; larger batches are split anyway
    max_image_pixels: int = 12_000_000  # per image, decoded and after the resize plan (a 1×10⁶ strip is refused)
    max_inflight_bytes: int = 256 * MiB  # request bytes + decoded pixels of every admitted request together
    decode_threads: int = 2  # image decoding workers (each holds at most one image of max_image_pixels)
    load_retry_window_s: float = 600.0  # a version that fails to load is retried while its files change
    poll_interval_s: float = 5.0  # bundle root polling for new versions (0: off)
    grace_s: float = 30.0  # drain: how long in-flight requests may take after SIGTERM
    auth_tokens: tuple[str, ...] = ()  # bearer tokens accepted on every call except health; empty: auth off
    admin_tokens: tuple[str, ...] = ()  # bearer tokens for ContinualAdmin; empty: admin calls refused
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # set: mTLS (clients must present a certificate signed by this CA)
    server_name: str = "hide-cl"
    extra_options: tuple[tuple[str, int], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ConfigError(f"--provider {self.provider!r} is unknown: use one of {sorted(PROVIDERS)}.")
        for flag, value in (("--max-batch-size", self.max_batch_size), ("--max-queue-size", self.max_queue_size),
                            ("--max-images-per-request", self.max_images_per_request),
                            ("--max-image-pixels", self.max_image_pixels), ("--decode-threads", self.decode_threads),
                            ("--max-message-mb", self.max_message_bytes),
                            ("--max-inflight-mb", self.max_inflight_bytes)):
            if value < 1:
                raise ConfigError(f"{flag} must be at least 1.")
        if self.max_inflight_bytes < self.max_message_bytes:
            raise ConfigError("--max-inflight-mb must be at least --max-message-mb: else a request of the largest "
                              "accepted size could never be admitted.")
        if self.max_queue_delay_ms < 0 or self.grace_s < 0 or self.poll_interval_s < 0:
            raise ConfigError("--max-queue-delay-ms, --grace-s and --poll-interval-s cannot be negative.")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both --tls-cert and --tls-key.")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError("--tls-client-ca (mTLS) needs --tls-cert and --tls-key as well.")
        for path in (self.tls_cert, self.tls_key, self.tls_client_ca):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"TLS file '{path}' not found.")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def metrics_bind_host(self) -> str:
        return self.host if self.metrics_host is None else self.metrics_host

    def grpc_options(self) -> list[tuple[str, int]]:
        return [("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes),
                ("grpc.so_reuseport", int(self.reuse_port)), *self.extra_options]


def read_tokens(path: str | Path | None) -> tuple[str, ...]:
    """Tokens from a file, one per line (blank lines and #comments ignored)."""
    if path is None:
        return ()
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"token file '{file}' not found.")
    tokens = tuple(line.strip() for line in file.read_text().splitlines() if line.strip() and not line.startswith("#"))
    if not tokens:
        raise ConfigError(f"token file '{file}' holds no token: write one per line.")
    return tokens
