"""The IVR's ``transfer`` node over SIP: the server rings the target (a SIPp phone) while the caller hears
ring-back, bridges them, and ends the caller's leg when the target hangs up; a busy target gets the caller a
message instead of silence."""

from __future__ import annotations

import pytest

from ivr.app import BUNDLED_PROMPTS
from ivr.flow.actions import PromptRef
from ivr.prompts import PromptPcmSource, PromptRenderer
from ivr.simulator import SimulatedCall
from ivr.transfer import _FAILED_TEXT
from tests.e2e.harness import SIPP, free_udp_port
from tests.e2e.server_fixture import IN_HOURS, ShiftedClock, contact_server
from tests.e2e.test_routing_sip import start_sipp

pytestmark = [pytest.mark.sipp, pytest.mark.timeout(150),
              pytest.mark.skipif(SIPP is None, reason="sipp is not installed")]

CALLER = "+393471000001"        # demo customer Giulia
LINE = "800900"


def _helpdesk_flow(port: int) -> str:
    return f"""
entry_points:
  - dnis: "{LINE}"
    flow: helpdesk
    description: partner help desk, transferred as is
flows:
  helpdesk:
    start: notice
    nodes:
      notice:
        kind: say
        prompt: {{it: "Trasferimento in corso.", en: "Transferring your call."}}
        next: out
      out:
        kind: transfer
        uri: "sip:helpdesk@127.0.0.1:{port}"
        prompt: {{it: "Attenda.", en: "Please hold."}}
"""


async def test_transfer_node_bridges_the_caller_to_the_target_until_it_hangs_up(tmp_path):
    port = free_udp_port()
    async with contact_server(tmp_path, clock=ShiftedClock(IN_HOURS),
                              extra_files={"ivr/zz-helpdesk.yaml": _helpdesk_flow(port)}) as srv:
        desk = await start_sipp(tmp_path, "helpdesk", "uas_agent_answer_hangup.xml", port=port,
                                variables={"ring": 1500, "hold": 2000})
        try:
            async with SimulatedCall(srv.address, CALLER, LINE) as call:
                assert call.answered
                assert await call.wait_ended(40)
            result = call.result
            assert await desk.wait() == 0, desk.messages()[-3000:]
        finally:
            desk.stop()
        (invite,) = desk.received("INVITE")
        assert invite.startswith("INVITE sip:helpdesk@127.0.0.1") and CALLER in invite.split("\n\n")[0]
        assert result.hung_up_by == "server"          # the target's BYE ended the caller's leg too
        rec = await srv.wait_call_ended(ani=CALLER)
    assert rec["ivr_exit"] == "transferred"


async def test_busy_transfer_target_gets_the_caller_a_message_then_goodbye(tmp_path):
    port = free_udp_port()
    async with contact_server(tmp_path, clock=ShiftedClock(IN_HOURS),
                              extra_files={"ivr/zz-helpdesk.yaml": _helpdesk_flow(port)}) as srv:
        desk = await start_sipp(tmp_path, "helpdesk", "uas_agent_busy.xml", port=port)
        try:
            async with SimulatedCall(srv.address, CALLER, LINE) as call:
                assert call.answered
                assert await call.wait_ended(40)
            result = call.result
            assert await desk.wait() == 0, desk.messages()[-3000:]
        finally:
            desk.stop()
        assert len(desk.received("INVITE")) == 1
        assert result.hung_up_by == "server"
        failed = await PromptPcmSource(PromptRenderer(tmp_path / "prompts", bundled_dirs=[BUNDLED_PROMPTS])) \
            .render_async(PromptRef(_FAILED_TEXT["it"], None, "it"))
        assert result.heard(failed)                   # told why, not left in silence


def test_tel_targets_go_out_through_the_outbound_trunk():
    from ivr.campaign.trunk import OutboundRouter
    from ivr.config import OutboundConfig
    from ivr.transfer import SipTransferrer

    router = OutboundRouter(OutboundConfig(trunk="sip:{digits}@192.0.2.7:5070"))
    t = SipTransferrer(None, from_host="127.0.0.1", tel_route=router.route)
    assert t.route("tel:+39-02-1234.5678") == ("sip:390212345678@192.0.2.7:5070", ("192.0.2.7", 5070))
    assert t.route("sip:desk@pbx.example") == ("sip:desk@pbx.example", None)
    no_trunk = SipTransferrer(None, from_host="127.0.0.1")
    with pytest.raises(ValueError, match="outbound trunk"):
        no_trunk.route("tel:+390212345678")
    with pytest.raises(ValueError, match="not a sip: or tel: URI"):
        t.route("mailto:x@y")
