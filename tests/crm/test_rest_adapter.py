from __future__ import annotations

import pytest

from crm_bridge.breaker import BreakerState, CircuitBreaker
from crm_bridge.crm import CrmAdapter, NewTicket
from crm_bridge.errors import CrmConfigError, CrmRejectedError, CrmUnavailableError
from crm_bridge.rest import RestCrmAdapter, RestCrmConfig, RestOp

from .fake_crm import FakeCrm


class Mono:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(crm: FakeCrm, mono: Mono, **kw) -> RestCrmAdapter:  # type: ignore[no-untyped-def]
    cfg = dict(base_url=crm.url, timeout=0.5, retries=1, backoff=0.01, cache_ttl=60, breaker_failures=2,
               breaker_reset=30)
    cfg.update(kw)
    return RestCrmAdapter(RestCrmConfig(**cfg), monotonic=mono)


async def test_lookup_cache_and_not_found(fake_crm: FakeCrm) -> None:
    fake_crm.add_customer("C-9", "Anna Neri", ["+393401112233"])
    mono = Mono()
    async with make(fake_crm, mono) as crm:
        assert isinstance(crm, CrmAdapter)
        c = await crm.lookup_by_phone("+393401112233")
        assert c is not None and c.id == "C-9" and c.name == "Anna Neri" and c.accounts[0].products == ("conto",)
        assert await crm.lookup_by_phone("+393401112233") == c
        assert fake_crm.requests["GET /customers/by-phone/+393401112233"] == 1  # second answer from the cache
        mono.t += 61
        await crm.lookup_by_phone("+393401112233")
        assert fake_crm.requests["GET /customers/by-phone/+393401112233"] == 2  # entry expired
        assert await crm.lookup_by_phone("+390000") is None
        assert crm.breaker.state(mono.t) is BreakerState.CLOSED


async def test_slow_crm_times_out_and_retries(fake_crm: FakeCrm) -> None:
    fake_crm.delay = 2.0
    async with make(fake_crm, Mono(), timeout=0.2, retries=1) as crm:
        with pytest.raises(CrmUnavailableError, match="2 attempts"):
            await crm.get_customer("C-1")
    assert fake_crm.requests["GET /customers/C-1"] == 2


async def test_circuit_opens_then_half_open_probe_closes_it(fake_crm: FakeCrm) -> None:
    fake_crm.add_customer("C-1", "Luca Verdi", ["+393331"])
    fake_crm.fail_status = 503
    mono = Mono()
    async with make(fake_crm, mono, retries=0) as crm:
        for _ in range(2):
            with pytest.raises(CrmUnavailableError):
                await crm.get_customer("C-1")
        assert crm.breaker.state(mono.t) is BreakerState.OPEN
        before = sum(fake_crm.requests.values())
        for _ in range(20):
            with pytest.raises(CrmUnavailableError, match="circuit is open"):
                await crm.get_customer("C-1")
        assert sum(fake_crm.requests.values()) == before  # an open circuit costs no request
        mono.t += 31
        fake_crm.fail_status = None
        c = await crm.get_customer("C-1")  # the half-open probe
        assert c is not None and crm.breaker.state(mono.t) is BreakerState.CLOSED


async def test_stale_customer_when_crm_is_down(fake_crm: FakeCrm) -> None:
    fake_crm.add_customer("C-2", "Sara Gallo", ["+39347"])
    mono = Mono()
    async with make(fake_crm, mono) as crm:
        fresh = await crm.lookup_by_phone("+39347")
        assert fresh is not None and not fresh.stale
        await fake_crm.stop()
        mono.t += 120
        stale = await crm.lookup_by_phone("+39347")
        assert stale is not None and stale.stale and stale.name == "Sara Gallo"
        with pytest.raises(CrmUnavailableError):
            await crm.lookup_by_phone("+39999")


async def test_rejections_and_writes(fake_crm: FakeCrm, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_crm.add_customer("C-3", "Paolo Fontana", ["+39348"], pin=("ACC-3", "2468"))
    mono = Mono()
    async with make(fake_crm, mono) as crm:
        tid = await crm.create_ticket(NewTicket(customer_id="C-3", service="cards"), idempotency_key="k1")
        again = await crm.create_ticket(NewTicket(customer_id="C-3", service="cards"), idempotency_key="k1")
        assert tid == again and len(fake_crm.tickets) == 1 and fake_crm.duplicates == 1
        await crm.update_ticket(tid, notes="called back")
        found = await crm.find_open_ticket("C-3", "cards")
        assert found is not None and found.id == tid and found.notes == "called back"
        await crm.close_ticket(tid, "solved")
        assert await crm.open_tickets("C-3") == []
        with pytest.raises(CrmRejectedError) as err:
            await crm.update_ticket("T-404", notes="x")
        assert err.value.status == 404 and crm.breaker.state(mono.t) is BreakerState.CLOSED
        pin = await crm.verify_pin("ACC-3", "2468")
        assert pin.ok and pin.customer is not None and pin.customer.id == "C-3"
        assert not (await crm.verify_pin("ACC-3", "0000")).ok
        monkeypatch.setenv("CRM_API_TOKEN", "wrong")
        with pytest.raises(CrmRejectedError, match="401"):
            await crm.open_tickets("C-3")


def test_bad_configuration_is_reported() -> None:
    with pytest.raises(CrmConfigError, match="http"):
        RestCrmAdapter(RestCrmConfig(base_url="crm.local"))
    with pytest.raises(CrmConfigError, match="no URL template"):
        RestCrmConfig(base_url="http://x").op("teleport")
    crm = RestCrmAdapter(RestCrmConfig(base_url="http://x", ops={"get_customer": RestOp("GET", "/c/{nope}")}))
    with pytest.raises(CrmConfigError, match="nope"):
        crm._url(crm.config.op("get_customer"), {"customer_id": 1})


def test_breaker_state_machine() -> None:
    b = CircuitBreaker(failure_threshold=3, reset_timeout=10)
    for t in range(3):
        assert b.allow(t)
        b.record_failure(t)
    assert b.state(3) is BreakerState.OPEN and not b.allow(5) and b.retry_after(5) == 7
    assert b.allow(12) and not b.allow(12)  # one probe only
    b.record_failure(12)
    assert b.state(13) is BreakerState.OPEN and not b.allow(21)
    assert b.allow(22)
    b.record_success(22)
    assert b.state(22) is BreakerState.CLOSED and b.allow(22)
    b.record_failure(23)
    b.record_success(24)
    b.record_failure(25)
    b.record_failure(26)
    assert b.state(26) is BreakerState.CLOSED  # failures must be consecutive
