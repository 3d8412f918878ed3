"""Exceptions of the media layer; catch ``MediaError`` to catch them all."""

from ivr.errors import IvrError


class MediaError(IvrError):
    """Base class of every error raised by ``ivr.media``."""


class RtpError(MediaError):
    """A datagram is not a valid RTP packet (the session counts and drops it)."""


class SdpError(MediaError):
    """An SDP body cannot be parsed; answer the INVITE with 400 or 488."""


class OfferRejected(SdpError):
    """The offer is valid but cannot be accepted: the call layer answers 488 Not Acceptable Here."""


class NoCommonCodec(OfferRejected):
    """None of the offered audio codecs is supported (answer 488)."""


class NoAudioStream(OfferRejected):
    """The offer has no usable audio stream (answer 488)."""


class PortsExhausted(MediaError):
    """Every RTP port of the configured range is in use: widen ``rtp_port_min``/``rtp_port_max``."""


class AudioFileError(MediaError):
    """An audio file cannot be read or converted."""


class DtmfError(MediaError):
    """A DTMF signal (SIP INFO body, digit to send) is malformed; answer INFO with 400."""
