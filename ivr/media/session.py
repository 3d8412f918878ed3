"""RTP sessions for calls: one UDP endpoint per call leg, paced sending, DTMF, play/collect/record.

Sending is driven by the engine's pacer (``ivr.media.engine``): it calls ``_pace_tick`` when a session's next
frame is due.

Receive path: parse, drop RTCP / malformed / unexpected payload types, symmetric RTP (reply to where the
peer's packets come from), loss accounting per SSRC, then G.711 decoding only when someone needs samples
(in-band DTMF, a recording, a bridge that transcodes or records).
"""

from __future__ import annotations

import asyncio
import collections
import enum
import functools
import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ivr.media.collect import CollectReason, CollectResult, DigitCollector
from ivr.media.dtmf import (
    DtmfDigit,
    _check_digit,
    DtmfMode,
    DtmfSource,
    InbandDtmfDetector,
    Rfc4733Receiver,
    encode_event,
    generate_tone,
)
from ivr.media.eos import EndOfSpeechDetector, EosEvent
from ivr.media.errors import MediaError, RtpError
from ivr.media.g711 import ALAW_TO_ULAW, ULAW_TO_ALAW, Codec
from ivr.media.rtp import _HEADER, RtpPacket, is_rtcp, pack_header_into
from ivr.media.sdp import NegotiatedMedia
from ivr.media.send_ring import RingFull

if TYPE_CHECKING:
    from ivr.media.engine import MediaEngine

log = logging.getLogger(__name__)

RATE = 8000
CN_PAYLOAD_TYPE = 13
_RELATCH_SILENCE = 1.0
_RELATCH_PACKETS = 3
_ENCODE_FRAMES = 50
_pack_header = _HEADER.pack_into


# ---------------------------------------------------------------------------------------------------------------
# Results and statistics


class PlayEnd(enum.Enum):
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"
    """A digit barged in; it stays buffered for the next ``collect_digits``."""
    STOPPED = "stopped"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class PlayResult:
    reason: PlayEnd
    digit: str | None = None
    samples_played: int = 0


@dataclass(frozen=True, slots=True)
class RecordResult:
    audio: np.ndarray
    """8 kHz int16, trimmed to the speech (with 0.3 s margins); empty when nobody spoke."""
    reason: EosEvent | None
    """None when the session closed or the peer stopped sending before a decision."""
    speech_detected: bool


@dataclass(slots=True)
class SessionStats:
    packets_received: int = 0
    bytes_received: int = 0
    audio_packets: int = 0
    dtmf_packets: int = 0
    lost: int = 0
    late: int = 0
    malformed: int = 0
    rtcp: int = 0
    wrong_payload_type: int = 0
    foreign_source: int = 0
    before_start: int = 0
    packets_sent: int = 0
    bytes_sent: int = 0
    skipped_frames: int = 0
    digits: int = 0


