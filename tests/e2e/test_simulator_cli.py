"""``contact-server call`` (ivr.simulator) against the real server stack: what it reports is what happened."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, field

from ivr.calls import Call
from ivr.media.audio import load_wav_8k
from ivr.simulator import simulate
from tests.conftest import FIXTURES
from tests.e2e.harness import best_correlation, running_server

GREETING = load_wav_8k(FIXTURES / "tests" / "greeting_en.wav")


@dataclass
class MenuApp:
    calls: list[Call] = field(default_factory=list)
    digits: list[str] = field(default_factory=list)

    async def run(self, call: Call) -> None:
        self.calls.append(call)
        await call.answer()
        await call.play(GREETING)
        result = await call.collect_digits(3, first_timeout=5, inter_digit_timeout=3, terminator="#")
        self.digits.append(result.digits)
        await call.play(GREETING[:8000])
        call.hangup()


async def test_simulated_call_reports_prompts_digits_and_hangup():
    app = MenuApp()
    async with running_server(app) as srv:
        result = await simulate(srv.address, "+393471000001", "800100", dtmf=[(4.8, "42#")], duration=20)
    assert result.answered and result.status == 200
    assert app.calls[0].identity.ani_e164 == "+393471000001"  # P-Asserted-Identity from a trusted peer
    assert app.digits == ["42"]
    assert result.digits_sent and result.digits_sent[0][1] == "42#"
    assert result.hung_up_by == "server"
    # two prompts heard: the greeting, then the 1-second confirmation after the digits
    assert len(result.segments) >= 2
    assert result.segments[0].start < 0.5
    assert result.segments[-1].start > result.digits_sent[0][0]
    assert best_correlation(result.audio, GREETING) > 0.98


async def test_cli_prints_json(tmp_path):
    app = MenuApp()
    out = tmp_path / "heard.wav"
    async with running_server(app) as srv:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from ivr.cli import main; raise SystemExit(main())", "call",
            "--server", srv.address, "--from", "+393471000002", "--to", "800200", "--dtmf", "7#@4.8",
            "--duration", "15", "--record", str(out), "--json", stdout=asyncio.subprocess.PIPE)
        stdout, _ = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode == 0
    report = json.loads(stdout)
    assert report["answered"] and report["hung_up_by"] == "server"
    assert report["digits_sent"][0][1] == "7#"
    assert app.digits == ["7"]
    assert app.calls[0].dnis == "800200"
    assert best_correlation(load_wav_8k(out), GREETING) > 0.98
