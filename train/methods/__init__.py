"""Continual methods, one file each, looked up by name in the registry."""

from . import hide_tii, hideprompt  # noqa: F401,E402  (registration)
from .base import METHODS, ContinualMethod, build_method, register  # noqa: F401
