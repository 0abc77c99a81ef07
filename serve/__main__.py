"""`python -m serve --bundle ROOT [--port 8001 --metrics-port 8002 ...]`: serve a bundle root until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from export.manifest import ManifestError

from .config import PROVIDERS, ConfigError, ServeConfig, read_tokens
from .errors import ServeError
from .server import build_server

log = logging.getLogger("serve")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m serve", description=__doc__)
    p.add_argument("--bundle", required=True, type=Path, help="bundle root holding <version>/manifest.json folders")
    p.add_argument("--version", type=int, default=None, help="serve this version only (default: newest, and follow)")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8001, help="gRPC port (0: any free port)")
    p.add_argument("--reuse-port", action="store_true",
                   help="let several servers share the gRPC port (SO_REUSEPORT); off: a taken port is an error")
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus /metrics port (-1: off)")
    p.add_argument("--metrics-host", default=None, help="address for /metrics (default: --host)")
    p.add_argument("--metrics-token-file", type=Path, help="bearer tokens /metrics requires (default: open)")
    p.add_argument("--metrics-auth", action="store_true", help="/metrics requires the --auth-token-file tokens")
    p.add_argument("--provider", choices=sorted(PROVIDERS), default="cpu",
                   help="onnxruntime execution provider; CPU is the fallback (what is used is logged and exported)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: all cores)")
    p.add_argument("--max-batch-size", type=int, default=32, help="samples per executed batch")
    p.add_argument("--max-queue-delay-ms", type=float, default=2.0, help="how long a batch waits to fill up")
    p.add_argument("--max-queue-size", type=int, default=256,
                   help="queued requests per model before RESOURCE_EXHAUSTED")
    p.add_argument("--max-message-mb", type=int, default=16, help="largest request/response message")
    p.add_argument("--max-images-per-request", type=int, default=128, help="images (or pixel_values rows) per request")
    p.add_argument("--max-image-pixels", type=int, default=12_000_000,
                   help="pixels per image, decoded and after the resize step (refused beyond)")
    p.add_argument("--max-inflight-mb", type=int, default=256,
                   help="request bytes + decoded pixels of all admitted requests together (others wait)")
    p.add_argument("--decode-threads", type=int, default=2, help="image decoding workers")
    p.add_argument("--load-retry-window-s", type=float, default=600.0,
                   help="a version that fails to load is retried while its files change, for this long")
    p.add_argument("--poll-interval-s", type=float, default=5.0, help="bundle root polling for new versions (0: off)")
    p.add_argument("--grace-s", type=float, default=30.0, help="drain: time for in-flight requests after SIGTERM")
    p.add_argument("--auth-token-file", type=Path, help="bearer tokens (one per line) required on every call")
    p.add_argument("--admin-token-file", type=Path, help="bearer tokens for ContinualAdmin/Reload (else refused)")
    p.add_argument("--tls-cert", type=Path, help="server certificate chain (PEM); with --tls-key enables TLS")
    p.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    p.add_argument("--tls-client-ca", type=Path, help="CA (PEM) that client certificates must chain to: mTLS")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def config_from(args: argparse.Namespace) -> ServeConfig:
    auth_tokens = read_tokens(args.auth_token_file)
    if args.metrics_auth and not auth_tokens:
        raise ConfigError("--metrics-auth requires the tokens of --auth-token-file FILE.")
    metrics_tokens = read_tokens(args.metrics_token_file) + (auth_tokens if args.metrics_auth else ())
    return ServeConfig(
        bundle_root=args.bundle, host=args.host, port=args.port, reuse_port=args.reuse_port,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port, metrics_host=args.metrics_host,
        metrics_tokens=metrics_tokens, version=args.version,
        provider=args.provider, intra_op_threads=args.threads, max_batch_size=args.max_batch_size,
        max_queue_delay_ms=args.max_queue_delay_ms, max_queue_size=args.max_queue_size,
        max_message_bytes=args.max_message_mb << 20, max_images_per_request=args.max_images_per_request,
        max_image_pixels=args.max_image_pixels, max_inflight_bytes=args.max_inflight_mb << 20,
        decode_threads=args.decode_threads, load_retry_window_s=args.load_retry_window_s,
        poll_interval_s=args.poll_interval_s, grace_s=args.grace_s,
        auth_tokens=auth_tokens, admin_tokens=read_tokens(args.admin_token_file),
        tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=args.tls_client_ca)


async def serve(config: ServeConfig) -> None:
    """Run until SIGTERM/SIGINT, then drain gracefully."""
    server = build_server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    print(f"serving {config.bundle_root} version {server.registry.current.version} on {config.host}:{server.port} "
          f"(metrics :{server.metrics_port}), providers {server.registry.current.providers}", flush=True)
    for version, why in server.registry.skipped:
        print(f"skipped bundle version {version}: {why}", flush=True)
    await stop.wait()
    print(f"draining (up to {config.grace_s:g} s for in-flight requests)", flush=True)
    await server.stop()
    print("stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(config_from(args)))
    except (ConfigError, ManifestError, ServeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
