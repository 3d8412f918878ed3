"""The routing engine (sans-IO): ``core.RoutingEngine``."""

from .core import QueueSnapshot, RoutingEngine

__all__ = ["QueueSnapshot", "RoutingEngine"]
