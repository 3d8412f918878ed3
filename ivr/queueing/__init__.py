"""Queued callers on real SIP legs (the asyncio shell around ``routing.RoutingEngine``): ``service`` holds
``QueueService``; ``waiting``, ``callbacks`` and ``transfers`` its parts; ``wiring`` builds it into a server."""

from .service import QueueService
from .state import TransferRefused
from .texts import _TEXT
from .wiring import attach_routing

__all__ = ["QueueService", "TransferRefused", "attach_routing", "_TEXT"]
