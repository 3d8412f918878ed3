"""Web fixtures: the demo database (fast argon2), a real routing engine with the demo queues, and the web app
on a real socket (aiohttp TestServer) so cookies, origins and websockets behave as in a browser."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from crm_bridge.crm import SqlCrmAdapter
from crm_bridge.db import Database
from crm_bridge.security import fast_hasher
from crm_bridge.seed import seed_demo
from crm_bridge.web import ScreenPopHub, WebDeps, create_web_app

from .engine_adapters import EngineControl, EngineWallboardSource, demo_engine

ADMIN_TOKEN = "test-admin-token-0123456789"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def seeded(db: Database) -> Database:
    db.run_sync(lambda s: seed_demo(s, hasher=fast_hasher()))
    return db


@dataclass
class Web:
    client: TestClient
    deps: WebDeps
    hub: ScreenPopHub
    control: EngineControl
    reloads: list[Any]

    @property
    def origin(self) -> str:
        return str(self.client.make_url("/")).rstrip("/")

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Origin": self.origin, **extra}

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def login(self, login: str = "a.ferrari", password: str = "demo-agent-1") -> Any:
        return await self.client.post("/login", data={"login": login, "password": password},
                                      headers=self.headers(), allow_redirects=False)


def make_deps(db: Database, **overrides: Any) -> tuple[WebDeps, EngineControl, list[Any]]:
    engine = demo_engine()
    control = EngineControl(engine)
    crm = SqlCrmAdapter(db)
    reloads: list[Any] = []

    async def reload_config() -> tuple[bool, list[str]]:
        reloads.append(True)
        return True, []

    kwargs: dict[str, Any] = dict(db=db, crm=crm, agents=control, wallboard=EngineWallboardSource(engine),
                                  hub=ScreenPopHub(crm, db=db), reload_config=reload_config,
                                  admin_token=ADMIN_TOKEN, agent_key="extension", hasher=fast_hasher(),
                                  wallboard_interval=0.2)
    kwargs.update(overrides)
    return WebDeps(**kwargs), control, reloads


@pytest.fixture
async def web(seeded: Database) -> AsyncIterator[Web]:
    deps, control, reloads = make_deps(seeded)
    app = create_web_app(deps)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield Web(client, deps, deps.hub, control, reloads)
    finally:
        await client.close()


def chromium_or_fail() -> str:
    """The browser test never skips quietly under CI."""
    if shutil.which(CHROMIUM) or os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{CHROMIUM} is missing under CI: apt-get install -y chromium")
    pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
