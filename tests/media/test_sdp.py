import pytest

from ivr.media.errors import NoAudioStream, NoCommonCodec, OfferRejected, SdpError
from ivr.media.g711 import Codec
from ivr.media.sdp import Direction, answer_offer, make_offer, parse_answer, parse_sdp


def sdp(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


BASE = ("v=0", "o=alice 2890844526 2890844526 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0")

SIPP_OFFER = sdp(*BASE, "m=audio 6000 RTP/AVP 8 0 101", "a=rtpmap:8 PCMA/8000", "a=rtpmap:0 PCMU/8000",
                 "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15", "a=ptime:20")


def test_parse_and_roundtrip():
    sd = parse_sdp(SIPP_OFFER)
    assert sd.origin.session_id == "2890844526"
    assert sd.connection.address == "10.0.0.1"
    m = sd.media[0]
    assert (m.media, m.port, m.proto, m.formats) == ("audio", 6000, "RTP/AVP", ["8", "0", "101"])
    assert m.rtpmaps[101].encoding == "telephone-event"
    assert m.ptime == 20 and m.direction is None
    assert parse_sdp(bytes(sd)) == sd
    assert bytes(sd) == SIPP_OFFER


def test_parse_lf_only_and_unknown_lines_preserved():
    text = ("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=x\nb=AS:64\nt=0 0\n"
            "m=audio 5000/2 RTP/AVP 0\ni=info\nc=IN IP4 224.2.1.1/127\n")
    sd = parse_sdp(text)
    assert sd.media[0].port == 5000 and sd.media[0].port_count == 2
    assert sd.media[0].connection.address == "224.2.1.1"
    assert "b=AS:64" in bytes(sd).decode()
    assert parse_sdp(bytes(sd)) == sd


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "must start with a v= line"),
        (b"hello", "must start with a v= line"),
        (sdp("v=0", "s=-"), "no o= line"),
        (sdp("v=0", "o=- 1 1 IN IP4"), "o= needs 6 fields"),
        (sdp(*BASE, "m=audio abc RTP/AVP 0"), "invalid port"),
        (sdp(*BASE, "m=audio 70000 RTP/AVP 0"), "out of range"),
        (sdp(*BASE, "garbage line"), "line 6"),
        (sdp(*BASE, "m=audio"), "m= needs"),
        (b"v=0\r\no=- 1 1 IN IP4 \xff\xfe\r\n", "not UTF-8"),
        (sdp("v=1", "o=- 1 1 IN IP4 1.1.1.1"), "unsupported version"),
    ],
)
def test_parse_errors(data, message):
    with pytest.raises(SdpError, match=message):
        parse_sdp(data)


def test_answer_prefers_offer_order_and_keeps_dtmf_pt():
    answer, neg = answer_offer(SIPP_OFFER, "192.0.2.5", 20000, session_id=42, session_version=1)
    assert neg.codec is Codec.PCMA and neg.payload_type == 8
    assert neg.dtmf_payload_type == 101
    assert neg.remote == ("10.0.0.1", 6000)
    assert neg.ptime == 20 and neg.direction is Direction.SENDRECV and not neg.remote_hold
    a = parse_sdp(answer)
    assert a.origin.session_id == "42" and a.connection.address == "192.0.2.5"
    m = a.media[0]
    assert (m.port, m.formats) == (20000, ["8", "101"])
    assert m.rtpmaps[8].encoding == "PCMA" and m.rtpmaps[101].encoding == "telephone-event"
    assert m.direction is Direction.SENDRECV
    assert m.attribute("fmtp") == "101 0-16"


def test_answer_respects_supported_list():
    _, neg = answer_offer(SIPP_OFFER, "192.0.2.5", 20000, supported=("PCMU",))
    assert neg.codec is Codec.PCMU and neg.payload_type == 0


def test_static_payload_types_without_rtpmap_and_no_dtmf():
    offer = sdp(*BASE, "m=audio 7000 RTP/AVP 18 0")
    answer, neg = answer_offer(offer, "127.0.0.1", 10000)
    assert neg.codec is Codec.PCMU and neg.dtmf_payload_type is None and neg.ptime == 20
    assert parse_sdp(answer).media[0].formats == ["0"]


def test_dynamic_telephone_event_and_codec_payload_types():
    offer = sdp(*BASE, "m=audio 7000 RTP/AVP 110 96", "a=rtpmap:110 PCMU/8000", "a=rtpmap:96 telephone-event/8000")
    answer, neg = answer_offer(offer, "127.0.0.1", 10000)
    assert neg.payload_type == 110 and neg.codec is Codec.PCMU and neg.dtmf_payload_type == 96
    assert parse_sdp(answer).media[0].formats == ["110", "96"]


def test_telephone_event_at_16k_is_not_ours():
    offer = sdp(*BASE, "m=audio 7000 RTP/AVP 0 101", "a=rtpmap:101 telephone-event/16000")
    assert answer_offer(offer, "127.0.0.1", 10000)[1].dtmf_payload_type is None


def test_ptime_honoured_media_and_session_level():
    o1 = sdp(*BASE, "m=audio 7000 RTP/AVP 0", "a=ptime:30")
    a1, n1 = answer_offer(o1, "127.0.0.1", 10000)
    assert n1.ptime == 30 and n1.samples_per_packet == 240
    assert parse_sdp(a1).media[0].ptime == 30
    o2 = sdp(*BASE, "a=ptime:10", "m=audio 7000 RTP/AVP 0")
    assert answer_offer(o2, "127.0.0.1", 10000)[1].ptime == 10


