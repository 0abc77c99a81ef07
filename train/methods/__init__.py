"""Continual methods, one file each, looked up by name in the registry."""

from . import continual_lora, dualprompt, hide_tii, hidelora, hideprompt, l2p, sprompt  # noqa: F401  (registration)
from .base import METHODS, ContinualMethod, build_method, build_method_class, register  # noqa: F401
