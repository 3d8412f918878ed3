"""Media layer: RTP, G.711, DTMF, SDP offer/answer, prompts, RTP sessions with IVR primitives, bridges.

Typical incoming call::

    engine = MediaEngine("0.0.0.0", 10000, 20000)            # once per process
    session = await engine.open_session(name=call_id)         # binds an even RTP port
    answer, neg = answer_offer(invite.body, public_ip, session.local_port)   # NoCommonCodec -> 488
    session.start(neg)                                         # after sending the 200 OK
    await session.play(load_prompt("prompts/welcome.wav"), barge_in=True)
    result = await session.collect_digits(4, first_timeout=5, inter_digit_timeout=3)
    voice = await session.record(max_seconds=10)
    await session.close()
"""

from ivr.media.audio import PromptCache, load_prompt, load_wav_8k, resample, write_wav
from ivr.media.bridge import Bridge, RecordMode
from ivr.media.collect import CollectReason, CollectResult, DigitCollector
from ivr.media.dtmf import (
    DtmfDigit,
    DtmfMode,
    DtmfSource,
    InbandDtmfDetector,
    Rfc4733Receiver,
    encode_event,
    generate_tone,
    parse_info_body,
)
from ivr.media.eos import EndOfSpeechDetector, EosEvent
from ivr.media.errors import (
    AudioFileError,
    DtmfError,
    MediaError,
    NoAudioStream,
    NoCommonCodec,
    OfferRejected,
    PortsExhausted,
    RtpError,
    SdpError,
)
from ivr.media.g711 import Codec
from ivr.media.rtp import RtpPacket
from ivr.media.sdp import (
    Direction,
    NegotiatedMedia,
    SessionDescription,
    answer_offer,
    make_offer,
    parse_answer,
    parse_sdp,
)
from ivr.media.engine import MediaEngine, SendStats
from ivr.media.session import MediaSession, PlayEnd, PlayResult, RecordResult, SessionStats

__all__ = [
    "AudioFileError", "Bridge", "Codec", "CollectReason", "CollectResult", "DigitCollector", "Direction",
    "DtmfDigit", "DtmfError", "DtmfMode", "DtmfSource", "EndOfSpeechDetector", "EosEvent", "InbandDtmfDetector",
    "MediaEngine", "MediaError", "MediaSession", "NegotiatedMedia", "NoAudioStream", "NoCommonCodec",
    "OfferRejected", "PlayEnd", "PlayResult", "PortsExhausted", "PromptCache", "RecordMode", "RecordResult",
    "Rfc4733Receiver", "RtpError", "RtpPacket", "SdpError", "SendStats", "SessionDescription",
    "SessionStats", "answer_offer", "encode_event", "generate_tone", "load_prompt", "load_wav_8k", "make_offer",
    "parse_answer", "parse_info_body", "parse_sdp", "resample", "write_wav",
]
