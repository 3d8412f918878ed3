"""baresip, a real softphone, calls the server headless: the server records its voice (compared with the file
baresip streamed) and baresip hears the greeting (what its ``sndfile`` module wrote, compared with the prompt).

baresip runs from a self-contained configuration in a temporary directory: no audio device, ``aufile`` as the
microphone, ``sndfile`` dumping the decoded audio it received, no registration (``regint=0``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from ivr.calls import Call
from ivr.media.audio import load_wav_8k, write_wav
from ivr.media.dtmf import DtmfSource
from ivr.sip.events import EndReason
from tests.conftest import FIXTURES
from tests.e2e.harness import best_correlation, running_server

BARESIP = shutil.which("baresip")
MODULE_PATH = next((p for p in (Path("/usr/lib/baresip/modules"), Path("/usr/lib/x86_64-linux-gnu/baresip/modules"),
                                Path("/usr/local/lib/baresip/modules")) if (p / "g711.so").exists()), None)
GREETING = load_wav_8k(FIXTURES / "tests" / "greeting_en.wav")
VOICE = load_wav_8k(FIXTURES / "voices" / "ls-2414" / "2414-128291-0000.wav")
CALLER = "393331234567"


@pytest.fixture(autouse=True)
def _need_baresip():
    if BARESIP and MODULE_PATH:
        return
    message = "baresip (with its modules) is not installed: apt-get install baresip"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class GreetThenRecordApp:
    """Plays the greeting, then records the caller until they stop talking, then waits for the caller's BYE."""

    calls: list[Call] = field(default_factory=list)
    recorded: list[np.ndarray] = field(default_factory=list)
    ended: list[EndReason | None] = field(default_factory=list)

    async def run(self, call: Call) -> None:
        self.calls.append(call)
        await call.answer()
        await call.play(GREETING)
        self.recorded.append(await call.record(8.0, silence_end_seconds=1.0, start_timeout=6.0))
        await call.leg.wait_ended()
        self.ended.append(call.leg.end_reason)


def write_config(conf: Path, voice_wav: Path, dump_dir: Path, keyboard: bool = False) -> None:
    conf.mkdir(parents=True, exist_ok=True)
    dump_dir.mkdir(parents=True, exist_ok=True)
    (conf / "accounts").write_text(f"<sip:{CALLER}@127.0.0.1>;regint=0\n")
    (conf / "contacts").write_text("")
    keyboard_module = "module stdio.so\n" if keyboard else ""  # keys on stdin: typed in a call, sent as RFC 4733
    (conf / "config").write_text(
        "poll_method epoll\n"
        "sip_listen 127.0.0.1:0\n"
        f"module_path {MODULE_PATH}\n"
        f"{keyboard_module}"
        "module g711.so\n"
        "module aufile.so\n"
        "module sndfile.so\n"
        "module_app account.so\n"
        "module_app menu.so\n"
        f"audio_source aufile,{voice_wav}\n"
        f"snd_path {dump_dir}\n")


