"""Voicemail: the caller's message recorded when a queue's max wait says so, kept as a WAV in the server's data
directory and announced to the CRM.

Each message is two files under ``root`` (``var/voicemail`` by default): ``<id>.wav`` (8 kHz mono) and
``<id>.json`` (who, which queue, how long, the call record and ticket). The sidecar makes the box listable without
a schema change; the CRM gets a note on the call's ticket (a ticket is opened for an unknown caller) and, for a
known customer, an interaction on their history, both naming the length and the call record.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ivr.errors import IvrError
from ivr.media.audio import load_prompt, write_wav

log = logging.getLogger(__name__)

RATE = 8000
REPO_ROOT = Path(__file__).resolve().parents[1]
BEEP = REPO_ROOT / "audio_fixtures" / "prompts" / "beep.wav"
_ID_RE = re.compile(r"^[0-9]{13}-[A-Za-z0-9_.-]{1,100}$")


class VoicemailError(IvrError):
    """A voicemail could not be found or stored."""


@dataclass(slots=True)
class Voicemail:
    id: str
    call_id: str
    queue: str
    mailbox: str | None
    ani: str | None
    customer_id: int | None
    seconds: float
    at: float                       # epoch seconds
    ticket_id: int | None = None
    language: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["record_url"] = f"/supervisor/voicemail/{self.id}.json"
        d["audio_url"] = f"/supervisor/voicemail/{self.id}.wav"
        return d


def _safe(call_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", call_id)[:100] or "call"


class VoicemailBox:
    """``await box.take(call, queue=..., context=..., play=...)`` records one message; ``list()``, ``get(id)`` and
    ``wav_path(id)`` serve the supervisors' page."""

    def __init__(self, root: Path, *, db: Any | None = None, max_seconds: float = 120.0,
                 silence_end_seconds: float = 3.0, start_timeout: float = 8.0, min_seconds: float = 0.5,
                 wall_clock: Callable[[], float] = time.time):
        self.root = Path(root)
        self.db = db
        self.max_seconds = max_seconds
        self.silence_end_seconds = silence_end_seconds
        self.start_timeout = start_timeout
        self.min_seconds = min_seconds
        self.wall_clock = wall_clock

    async def take(self, call: Any, *, queue: str, context: dict[str, Any], mailbox: str | None = None,
                   language: str | None = None, max_seconds: float | None = None) -> Voicemail | None:
        """Beep, record until end of speech (or ``max_seconds``), store. None when the caller said nothing.
        Raises CallerHungUp when the caller left before the beep; a hang-up during the message keeps what was
        said (the session's recording is read back as far as it got)."""
        from ivr.calls import CallerHungUp

        beep = await asyncio.to_thread(load_prompt, BEEP)
        await call.play(beep)
        if call.leg.ended:
            raise CallerHungUp(f"call {call.id} ended before the message")
        # The session's recorder, not Call.record: a caller who hangs up to finish (the usual way) closes the
        # session, which ends the recording with what was said; Call.record would drop it.
        result = await call.session.record_detailed(max_seconds or self.max_seconds,
                                                    silence_end_seconds=self.silence_end_seconds,
                                                    start_timeout=self.start_timeout)
        audio = np.asarray(result.audio, dtype=np.int16)
        seconds = len(audio) / RATE
        if seconds < self.min_seconds:
            log.info("call %s: no voicemail left (%.1f s of speech)", call.id, seconds)
            return None
        at = self.wall_clock()
        customer = context.get("customer") or {}
        cid = context.get("customer_id") or customer.get("id")
        vm = Voicemail(id=f"{int(at * 1000):013d}-{_safe(call.id)}", call_id=call.id, queue=queue, mailbox=mailbox,
                       ani=call.ani, customer_id=int(cid) if cid is not None and str(cid).isdigit() else None,
                       seconds=round(seconds, 2), at=at, language=language)
        self.root.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(write_wav, self.root / f"{vm.id}.wav", audio)
        if self.db is not None:
            try:
                vm.ticket_id = await self.db.run(lambda s: self._note(s, vm, context))
            except Exception:
                log.exception("call %s: voicemail stored but not noted in the CRM", call.id)
        (self.root / f"{vm.id}.json").write_text(json.dumps(asdict(vm)))
        log.info("call %s: voicemail %s (%.1f s) for queue %s", call.id, vm.id, seconds, queue)
        return vm

    def _note(self, s: Any, vm: Voicemail, context: dict[str, Any]) -> int | None:
        """Ticket note (a new ticket when the call has none) and, for a known customer, an interaction."""
        from sqlalchemy import select

        from crm_bridge import models as m

        at = datetime.fromtimestamp(vm.at, timezone.utc)
        text = (f"Voicemail {vm.seconds:.1f} s left in queue {vm.queue} by {vm.ani or 'a withheld number'} "
                f"(call record {vm.call_id}; audio {vm.as_dict()['audio_url']})")
        rec = s.scalars(select(m.CallRecord).where(m.CallRecord.call_id == vm.call_id)).first()
        ticket = s.get(m.Ticket, rec.ticket_id) if rec is not None and rec.ticket_id else None
        if ticket is None:
            ticket = m.Ticket(customer_id=vm.customer_id, call_id=vm.call_id, service=context.get("service"),
                              line=rec.line if rec is not None else None, dnis=context.get("dnis"),
                              status=m.TicketStatus.OPEN, notes=text, created_at=at, updated_at=at)
            s.add(ticket)
            s.flush()
            if rec is not None:
                rec.ticket_id = ticket.id
        else:
            ticket.notes = (ticket.notes + "\n" if ticket.notes else "") + text
            if ticket.status is m.TicketStatus.CLOSED:
                ticket.status = m.TicketStatus.OPEN
            ticket.updated_at = at
        if vm.customer_id is not None and s.get(m.Customer, vm.customer_id) is not None:
            s.add(m.Interaction(customer_id=vm.customer_id, ticket_id=ticket.id, call_id=vm.call_id,
                                channel="voicemail", direction="inbound", summary=text, at=at))
        return ticket.id

    # ------------------------------------------------------------------------------------------ reading
    def list(self, limit: int = 200) -> list[Voicemail]:
        """Newest first."""
        if not self.root.is_dir():
            return []
        out = []
        for p in sorted(self.root.glob("*.json"), reverse=True)[:limit]:
            try:
                out.append(Voicemail(**json.loads(p.read_text())))
            except (OSError, ValueError, TypeError):
                log.warning("unreadable voicemail sidecar %s", p)
        return out

    def get(self, vm_id: str) -> Voicemail:
        if not _ID_RE.match(vm_id):
            raise VoicemailError(f"{vm_id!r} is not a voicemail id")
        p = self.root / f"{vm_id}.json"
        try:
            return Voicemail(**json.loads(p.read_text()))
        except FileNotFoundError:
            raise VoicemailError(f"voicemail {vm_id} not found") from None

    def wav_path(self, vm_id: str) -> Path:
        self.get(vm_id)
        p = self.root / f"{vm_id}.wav"
        if not p.is_file():
            raise VoicemailError(f"voicemail {vm_id} has no audio")
        return p
