"""The server configured for an external CRM (``crm.adapter: rest`` in server.yaml) against a real HTTP CRM.

The caller is known only to the external CRM: the call is identified through it, and the ticket and call record
reach it through the outbox. With the CRM down the call still runs (the caller takes the fallback path) and
nothing is lost: once the CRM answers again the ticket and the call record arrive, each exactly once.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from ivr.simulator import SimulatedCall
from tests.crm.fake_crm import TOKEN, FakeCrm
from tests.e2e.server_fixture import ShiftedClock, IN_HOURS, contact_server

CALLER = "+393479990001"


@pytest.fixture
async def crm():
    fake = FakeCrm()
    fake.add_customer("EXT-7", "Giulia Esterni", [CALLER])
    await fake.start()
    old = os.environ.get("CRM_API_TOKEN")
    os.environ["CRM_API_TOKEN"] = TOKEN
    try:
        yield fake
    finally:
        await fake.stop()
        if old is None:
            os.environ.pop("CRM_API_TOKEN", None)
        else:
            os.environ["CRM_API_TOKEN"] = old


def _overrides(fake: FakeCrm) -> dict[str, str]:
    return {"CONTACT_SERVER__CRM__ADAPTER": "rest", "CONTACT_SERVER__CRM__REST__BASE_URL": fake.url,
            "CONTACT_SERVER__CRM__REST__TIMEOUT": "0.5", "CONTACT_SERVER__CRM__REST__RETRIES": "0"}


async def _call_and_hang_up(srv) -> dict:
    async with SimulatedCall(srv.address, CALLER, "800100") as call:
        assert call.answered
        assert await call.wait_for_prompt_end(silence=0.6, timeout=15)
        call.hangup()
    return await srv.wait_call_ended(ani=CALLER)


async def _until(predicate, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "the external CRM did not receive what was queued for it"
        await asyncio.sleep(0.1)


async def test_caller_known_to_the_external_crm_is_identified_and_the_crm_gets_ticket_and_record(tmp_path, crm):
    async with contact_server(tmp_path, clock=ShiftedClock(IN_HOURS), seed_demo=False,
                              overrides=_overrides(crm)) as srv:
        rec = await _call_and_hang_up(srv)
        assert rec["identified_by"] in ("ani", "pai") and rec["customer_id"] is not None
        await _until(lambda: crm.tickets and crm.call_records)
    assert crm.requests[f"GET /customers/by-phone/{CALLER}"] >= 1
    (ticket,) = crm.tickets.values()
    assert ticket["customer_id"] == "EXT-7"
    (record,) = crm.call_records
    assert record["call_id"] == rec["call_id"]
    assert crm.duplicates == 0


async def test_crm_down_the_call_goes_on_and_everything_arrives_once_it_is_back(tmp_path, crm):
    crm.fail_status = 503
    async with contact_server(tmp_path, clock=ShiftedClock(IN_HOURS), seed_demo=False,
                              overrides=_overrides(crm)) as srv:
        rec = await _call_and_hang_up(srv)
        assert rec["identified_by"] not in ("ani", "pai")  # could not be looked up: the fallback path ran
        assert rec["ticket_id"] is not None           # the local ticket exists all the same
        await asyncio.sleep(1.0)
        assert not crm.tickets and not crm.call_records
        crm.fail_status = None
        srv.server.extras["crm_stack"].deliverer.wake()
        await _until(lambda: crm.tickets and crm.call_records, timeout=60)
    (record,) = crm.call_records
    assert record["call_id"] == rec["call_id"]
    assert len(crm.tickets) == 1 and crm.duplicates == 0
