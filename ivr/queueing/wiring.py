"""``attach_routing``: queues, agents' phones and the queue service built into a running server."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from ivr.agents import EngineAgentControl, EngineWallboard, FeatureCodeApplication, PhoneCredentials, PhoneDirectory
from routing.engine import RoutingEngine

from .service import QueueService

log = logging.getLogger(__name__)


async def attach_routing(server: Any, services: Any, queues_path: Path, prompts: Any, *, hub: Any | None = None,
                         phones_path: Path | None = None, registrar_secret: bytes | None = None) -> QueueService:
    """Build the routing engine from ``queues_path``, the agent phones' registrar (HA1 from
    ``agent_phones.yaml`` next to it), the queue service (``services.queue_handoff``), the feature-code
    wrapper around the IVR app, and the desktop/wallboard adapters; all are left in ``server.extras``."""
    import secrets

    from ivr.sip.digest import DigestAuthenticator
    from ivr.sip.registrar import Registrar
    from routing.config import load_routing_config

    cfg = server.cfg
    config = load_routing_config(queues_path)
    engine = RoutingEngine(config)
    loop = asyncio.get_running_loop()
    creds = PhoneCredentials.load(phones_path or Path(queues_path).with_name("agent_phones.yaml"), cfg.sip.realm)
    registrar = Registrar(DigestAuthenticator(cfg.sip.realm, registrar_secret or secrets.token_bytes(32)), creds)
    ua = server.sip.ua
    set_registrar = getattr(ua, "set_registrar", None)
    if set_registrar is not None:
        set_registrar(registrar)
    else:
        ua.config.registrar = registrar
    phones = PhoneDirectory(registrar, loop.time)
    service = QueueService(engine, server.manager, phones, prompts, recorder=services.recorder, hub=hub,
                           from_host=cfg.sip.advertised_host or cfg.sip.host, base_dir=cfg.base_dir, db=server.db)
    services.queue_handoff = service
    server.manager.on_refer = service.on_refer
    control = EngineAgentControl(service, services.recorder)
    wallboard = EngineWallboard(service)
    server.manager.app = FeatureCodeApplication(server.manager.app, control, phones, prompts)
    service.start()
    server.extras.update({"routing_engine": engine, "queue_service": service, "agent_control": control,
                          "wallboard": wallboard, "registrar": registrar, "phone_credentials": creds})
    log.info("routing ready: %d queues, %d agents, %d phone credentials", len(config.queues),
             len(config.agents), len(creds.extensions()))
    return service