@pytest.mark.parametrize(
    "attr, ours, hold",
    [
        ("a=sendrecv", Direction.SENDRECV, False),
        ("a=sendonly", Direction.RECVONLY, True),
        ("a=recvonly", Direction.SENDONLY, False),
        ("a=inactive", Direction.INACTIVE, True),
    ],
)
def test_direction_attributes(attr, ours, hold):
    offer = sdp(*BASE, "m=audio 7000 RTP/AVP 0", attr)
    answer, neg = answer_offer(offer, "127.0.0.1", 10000)
    assert neg.direction is ours and neg.remote_hold is hold
    assert parse_sdp(answer).media[0].direction is ours


def test_session_level_direction():
    offer = sdp(*BASE, "a=sendonly", "m=audio 7000 RTP/AVP 0")
    assert answer_offer(offer, "127.0.0.1", 10000)[1].direction is Direction.RECVONLY


def test_rfc2543_hold_with_zero_address():
    offer = sdp("v=0", "o=- 1 2 IN IP4 10.0.0.1", "s=-", "c=IN IP4 0.0.0.0", "t=0 0", "m=audio 7000 RTP/AVP 0")
    _, neg = answer_offer(offer, "127.0.0.1", 10000)
    assert neg.remote_hold and not neg.direction.sends and neg.direction.receives


def test_local_hold_direction():
    answer, neg = answer_offer(SIPP_OFFER, "127.0.0.1", 10000, direction=Direction.SENDONLY)
    assert neg.direction is Direction.SENDONLY
    assert parse_sdp(answer).media[0].direction is Direction.SENDONLY


def test_reject_non_audio_streams_and_keep_mline_count():
    offer = sdp(*BASE, "m=video 9000 RTP/AVP 96", "a=rtpmap:96 H264/90000", "m=audio 7000 RTP/AVP 0")
    answer, neg = answer_offer(offer, "127.0.0.1", 10000)
    a = parse_sdp(answer)
    assert [(m.media, m.port) for m in a.media] == [("video", 0), ("audio", 10000)]
    assert neg.remote_port == 7000


@pytest.mark.parametrize(
    "offer, exc",
    [
        (sdp(*BASE, "m=audio 0 RTP/AVP 0"), NoAudioStream),
        (sdp(*BASE, "m=video 9000 RTP/AVP 96"), NoAudioStream),
        (sdp(*BASE), NoAudioStream),
        (sdp(*BASE, "m=audio 7000 RTP/SAVP 0"), NoAudioStream),
        (sdp(*BASE, "m=audio 7000 RTP/AVP 9 18 101", "a=rtpmap:101 telephone-event/8000"), NoCommonCodec),
        (sdp(*BASE, "m=audio 7000 RTP/AVP 96", "a=rtpmap:96 opus/48000/2"), NoCommonCodec),
        (sdp(*BASE, "m=audio 7000 RTP/AVP 97", "a=rtpmap:97 PCMU/16000"), NoCommonCodec),
    ],
)
def test_rejections(offer, exc):
    with pytest.raises(exc) as info:
        answer_offer(offer, "127.0.0.1", 10000)
    assert isinstance(info.value, OfferRejected)


def test_missing_connection_is_an_error():
    offer = sdp("v=0", "o=- 1 1 IN IP4 1.1.1.1", "s=-", "t=0 0", "m=audio 7000 RTP/AVP 0")
    with pytest.raises(SdpError, match="c= line"):
        answer_offer(offer, "127.0.0.1", 10000)


def test_offer_answer_between_our_own_ends():
    offer = make_offer("127.0.0.1", 12000, codecs=("PCMA", "PCMU"), dtmf_pt=101)
    answer, neg_b = answer_offer(offer, "127.0.0.1", 14000)
    assert neg_b.codec is Codec.PCMA and neg_b.remote == ("127.0.0.1", 12000) and neg_b.dtmf_payload_type == 101
    neg_a = parse_answer(offer, answer)
    assert neg_a.codec is Codec.PCMA and neg_a.remote == ("127.0.0.1", 14000)
    assert neg_a.dtmf_payload_type == 101 and neg_a.direction is Direction.SENDRECV and neg_a.ptime == 20


def test_parse_answer_from_a_phone():
    offer = make_offer("127.0.0.1", 12000)
    answer = sdp("v=0", "o=phone 5 5 IN IP4 10.1.1.1", "s=-", "c=IN IP4 10.1.1.1", "t=0 0",
                 "m=audio 4000 RTP/AVP 8 101", "a=rtpmap:101 telephone-event/8000", "a=ptime:30", "a=recvonly")
    neg = parse_answer(offer, answer)
    assert neg.codec is Codec.PCMA and neg.payload_type == 8 and neg.ptime == 30
    assert neg.direction is Direction.SENDONLY and not neg.remote_hold


def test_parse_answer_rejections():
    offer = make_offer("127.0.0.1", 12000, codecs=("PCMU",))
    with pytest.raises(NoAudioStream):
        parse_answer(offer, sdp(*BASE, "m=audio 0 RTP/AVP 0"))
    with pytest.raises(NoCommonCodec):
        parse_answer(offer, sdp(*BASE, "m=audio 4000 RTP/AVP 8"))
    with pytest.raises(SdpError):
        parse_answer(offer, sdp(*BASE))


def test_make_offer_validation():
    with pytest.raises(SdpError):
        make_offer("127.0.0.1", 1, codecs=("opus",))
    with pytest.raises(SdpError):
        make_offer("127.0.0.1", 1, dtmf_pt=8)
    o = parse_sdp(make_offer("::1", 1, dtmf_pt=None, direction=Direction.SENDONLY))
    assert o.connection.addrtype == "IP6" and o.media[0].formats == ["0", "8"]
    assert o.media[0].direction is Direction.SENDONLY
