"""Pretrained weights by timm hub name (`--pretrained_checkpoint hf-hub:timm/<name>` or `timm:<name>`).

timm's `pretrained=True` fetches them through huggingface_hub (and keeps them in its cache). Without a
route to the hub, the fetch is made offline (`HF_HUB_OFFLINE`): a cached model still loads, anything else
fails at once with one message instead of a minute of retries.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from urllib.parse import urlsplit

import torch

from .errors import UserError

HUB_PREFIXES = ("hf-hub:", "timm:")
HUB_HOST, HUB_PORT, PROBE_TIMEOUT_S = "huggingface.co", 443, 3.0


def is_hub_name(checkpoint: str) -> bool:
    return checkpoint.startswith(HUB_PREFIXES)


def timm_model_name(checkpoint: str) -> str:
    """The name `timm.create_model` takes: `hf-hub:` names as they are, `timm:` stripped."""
    return checkpoint.removeprefix("timm:")


def offline_by_environment() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_reachable() -> bool:
    """A TCP connection to the hub (or to the HTTPS proxy, when one is set) opens within a few seconds."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    host, port = HUB_HOST, HUB_PORT
    if proxy:
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = parts.hostname or host, parts.port or 80
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError:
        return False
    return True


@contextmanager
def hub_offline() -> Iterator[None]:
    """HF_HUB_OFFLINE for the calls inside: in the environment and in huggingface_hub's import-time constant."""
    from huggingface_hub import constants

    before_env, before_constant = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], constants.HF_HUB_OFFLINE = "1", True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before_constant
        if before_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before_env


def hub_state_dict(checkpoint: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The backbone state dict and timm's pretrained config (mean, std, ...) of a hub name."""
    import timm

    offline = offline_by_environment() or not hub_reachable()
    try:
        with hub_offline() if offline else nullcontext():
            model = timm.create_model(timm_model_name(checkpoint), pretrained=True, num_classes=0)
    except Exception as error:  # unknown name, no route, not cached: the user's to fix
        state = ("the hub is offline (HF_HUB_OFFLINE, or no route to it) and they are not in the local hub cache"
                 if offline else "the hub did not provide them")
        reason = " ".join(str(error).split())[:200]
        raise UserError(f"pretrained weights '{checkpoint}' cannot be loaded: {state} ({type(error).__name__}: "
                        f"{reason}). "
                        "Fetch them once on a machine with internet (they are cached in ~/.cache/huggingface, "
                        "or $HF_HOME), or download the file and pass its path to --pretrained_checkpoint.") from None
    return model.state_dict(), dict(model.pretrained_cfg)