async def run_baresip(conf: Path, target: str, quit_after: int, cwd: Path, keys=None) -> str:
    """Dial ``target`` and wait for baresip to quit (``-t``); killed if it outlives that by far. ``keys``, an
    async function given baresip's stdin, types on its keyboard."""
    proc = await asyncio.create_subprocess_exec(
        BARESIP, "-f", str(conf), "-e", f"/dial {target}", "-t", str(quit_after), cwd=str(cwd),
        stdin=asyncio.subprocess.PIPE if keys else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        if keys:
            await asyncio.wait_for(keys(proc.stdin), quit_after)
        out, _ = await asyncio.wait_for(proc.communicate(), quit_after + 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # the call status line is rewritten with carriage returns: keep the log readable in a failure message
    return out.decode(errors="replace").replace("\r", "\n")


async def test_baresip_call_server_records_its_voice_and_it_hears_the_greeting(tmp_path):
    # baresip streams from the answer: silence while the greeting plays, then the voice, then silence. The call
    # ends (baresip's BYE) when the file ends.
    lead = np.zeros(int(len(GREETING) + 1.5 * 8000), np.int16)
    tail = np.zeros(12000, np.int16)
    voice_wav = tmp_path / "voice.wav"
    sent = np.concatenate([lead, VOICE, tail])
    write_wav(voice_wav, sent)
    conf, dump = tmp_path / "conf", tmp_path / "dump"
    write_config(conf, voice_wav, dump)
    seconds = int(len(sent) / 8000) + 2  # -t: baresip quits then, after its own BYE at the end of the file

    app = GreetThenRecordApp()
    async with running_server(app) as srv:
        log = await run_baresip(conf, f"sip:800100@127.0.0.1:{srv.port}", seconds, tmp_path)
        for _ in range(20):  # the app returns once the BYE has been processed
            if app.ended:
                break
            await asyncio.sleep(0.1)

    assert len(app.calls) == 1, log
    call = app.calls[0]
    assert call.dnis == "800100"
    assert call.identity.ani_raw == CALLER
    assert app.ended == [EndReason.BYE_REMOTE], log

    # what the server recorded is baresip's voice: found, aligned, in the file sent, and the spoken part of the
    # utterance (0.4 s to 2.4 s; the recorder trims the quiet ends) is all in the recording
    assert len(app.recorded) == 1
    recorded = app.recorded[0]
    assert best_correlation(sent, recorded) > 0.9
    assert best_correlation(recorded, VOICE[3200:19200]) > 0.9

    # what baresip heard (decoded by its own G.711) contains the greeting
    dumps = sorted(dump.glob("dump-*-dec.wav"))
    assert dumps, f"baresip wrote no dump-*-dec.wav\n{log}"
    heard = load_wav_8k(dumps[-1])
    assert fraction_heard(heard, GREETING) >= 0.8, log



@dataclass
class DigitsApp:
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    digits: list[str] = field(default_factory=list)
    sources: list[DtmfSource] = field(default_factory=list)

    async def run(self, call: Call) -> None:
        await call.answer()
        call.session.add_dtmf_listener(lambda _s, d: self.sources.append(d.source))
        self.answered.set()
        result = await call.collect_digits(6, first_timeout=8, inter_digit_timeout=4, terminator="#")
        self.digits.append(result.digits)
        call.hangup()


async def test_baresip_keypad_digits_arrive_as_rfc4733(tmp_path):
    silence = tmp_path / "silence.wav"
    write_wav(silence, np.zeros(10 * 8000, np.int16))
    conf = tmp_path / "conf"
    write_config(conf, silence, tmp_path / "dump", keyboard=True)
    app = DigitsApp()

    async def type_digits(stdin: asyncio.StreamWriter) -> None:
        await app.answered.wait()
        await asyncio.sleep(0.5)
        for key in "1379#":
            stdin.write(key.encode())
            await stdin.drain()
            await asyncio.sleep(0.3)

    async with running_server(app) as srv:
        log = await run_baresip(conf, f"sip:800100@127.0.0.1:{srv.port}", 6, tmp_path, keys=type_digits)
    assert app.digits == ["1379"], log
    assert app.sources == [DtmfSource.RFC4733] * 5  # one event per key press, no in-band duplicate


def fraction_heard(heard: np.ndarray, reference: np.ndarray, piece: int = 4000) -> float:
    """Share of the reference's voiced half-second pieces found in ``heard`` (correlation > 0.9 each).

    Piecewise, because on a loaded machine one late packet shifts everything after it by 20 ms, which a
    whole-prompt correlation reads as a different signal although the caller heard every word."""
    pieces = [reference[i:i + piece] for i in range(0, len(reference) - piece + 1, piece)]
    voiced = [p for p in pieces if np.sqrt(np.mean(p.astype(np.float64) ** 2)) > 100]
    assert voiced, "the reference is silent"
    return sum(best_correlation(heard, p) > 0.9 for p in voiced) / len(voiced)
