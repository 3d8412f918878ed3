"""The web side of the contact server: agent desktop (screen pop over a websocket, state, wrap-up), supervisor
wallboard/KPIs/exports, the admin API (``/api/v1``, OpenAPI at ``/api/v1/openapi.json``) and ``/metrics``.

    hub = ScreenPopHub(crm, db=db)                       # give it to the call layer (QueueService(hub=hub))
    app = create_web_app(WebDeps(db=db, crm=crm, agents=control, wallboard=wallboard, hub=hub,
                                 admin_token=token, allowed_origins={"https://desk.example.com"}))
    runner = await start_web(app, "127.0.0.1", 8080)
"""

from .app import create_web_app, start_web
from .deps import DEPS, HUB, SOCKETS, AgentControl, VoiceEnroller, WallboardSource, WebDeps
from .pop import ScreenPopHub, build_pop, verification_badge

__all__ = ["create_web_app", "start_web", "WebDeps", "AgentControl", "WallboardSource", "VoiceEnroller",
           "ScreenPopHub", "build_pop", "verification_badge", "DEPS", "HUB", "SOCKETS"]
