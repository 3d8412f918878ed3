"""The IVR's ``transfer`` node: the caller is connected to a SIP URI by the server itself (back-to-back, like
Asterisk's ``Dial`` or Twilio's ``<Dial>``), not by asking the caller's trunk to REFER.

Staying in the media path keeps the call record honest (the server sees who answered and when the call ended),
works with trunks that refuse REFER, and lets the caller hear ring-back and a clear message when the target
does not answer. ``tel:`` targets go out through the configured trunk (``tel_route``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Callable

import numpy as np

from ivr.calls import Call, CallerHungUp, Leg, OriginateFailed
from ivr.errors import ConfigError
from ivr.flow import actions as A
from ivr.media.bridge import Bridge

log = logging.getLogger(__name__)

RATE = 8000
_FAILED_TEXT = {"it": "Non è stato possibile trasferire la chiamata. Arrivederci.",
                "en": "We could not transfer your call. Goodbye."}


def ringback(seconds: float = 4.0, freq: float = 425.0) -> np.ndarray:
    """One cadence of the European ring-back tone (425 Hz, 1 s on, 3 s off), as the PSTN caller expects."""
    t = np.arange(int(RATE * seconds)) / RATE
    tone = (0.2 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    tone[int(RATE * 1.0):] = 0
    return tone


class SipTransferrer:
    """``await transfer(call, uri)`` returns when the transferred conversation is over (or failed)."""

    def __init__(self, manager: Any, *, from_host: str, prompts: Any | None = None, ring_timeout: float = 30.0,
                 tel_route: Callable[[str], tuple[str, tuple[str, int] | None]] | None = None):
        self.manager = manager
        self.from_host = from_host
        self.prompts = prompts
        self.ring_timeout = ring_timeout
        self.tel_route = tel_route
        self._ring = ringback()

    def route(self, uri: str) -> tuple[str, tuple[str, int] | None]:
        """The Request-URI and next hop for a transfer target; ``ValueError`` when it cannot be reached."""
        if uri.startswith(("sip:", "sips:")):
            return uri, None
        if uri.startswith("tel:"):
            if self.tel_route is None:
                raise ValueError(f"{uri}: tel: targets need an outbound trunk in server.yaml")
            number = "".join(ch for ch in uri[4:] if ch.isdigit() or ch == "+")
            try:
                return self.tel_route(number)
            except ConfigError as exc:
                raise ValueError(str(exc)) from exc
        raise ValueError(f"{uri}: not a sip: or tel: URI")

    def _from_uri(self, call: Call) -> str:
        user = call.ani or "anonymous"
        port = getattr(getattr(self.manager, "sip", None), "bound_port", None)
        host = f"{self.from_host}:{port}" if port else self.from_host
        return f"<sip:{user}@{host}>"

    async def transfer(self, call: Call, uri: str) -> None:
        try:
            target, destination = self.route(uri)
        except ValueError as exc:
            log.error("call %s: transfer impossible: %s", call.id, exc)
            await self._failed(call)
            return
        log.info("call %s: transferring to %s", call.id, target)
        try:
            leg = await self._dial(call, target, destination)
        except OriginateFailed as exc:
            log.info("call %s: transfer to %s failed: %s %s", call.id, target, exc.status, exc.reason)
            call.variables["transfer_result"] = f"{exc.status} {exc.reason}"
            await self._failed(call)
            return
        except CallerHungUp:
            return
        call.variables["transfer_result"] = "answered"
        await self._bridge(call, leg)

    async def _dial(self, call: Call, target: str, destination) -> Leg:
        """Ring the target while the caller hears ring-back; the caller hanging up cancels the INVITE."""
        dial = asyncio.ensure_future(self.manager.originate(target, self._from_uri(call), destination=destination,
                                                            ring_timeout=self.ring_timeout))
        ended = asyncio.ensure_future(call.leg.wait_ended())
        try:
            while True:
                play = asyncio.ensure_future(call.session.play(self._ring)) if not call.leg.ended else None
                waiting = {dial, ended} | ({play} if play else set())
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if play is not None and not play.done():
                    call.session.stop_playback()
                    play.cancel()
                if dial in done:
                    return dial.result()
                if ended in done:
                    dial.cancel()
                    with contextlib.suppress(asyncio.CancelledError, OriginateFailed):
                        await dial
                    raise CallerHungUp(f"call {call.id} ended while the transfer target was ringing")
        finally:
            ended.cancel()

    async def _bridge(self, call: Call, leg: Leg) -> None:
        bridge = Bridge(call.session, leg.session)
        bridge.start()
        call.agent_leg = leg
        call.bridge = bridge
        caller_end = asyncio.ensure_future(call.leg.wait_ended())
        target_end = asyncio.ensure_future(leg.wait_ended())
        try:
            await asyncio.wait({caller_end, target_end}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            caller_end.cancel()
            target_end.cancel()
            await bridge.stop()
            call.bridge = None
            leg.hangup()
            call.hangup()

    async def _failed(self, call: Call) -> None:
        if self.prompts is not None and not call.leg.ended:
            language = str((call.variables.get("customer") or {}).get("language") or "it")
            text = _FAILED_TEXT.get(language, _FAILED_TEXT["it"])
            with contextlib.suppress(CallerHungUp):
                await call.play(await self.prompts.render_async(A.PromptRef(text, None, language)))
        call.hangup()
