"""Nothing secret in the server's logs, at DEBUG, through the production log setup (``ivr.logs.setup_logging``,
JSON and text): a SIPp caller identifies with account number and PIN in the demo IVR, an agent logs in to the
desktop (and mistypes the password once), the admin API is called with the admin token and once with a wrong
one; the captured output must contain neither the PIN, the passwords, the tokens nor the voiceprint key, while
still saying what happened. Card numbers and IBANs that reach a log line are masked by the formatters."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import uuid

import aiohttp
import pytest

from ivr.logs import JsonFormatter, TextFormatter, setup_logging
from tests.e2e.harness import RtpSink
from tests.e2e.server_fixture import IN_HOURS, ShiftedClock, contact_server, run_sipp_call, sipp_call_id

pytestmark = [pytest.mark.sipp, pytest.mark.timeout(180)]

PIN, ACCOUNT = "1357", "10000001"        # demo customer's account and PIN (config/demo_customers.yaml)
ADMIN_TOKEN = "admin-tok-" + uuid.uuid4().hex


@pytest.fixture
def captured(monkeypatch):
    """Root logging as ``serve`` sets it up, at DEBUG, into a buffer; restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buf = io.StringIO()
    setup_logging("DEBUG", "json", stream=buf)
    text_buf = io.StringIO()
    text_handler = logging.StreamHandler(text_buf)
    text_handler.setFormatter(TextFormatter())
    root.addHandler(text_handler)
    try:
        yield lambda: buf.getvalue() + text_buf.getvalue()
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def _digits(value: str) -> re.Pattern:
    return re.compile(rf"(?<![0-9]){re.escape(value)}(?![0-9])")


async def test_pin_passwords_tokens_and_key_never_reach_the_logs(tmp_path, captured, monkeypatch):
    from voiceauth import crypto

    key = crypto.generate_key()
    monkeypatch.setattr(crypto, "generate_key", lambda: key)     # the server fixture's VOICEAUTH_KEY
    sink = await RtpSink().open()
    tag = f"secrets-{uuid.uuid4().hex[:8]}"
    call_id = sipp_call_id(tag)
    try:
        async with contact_server(tmp_path, clock=ShiftedClock(IN_HOURS),
                                  overrides={"CONTACT_SERVER_ADMIN_TOKEN": ADMIN_TOKEN}) as srv:
            variables = {"caller": "+393330000101", "dialed": "800100", "rtpport": sink.port,
                         "d1": ACCOUNT, "p1": 2000, "d2": PIN + "#", "p2": 2500, "d3": "1", "p3": 2500}
            sipp = asyncio.ensure_future(run_sipp_call(srv.address, "uac_ivr_dtmf.xml", variables=variables,
                                                       timeout=90, tmp=tmp_path, tag=tag))
            web = f"http://127.0.0.1:{srv.server.extras['web_port']}"
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                wrong = await http.post(f"{web}/login", data={"login": "a.ferrari", "password": "typo-pass-77"},
                                        headers={"Origin": web}, allow_redirects=False)
                assert wrong.status in (401, 403, 200)
                ok = await http.post(f"{web}/login", data={"login": "a.ferrari", "password": "demo-agent-1"},
                                     headers={"Origin": web}, allow_redirects=False)
                assert ok.status == 302
                api = await http.get(f"{web}/api/v1/agents", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
                assert api.status == 200
                bad = await http.get(f"{web}/api/v1/agents", headers={"Authorization": "Bearer bad-tok-4242"})
                assert bad.status == 401
            record = await srv.wait_ivr_finished(timeout=40, call_id=call_id)
            srv.hang_up(call_id)
            await sipp
            assert record["identified_by"] == "pin", record["ivr_path"]
    finally:
        sink.close()

    logs = captured()
    assert call_id in logs and "a.ferrari" in logs         # the logs still say who and which call
    assert not _digits(PIN).search(logs), [ln for ln in logs.splitlines() if _digits(PIN).search(ln)][:5]
    for secret in ("demo-agent-1", "typo-pass-77", ADMIN_TOKEN, "bad-tok-4242", key):
        assert secret not in logs, secret


def test_card_numbers_and_ibans_in_a_log_line_are_masked():
    record = logging.LogRecord("crm", logging.WARNING, __file__, 1,
                               "note rejected: card %s, iban %s", ("4111 1111 1111 1111", "IT60X0542811101000000123456"),
                               None)
    record.payload = "pan=5555555555554444"
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record)
        for clear in ("4111 1111 1111 1111", "4111111111111111", "5555555555554444", "0542811101000000123456"):
            assert clear not in line, (type(formatter).__name__, line)
        assert "1111" in line and "4444" in line and "3456" in line   # last four kept
    assert json.loads(JsonFormatter().format(record))["payload"].endswith("4444")
    try:
        raise ValueError("card 4111111111111111 declined")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert "4111111111111111" not in JsonFormatter().format(record)
    assert "4111111111111111" not in TextFormatter().format(record)