class _RtpProtocol(asyncio.DatagramProtocol):
    __slots__ = ("session",)

    def __init__(self, session: MediaSession):
        self.session = session

    def connection_made(self, transport):  # type: ignore[override]
        self.session._transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        session = self.session
        session.engine.tick_if_due(time.monotonic())
        try:
            session._on_datagram(data, addr)
        except Exception:  # bad input never takes the session down
            self.session.stats.malformed += 1
            log.exception("media session %s: error handling a datagram from %s", self.session.name, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("media session %s: %s", self.session.name, exc)


# ---------------------------------------------------------------------------------------------------------------
# Session


@dataclass
class _Playback:
    """A prompt being sent. Its audio is encoded a block at a time (one numpy call per ``_ENCODE_FRAMES``
    frames instead of one per packet), so sending a frame is a slice of bytes."""

    pcm: np.ndarray
    future: asyncio.Future
    barge_in: bool
    pos: int = 0
    _enc: bytes = b""
    _enc_start: int = 0
    _enc_codec: Codec | None = None

    def payload(self, codec: Codec, spp: int) -> bytes:
        """The encoded frame at ``pos`` (the last one padded with silence)."""
        pos = self.pos
        off = pos - self._enc_start
        if self._enc_codec is not codec or off < 0 or off + spp > len(self._enc):
            chunk = self.pcm[pos: pos + spp * _ENCODE_FRAMES]
            short = -len(chunk) % spp if len(chunk) else spp  # past the end (frames skipped): silence
            if short:
                chunk = np.concatenate([chunk, np.zeros(short, np.int16)])
            self._enc = codec.encode_table[chunk.view(np.uint16)].tobytes()
            self._enc_start, self._enc_codec, off = pos, codec, 0
        return self._enc[off: off + spp]


@dataclass
class _Recording:
    detector: EndOfSpeechDetector
    future: asyncio.Future
    chunks: list[np.ndarray] = field(default_factory=list)
    samples: int = 0
    ssrc: int | None = None
    next_ts: int = 0

    def feed(self, ssrc: int, ts: int, pcm: np.ndarray) -> None:
        if self.future.done():
            return
        if ssrc == self.ssrc:
            gap = (ts - self.next_ts) & 0xFFFFFFFF
            if gap >= 0x80000000:
                return  # late or duplicate
            if 0 < gap <= RATE:  # lost packets become silence, so the timeline stays true
                self._append(np.zeros(gap, np.int16))
        self.ssrc = ssrc
        self.next_ts = (ts + len(pcm)) & 0xFFFFFFFF
        self._append(pcm)

    def _append(self, pcm: np.ndarray) -> None:
        self.chunks.append(pcm)
        self.samples += len(pcm)
        for ev in self.detector.feed(pcm):
            if ev is not EosEvent.SPEECH_START and not self.future.done():
                self.future.set_result(ev)

    def result(self, reason: EosEvent | None) -> RecordResult:
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        det = self.detector
        if det.speech_start is None:
            return RecordResult(np.zeros(0, np.int16), reason, False)
        margin = int(0.3 * RATE)
        end = det.speech_end if det.speech_end is not None else len(audio)
        return RecordResult(audio[max(0, det.speech_start - margin): end + margin].copy(), reason, True)


@functools.cache
def _silence(codec: Codec, spp: int) -> bytes:
    return bytes([codec.silence_byte]) * spp


DtmfListener = Callable[["MediaSession", DtmfDigit], None]
AudioListener = Callable[["MediaSession", RtpPacket, "np.ndarray | None"], None]


class MediaSession:
    """One call leg's RTP endpoint. Create with ``await engine.open_session()``, then ``start(negotiated)``."""

    def __init__(self, engine: MediaEngine, port: int, dtmf_mode: DtmfMode, send_silence: bool, name: str):
        self.engine = engine
        self.local_port = port
        self.dtmf_mode = dtmf_mode
        self.send_silence = send_silence
        self.name = name or f"rtp:{port}"
        self.stats = SessionStats()
        self.negotiated: NegotiatedMedia | None = None
        self.closed = False
        self._transport: asyncio.DatagramTransport | None = None
        self._codec = Codec.PCMU
        self._pt = -1
        self._dtmf_pt = -1
        self._spp = 160
        self._ticks_per_frame = max(1, 20 // engine.tick_ms)
        self._next_tick = 0
        self._phase: tuple[int, int] | None = None
        self._can_send = False
        self._send_addr: tuple | None = None
        self._latched: tuple | None = None
        self._latched_last = 0.0
        self._candidate: tuple | None = None
        self._candidate_count = 0
        self.ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self._marker = True
        self._last_send = 0.0
        self._last_late = 0.0
        self._slot = 0  # the engine's number for this leg, also in the send worker
        self._offload_dest: tuple | None = None
        self._sock: socket.socket | None = None
        self._buf = bytearray(12 + 480)
        self._payload = np.frombuffer(self._buf, np.uint8, 160, 12)
        self._relay_buf = bytearray(12 + 480)
        self._relay = False
        self._fwd_ssrc: int | None = None
        self._fwd_offset = 0
        self._fwd_seq = 0
        self._seq_expect: dict[int, int] = {}
        self._rfc4733 = Rfc4733Receiver()
        self._dtmf_timer: asyncio.TimerHandle | None = None
        self._inband = InbandDtmfDetector()
        self._inband_on = dtmf_mode in (DtmfMode.INBAND, DtmfMode.AUTO)
        self._digits: collections.deque[str] = collections.deque(maxlen=64)
        self._digit_event = asyncio.Event()
        self._dtmf_listeners: list[DtmfListener] = []
        self._audio_listeners: list[tuple[AudioListener, bool]] = []
        self._playback: _Playback | None = None
        self._play_lock = asyncio.Lock()
        self._recording: _Recording | None = None
        self._out_events: collections.deque = collections.deque()
        self._cur_event: list | None = None
        self._cur_event_ts = 0
        self._need_pcm = self._inband_on

    # -- lifecycle ---------------------------------------------------------------------------------------------
    @property
    def local_address(self) -> tuple[str, int]:
        return (self.engine.host, self.local_port)

    @property
    def codec(self) -> Codec:
        return self._codec

    @property
    def remote_address(self) -> tuple | None:
        """Where packets go: the latched source of the peer's packets, else the SDP address."""
        return self._send_addr

    def start(self, negotiated: NegotiatedMedia) -> None:
        """Apply the agreed media (after the answer is sent or received) and start sending."""
        self.update(negotiated)

    def update(self, negotiated: NegotiatedMedia) -> None:
        """Apply a new negotiation (re-INVITE: hold, resume, new address or codec)."""
        if self.closed:
            raise MediaError("the media session is closed")
        old = self.negotiated
        self.negotiated = negotiated
        self._codec = negotiated.codec
        self._pt = negotiated.payload_type
        self._dtmf_pt = negotiated.dtmf_payload_type if negotiated.dtmf_payload_type is not None else -1
        ptime = max(self.engine.tick_ms, round(negotiated.ptime / self.engine.tick_ms) * self.engine.tick_ms)
        self._spp = RATE * ptime // 1000
        if len(self._buf) < 12 + self._spp:
            self._buf = bytearray(12 + self._spp)
        self._payload = np.frombuffer(self._buf, np.uint8, self._spp, 12)
        new_tpf = ptime // self.engine.tick_ms
        hold_addr = negotiated.remote_ip in ("0.0.0.0", "::")
        self._can_send = negotiated.direction.sends and not hold_addr and negotiated.remote_port > 0
        if old is None or old.remote != negotiated.remote:
            self._latched = None
            self._send_addr = None if hold_addr else negotiated.remote
        if new_tpf != self._ticks_per_frame:
            self.engine._unpace(self)
            self._ticks_per_frame = new_tpf
        self._marker = True
        self.engine._pace(self)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.engine._release(self)
        if self._dtmf_timer:
            self._dtmf_timer.cancel()
        if self._playback and not self._playback.future.done():
            self._playback.future.set_result(PlayResult(PlayEnd.CLOSED, None, self._playback.pos))
        if self._recording and not self._recording.future.done():
            self._recording.future.set_result(None)
        self._digit_event.set()
        if self._transport:
            self._transport.close()

    # -- listeners -----------------------------------------------------------------------------------------------
    def add_dtmf_listener(self, listener: DtmfListener) -> None:
        self._dtmf_listeners.append(listener)

    def remove_dtmf_listener(self, listener: DtmfListener) -> None:
        if listener in self._dtmf_listeners:
            self._dtmf_listeners.remove(listener)

    def add_audio_listener(self, listener: AudioListener, want_pcm: bool = True) -> None:
        """Called for every accepted audio packet with its decoded samples (or None when ``want_pcm`` is
        False and nobody else needs them)."""
        self._audio_listeners.append((listener, want_pcm))
        self._update_need_pcm()

    def remove_audio_listener(self, listener: AudioListener) -> None:
        self._audio_listeners = [(f, w) for f, w in self._audio_listeners if f != listener]
        self._update_need_pcm()

    def _update_need_pcm(self) -> None:
        self._need_pcm = ((self._inband_on and not self._relay) or self._recording is not None
                          or any(w for _, w in self._audio_listeners))

    # -- receive path ----------------------------------------------------------------------------------------------
    def _on_datagram(self, data: bytes, addr) -> None:
        st = self.stats
        st.packets_received += 1
        st.bytes_received += len(data)
        if is_rtcp(data):
            st.rtcp += 1
            return
        try:
            pkt = RtpPacket.parse(data)
        except RtpError:
            st.malformed += 1
            return
        if self.negotiated is None:
            st.before_start += 1
            return
        pt = pkt.payload_type
        if pt == self._pt:
            kind = 0
        elif pt == self._dtmf_pt:
            kind = 1
        elif pt == CN_PAYLOAD_TYPE:
            kind = 2
        else:
            st.wrong_payload_type += 1
            return
        now = time.monotonic()
        if addr != self._latched:
            if addr[1] == 0:
                if not self._same_host_unroutable(addr):
                    st.foreign_source += 1
                    return
            elif not self._accept_source(addr, now):
                st.foreign_source += 1
                return
        self._latched_last = now
        self._track_sequence(pkt.ssrc, pkt.sequence)
        if kind == 0:
            st.audio_packets += 1
            self._on_audio(pkt)
        elif kind == 1:
            st.dtmf_packets += 1
            self._on_telephone_event(pkt, now)

    def _same_host_unroutable(self, addr) -> bool:
        """A source port of 0 cannot be answered (some senders, e.g. SIPp replaying RFC 4733 events from a pcap,
        forge it): its packets count when they come from the peer's host, but it is never latched onto."""
        host = addr[0]
        if self._latched is not None:
            return host == self._latched[0]
        return self.negotiated is not None and host == self.negotiated.remote_ip

    def _accept_source(self, addr, now: float) -> bool:
        """Symmetric RTP with protection: latch the first source, move only when it has gone quiet and a new one
        has sent a few packets (NAT rebinding, re-INVITE to a new media server)."""
        if self._latched is None:
            self._latched = addr
            self._send_addr = addr
            return True
        if addr == self._candidate:
            self._candidate_count += 1
        else:
            self._candidate, self._candidate_count = addr, 1
        if self._candidate_count >= _RELATCH_PACKETS and now - self._latched_last > _RELATCH_SILENCE:
            log.info("media session %s: peer moved from %s to %s", self.name, self._latched, addr)
            self._latched = addr
            self._send_addr = addr
            self._candidate = None
            return True
        return False

    def _track_sequence(self, ssrc: int, seq: int) -> None:
        exp = self._seq_expect.get(ssrc)
        if exp is not None:
            gap = (seq - exp) & 0xFFFF
            if gap >= 0x8000:
                self.stats.late += 1
                return
            if gap < 3000:
                self.stats.lost += gap
        elif len(self._seq_expect) >= 8:
            self._seq_expect.clear()
        self._seq_expect[ssrc] = (seq + 1) & 0xFFFF

    def _on_audio(self, pkt: RtpPacket) -> None:
        pcm = None
        if self._need_pcm:
            pcm = self._codec.decode_table[np.frombuffer(pkt.payload, np.uint8)]
            if self._inband_on and not self._relay:
                for d in self._inband.feed(pcm):
                    self._dispatch_digit(d)
            if self._recording is not None:
                self._recording.feed(pkt.ssrc, pkt.timestamp, pcm)
        for listener, _ in self._audio_listeners:
            listener(self, pkt, pcm)

    def _on_telephone_event(self, pkt: RtpPacket, now: float) -> None:
        if self.dtmf_mode not in (DtmfMode.RFC4733, DtmfMode.AUTO):
            return
        if self._inband_on and self.dtmf_mode is DtmfMode.AUTO:
            self._inband_on = False
            self._update_need_pcm()
        for d in self._rfc4733.receive(pkt.ssrc, pkt.timestamp, pkt.payload, now):
            self._dispatch_digit(d)
        self._arm_dtmf_timer()

    def _arm_dtmf_timer(self) -> None:
        if self._dtmf_timer:
            self._dtmf_timer.cancel()
            self._dtmf_timer = None
        deadline = self._rfc4733.get_timer()
        if deadline is not None and not self.closed:
            loop = asyncio.get_running_loop()
            delay = max(0.0, deadline - time.monotonic())
            self._dtmf_timer = loop.call_later(delay, self._on_dtmf_timer)

    def _on_dtmf_timer(self) -> None:
        self._dtmf_timer = None
        for d in self._rfc4733.handle_timer(time.monotonic()):
            self._dispatch_digit(d)
        self._arm_dtmf_timer()

    def inject_dtmf(self, digit: str | DtmfDigit) -> None:
        """A digit that arrived by SIP INFO (parsed with ``dtmf.parse_info_body``)."""
        if isinstance(digit, str):
            digit = DtmfDigit(_check_digit(digit), DtmfSource.INFO)
        self._dispatch_digit(digit)

    def _dispatch_digit(self, d: DtmfDigit) -> None:
        if self.closed:
            return
        self.stats.digits += 1
        self._digits.append(d.digit)
        self._digit_event.set()
        pb = self._playback
        if pb is not None and pb.barge_in and not pb.future.done():
            pb.future.set_result(PlayResult(PlayEnd.INTERRUPTED, d.digit, pb.pos))
            self._playback = None
        for listener in list(self._dtmf_listeners):
            try:
                listener(self, d)
            except Exception:
                log.exception("DTMF listener failed on session %s", self.name)

    # -- send path ---------------------------------------------------------------------------------------------------
    def _pace_tick(self, g: int) -> None:
        eng = self.engine
        tpf = self._ticks_per_frame
        nt = self._next_tick
        if g < nt + tpf:  # one frame due: all but a stalled loop's ticks
            self._next_tick = nt + tpf
            self._send_frame(eng._t0 + nt * eng.tick)
            return
        due = (g - self._next_tick) // tpf + 1
        send = due if due <= eng.max_burst else eng.max_burst
        skip = due - send
        if skip:
            self._skip_frames(skip)
        first = self._next_tick + skip * tpf
        self._next_tick += due * tpf
        for i in range(send):
            self._send_frame(eng._t0 + (first + i * tpf) * eng.tick)

    def _skip_frames(self, n: int) -> None:
        self.stats.skipped_frames += n
        self.engine.skipped_frames += n
        self._ts = (self._ts + n * self._spp) & 0xFFFFFFFF
        pb = self._playback
        if pb is not None:
            pb.pos += n * self._spp
        self._marker = True

    def _send_frame(self, planned: float) -> None:
        spp = self._spp
        addr = self._send_addr
        transport = self._transport
        sendable = self._can_send and addr is not None and transport is not None
        if self._cur_event is not None or self._out_events:
            self._send_event_frame(sendable, planned)
            self._ts = (self._ts + spp) & 0xFFFFFFFF
            return
        if self._relay:
            sendable = False  # the bridged leg's packets are the stream; prompts advance silently
        pb = self._playback
        payload = None
        if pb is not None:
            if sendable:
                off = pb.pos - pb._enc_start
                if pb._enc_codec is self._codec and 0 <= off <= len(pb._enc) - spp:
                    self._buf[12: 12 + spp] = pb._enc[off: off + spp]
                else:
                    self._buf[12: 12 + spp] = pb.payload(self._codec, spp)
                payload = True
            pb.pos += spp
            if pb.pos >= len(pb.pcm):
                self._playback = None
                if not pb.future.done():
                    pb.future.set_result(PlayResult(PlayEnd.COMPLETED, None, len(pb.pcm)))
        elif sendable and self.send_silence:
            self._buf[12: 12 + spp] = _silence(self._codec, spp)
            payload = True
        if payload and sendable:  # _emit, inlined: this is the packet of (almost) every call every 20 ms
            buf = self._buf
            ts = self._ts
            seq = self._seq
            _pack_header(buf, 0, 0x80, (0x80 if self._marker else 0) | self._pt, seq, ts, self.ssrc)
            self._marker = False
            self._seq = (seq + 1) & 0xFFFF
            st = self.stats
            st.packets_sent += 1
            st.bytes_sent += 12 + spp
            eng = self.engine
            if eng.offload_on and self._offload_put(eng, memoryview(buf)[: 12 + spp], addr, planned):
                self._ts = (ts + spp) & 0xFFFFFFFF
                return
            transport.sendto(memoryview(buf)[: 12 + spp], addr)  # type: ignore[union-attr]
            now = time.monotonic()
            late = now - planned
            eng.late_hist.pending.append(late)  # binned by the engine once per tick
            if self._last_send:
                eng.gap_hist.pending.append(now - self._last_send)
                eng.jitter_hist.pending.append(abs(late - self._last_late))
            self._last_send = now
            self._last_late = late
            self._ts = (ts + spp) & 0xFFFFFFFF
            return
        elif not self._relay:
            self._marker = True
        self._ts = (self._ts + spp) & 0xFFFFFFFF

    def _offload_put(self, eng: MediaEngine, packet: memoryview, addr: tuple, planned: float) -> bool:
        """Hand the packet to the send worker; False when its ring is full (the caller sends it)."""
        offload = eng.offload
        assert offload is not None and offload.writer is not None
        if addr != self._offload_dest:
            offload.dest(self._slot, addr)
            self._offload_dest = addr
        try:
            offload.writer.put(self._slot, packet, planned)
        except RingFull:
            eng.offload_overflows += 1
            return False
        return True

    def _emit(self, pt: int, ts: int, buf: bytearray, length: int, planned: float | None) -> None:
        pack_header_into(buf, self._marker, pt, self._seq, ts, self.ssrc)
        self._marker = False
        self._seq = (self._seq + 1) & 0xFFFF
        assert self._transport is not None and self._send_addr is not None
        self.stats.packets_sent += 1
        self.stats.bytes_sent += length
        eng = self.engine
        if eng.offload_on and self._offload_put(eng, memoryview(buf)[:length], self._send_addr, planned or 0.0):
            if planned is None:
                eng.schedule_flush()  # outside a tick: relayed from a receive callback
            return
        self._transport.sendto(memoryview(buf)[:length], self._send_addr)
        if planned is not None:
            now = time.monotonic()
            late = now - planned
            eng = self.engine
            eng.late_hist.add(late)
            if self._last_send:
                eng.gap_hist.add(now - self._last_send)
                eng.jitter_hist.add(abs(late - self._last_late))
            self._last_send = now
            self._last_late = late

    def _send_event_frame(self, sendable: bool, planned: float) -> None:
        if self._cur_event is None:
            self._cur_event = list(self._out_events.popleft())
            self._cur_event_ts = self._ts
        item = self._cur_event.pop(0)
        if not self._cur_event:
            self._cur_event = None
        if not sendable:
            return
        if isinstance(item, np.ndarray):  # in-band tone frame for a peer without telephone-event
            np.take(self._codec.encode_table, item.view(np.uint16), out=self._payload)
            self._emit(self._pt, self._ts, self._buf, 12 + self._spp, planned)
            return
        payload = item.payload
        buf = self._relay_buf
        buf[12: 12 + len(payload)] = payload
        if item.marker:
            self._marker = True
        self._emit(self._dtmf_pt, self._cur_event_ts, buf, 12 + len(payload), planned)

    def send_dtmf(self, digits: str, duration_ms: int = 100, gap_ms: int = 60) -> None:
        """Queue digits to send: RFC 4733 events when the peer negotiated telephone-event, else tones in the
        audio. They go out in the next frame slots, before any prompt audio or relayed audio."""
        ptime = self._spp // 8
        for digit in digits:
            if self._dtmf_pt >= 0:
                pkts: list = encode_event(digit, 0, duration_ms, ptime)
            else:
                tone = generate_tone(digit, duration_ms, -8.0)
                pkts = [f for f in np.split(tone, range(self._spp, len(tone), self._spp))]
                pkts[-1] = np.pad(pkts[-1], (0, self._spp - len(pkts[-1])))
            pkts += [np.zeros(self._spp, np.int16)] * max(1, gap_ms // ptime)
            self._out_events.append(pkts)

    def forward(self, pkt: RtpPacket, source_codec: Codec) -> None:
        """Send a packet received on another leg (bridge): same payload when the codecs match, transcoded
        through the G.711 tables otherwise; sequence, timestamp base and SSRC are this leg's own."""
        if not self._can_send or self._send_addr is None or self._transport is None:
            return
        if self._cur_event is not None or self._out_events:
            return  # our own DTMF event owns the stream for now
        if pkt.ssrc != self._fwd_ssrc:
            self._fwd_ssrc = pkt.ssrc
            self._fwd_offset = (self._ts - pkt.timestamp) & 0xFFFFFFFF
            self._marker = True
        elif pkt.marker:
            self._marker = True
        payload = pkt.payload
        n = len(payload)
        buf = self._relay_buf
        if len(buf) < 12 + n:
            buf = self._relay_buf = bytearray(12 + n)
        if source_codec is self._codec:
            buf[12: 12 + n] = payload
        else:
            table = ULAW_TO_ALAW if source_codec is Codec.PCMU else ALAW_TO_ULAW
            np.take(table, np.frombuffer(payload, np.uint8), out=np.frombuffer(buf, np.uint8, n, 12))
        self._emit(self._pt, (pkt.timestamp + self._fwd_offset) & 0xFFFFFFFF, buf, 12 + n, None)

    def set_relay(self, relay: bool) -> None:
        """While relaying (bridged), prompts and silence stop: the other leg's packets are the stream. In-band
        detection pauses too (the tones reach the other party in the relayed audio, and it is the costliest
        part of the receive path); RFC 4733 and INFO digits are still reported."""
        self._relay = relay
        self._fwd_ssrc = None
        self._marker = True
        self._inband.reset()
        self._update_need_pcm()

    # -- IVR primitives ------------------------------------------------------------------------------------------
    def _require_started(self) -> None:
        if self.closed:
            raise MediaError("the media session is closed (the call has ended)")
        if self.negotiated is None:
            raise MediaError("start the media session with the negotiated SDP before playing or recording")

    async def play(self, pcm: np.ndarray, barge_in: bool = False) -> PlayResult:
        """Play 8 kHz int16 audio; returns when it has been sent, stopped, interrupted by a digit (barge_in:
        the digit stays buffered for ``collect_digits``) or the session closed. With barge_in, a digit typed
        ahead skips the prompt."""
        self._require_started()
        pcm = np.asarray(pcm)
        if pcm.dtype != np.int16 or pcm.ndim != 1:
            raise MediaError(f"play() wants mono 8 kHz int16 samples, got {pcm.dtype} {pcm.shape}: "
                             f"load files with ivr.media.audio.load_prompt")
        async with self._play_lock:
            if self.closed:
                return PlayResult(PlayEnd.CLOSED)
            if barge_in and self._digits:
                return PlayResult(PlayEnd.INTERRUPTED, self._digits[0], 0)
            if len(pcm) == 0:
                return PlayResult(PlayEnd.COMPLETED)
            fut = asyncio.get_running_loop().create_future()
            self._playback = _Playback(pcm, fut, barge_in)
            try:
                return await fut
            finally:
                if self._playback is not None and self._playback.future is fut:
                    self._playback = None

    def stop_playback(self) -> None:
        pb = self._playback
        if pb is not None and not pb.future.done():
            pb.future.set_result(PlayResult(PlayEnd.STOPPED, None, pb.pos))
        self._playback = None

    @property
    def playing(self) -> bool:
        return self._playback is not None

    def pending_digits(self) -> str:
        return "".join(self._digits)

    def clear_digits(self) -> None:
        self._digits.clear()

    async def collect_digits(self, max_digits: int, first_timeout: float = 5.0, inter_digit_timeout: float = 3.0,
                             terminator: str | None = "#") -> CollectResult:
        """Collect digits, starting with those typed ahead; see ``DigitCollector`` for the rules."""
        self._require_started()
        loop = asyncio.get_running_loop()
        collector = DigitCollector(max_digits, first_timeout, inter_digit_timeout, terminator, loop.time())
        while True:
            while self._digits:
                result = collector.on_digit(self._digits.popleft(), loop.time())
                if result is not None:
                    return result
            if self.closed:
                return CollectResult(collector.digits, CollectReason.CLOSED)
            deadline = collector.get_timer()
            assert deadline is not None
            self._digit_event.clear()
            try:
                await asyncio.wait_for(self._digit_event.wait(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                result = collector.handle_timer(loop.time())
                if result is not None:
                    return result

    async def record(self, max_seconds: float = 10.0, silence_end_seconds: float = 1.5,
                     start_timeout: float = 5.0) -> np.ndarray:
        """Record the caller until end of speech; empty array when nobody spoke (see ``record_detailed``)."""
        return (await self.record_detailed(max_seconds, silence_end_seconds, start_timeout)).audio

    async def record_detailed(self, max_seconds: float = 10.0, silence_end_seconds: float = 1.5,
                              start_timeout: float = 5.0) -> RecordResult:
        self._require_started()
        if self._recording is not None:
            raise MediaError("a recording is already running on this session")
        loop = asyncio.get_running_loop()
        det = EndOfSpeechDetector(max_seconds=max_seconds, silence_end_seconds=silence_end_seconds,
                                  start_timeout=start_timeout)
        rec = self._recording = _Recording(det, loop.create_future())
        self._update_need_pcm()
        guard = max(max_seconds, start_timeout) + 2.0  # the peer may stop sending (hold, NAT trouble)
        try:
            reason = await asyncio.wait_for(asyncio.shield(rec.future), guard)
        except asyncio.TimeoutError:
            reason = None
        finally:
            self._recording = None
            self._update_need_pcm()
        return rec.result(reason)
