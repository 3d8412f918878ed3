"""Writes the abuse corpus: one ``<expected>--<name>.sip`` file per hostile message (run it to regenerate).

``expected`` is the final status the server must answer with, or ``drop`` where RFC 3261 says to discard the
message (no Via to answer to, an ACK, a response to nothing). Files hold CRLF line ends and the placeholders
``{{HOST}} {{PORT}}`` (the server), ``{{LPORT}}`` (the sender's socket), ``{{CALLID}} {{BRANCH}} {{TAG}}`` and
``{{CL}}`` (the body's real length), which ``tests/e2e/test_abuse_corpus.py`` fills in before sending.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent

VIA = "Via: SIP/2.0/UDP 127.0.0.1:{{LPORT}};branch={{BRANCH}};rport"
FROM = "From: <sip:abuser@127.0.0.1>;tag={{TAG}}"
TO = "To: <sip:800100@{{HOST}}:{{PORT}}>"
CALLID = "Call-ID: {{CALLID}}"
CONTACT = "Contact: <sip:abuser@127.0.0.1:{{LPORT}}>"
MF = "Max-Forwards: 70"


def message(start: str, headers: list[str], body: bytes = b"", cl: str | None = "{{CL}}") -> bytes:
    lines = [start, *headers]
    if cl is not None:
        lines.append(f"Content-Length: {cl}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def request(method: str, *, cseq: str | None = None, omit: str = "", extra: list[str] = (), body: bytes = b"",
            cl: str | None = "{{CL}}", version: str = "SIP/2.0", ruri: str = "sip:800100@{{HOST}}:{{PORT}}",
            to: str = TO) -> bytes:
    parts = {"Via": VIA, "From": FROM, "To": to, "Call-ID": CALLID,
             "CSeq": f"CSeq: {cseq if cseq is not None else '1 ' + method}"}
    headers = [v for k, v in parts.items() if k != omit] + [CONTACT, MF, *extra]
    return message(f"{method} {ruri} {version}", headers, body, cl)


def sdp(media: str) -> bytes:
    lines = ["v=0", "o=abuser 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
    if media:
        lines += media.split("|")
    return ("\r\n".join(lines) + "\r\n").encode()


SDP = "Content-Type: application/sdp"
GOOD_SDP = "m=audio 4000 RTP/AVP 0|a=rtpmap:0 PCMU/8000"

CORPUS: dict[str, bytes] = {
    # framing and size
    "drop--truncated_request_line": b"INVITE sip:800100@{{HOST}}:{{PORT}}",
    "drop--truncated_before_via": b"OPTIONS sip:800100@{{HOST}}:{{PORT}} SIP/2.0\r\nFrom: <sip:a@b>;ta",
    "drop--truncated_after_via": request("OPTIONS")[: request("OPTIONS").index(b"Call-ID") + 6],
    "400--content_length_larger": request("OPTIONS", body=b"0123456789", cl="500"),
    "200--content_length_smaller": request("OPTIONS", body=b"0123456789trailing-garbage", cl="10"),
    "400--content_length_negative": request("OPTIONS", body=b"", cl="-1"),
    "400--content_length_text": request("OPTIONS", body=b"", cl="ten"),
    "400--content_length_huge": request("OPTIONS", body=b"x", cl="99999999999999999999"),
    "200--huge_header_60k": request("OPTIONS", extra=["Subject: " + "A" * 60000]),
    "drop--too_many_headers_1000_via": request("OPTIONS", extra=[VIA.replace("{{BRANCH}}", f"z9hG4bKv{i}")
                                                               for i in range(1000)]),
    "drop--header_name_only": request("OPTIONS", extra=["X-Broken"]),
    "drop--only_crlf_garbage": b"\r\n\r\n\x00\x00\x00\r\n",
    "drop--binary_noise": bytes(range(256)) * 4,
    # bytes that are not text
    "400--nul_in_header_value": request("OPTIONS", extra=["Subject: a\x00b"]),
    "400--nul_in_request_uri": request("OPTIONS", ruri="sip:800\x00100@{{HOST}}:{{PORT}}"),
    "drop--non_utf8_display_name": request("OPTIONS").replace(b"From: <sip:abuser",
                                                             b"From: \"\xff\xfe\xc3\x28\" <sip:abuser"),
    "drop--non_utf8_method": b"INV\xffITE" + request("INVITE")[6:],
    "200--nul_in_body": request("OPTIONS", extra=["Content-Type: application/octet-stream"],
                                body=b"\x00\xff\xfe\x00"),
    # missing mandatory headers (RFC 3261 8.1.1)
    "drop--missing_via": request("OPTIONS", omit="Via"),
    "400--missing_from": request("OPTIONS", omit="From"),
    "400--missing_to": request("OPTIONS", omit="To"),
    "400--missing_call_id": request("OPTIONS", omit="Call-ID"),
    "400--missing_cseq": request("OPTIONS", omit="CSeq"),
    "400--invite_missing_call_id": request("INVITE", omit="Call-ID", extra=[SDP], body=sdp(GOOD_SDP)),
    # absurd CSeq (RFC 3261 8.1.1.5: a 32-bit unsigned number below 2**31)
    "400--cseq_2_pow_32": request("OPTIONS", cseq="4294967296 OPTIONS"),
    "400--cseq_2_pow_31": request("OPTIONS", cseq="2147483648 OPTIONS"),
    "400--cseq_negative": request("OPTIONS", cseq="-1 OPTIONS"),
    "400--cseq_text": request("OPTIONS", cseq="one OPTIONS"),
    "400--cseq_no_method": request("OPTIONS", cseq="1"),
    "400--cseq_method_mismatch": request("OPTIONS", cseq="1 INVITE"),
    # SDP the server cannot use (RFC 3261 13.3.1.1: 488)
    "488--sdp_no_media": request("INVITE", extra=[SDP], body=sdp("")),
    "488--sdp_port_zero": request("INVITE", extra=[SDP], body=sdp("m=audio 0 RTP/AVP 0|a=rtpmap:0 PCMU/8000")),
    "488--sdp_unknown_codecs": request("INVITE", extra=[SDP], body=sdp(
        "m=audio 4000 RTP/AVP 97 98|a=rtpmap:97 speex/8000|a=rtpmap:98 iLBC/8000")),
    "488--sdp_video_only": request("INVITE", extra=[SDP], body=sdp("m=video 4000 RTP/AVP 31")),
    "488--sdp_garbage": request("INVITE", extra=[SDP], body=b"this is not sdp\r\n"),
    # requests for transactions and dialogs that do not exist (RFC 3261 9.2, 12.2.2, 17.2.3)
    "481--cancel_unknown": request("CANCEL"),
    "481--bye_unknown_dialog": request("BYE", to=TO + ";tag=nosuchdialog"),
    "481--bye_no_to_tag": request("BYE"),
    "481--reinvite_unknown_dialog": request("INVITE", to=TO + ";tag=nosuchdialog", extra=[SDP],
                                            body=sdp(GOOD_SDP)),
    "drop--ack_unknown": request("ACK", to=TO + ";tag=nosuchdialog"),
    "drop--ack_no_to_tag": request("ACK"),
    "drop--response_to_nothing": message("SIP/2.0 200 OK", [VIA, FROM, TO + ";tag=x", CALLID, "CSeq: 1 INVITE"]),
    # methods and versions
    "405--unknown_method": request("FROBNICATE"),
    "405--unknown_method_with_body": request("XYZZY", extra=["Content-Type: text/plain"], body=b"hello"),
    "505--sip_version_3": request("OPTIONS", version="SIP/3.0"),
    "505--sip_version_1": request("INVITE", version="SIP/1.0", extra=[SDP], body=sdp(GOOD_SDP)),
    "400--sip_version_garbage": request("OPTIONS", version="HTTP/1.1"),
    "416--unsupported_uri_scheme": request("OPTIONS", ruri="gopher://{{HOST}}:{{PORT}}/"),
    "420--require_unknown_extension": request("OPTIONS", extra=["Require: teleportation"]),
}


def main() -> None:
    for old in HERE.glob("*.sip"):
        old.unlink()
    for name, data in CORPUS.items():
        (HERE / f"{name}.sip").write_bytes(data)


if __name__ == "__main__":
    main()
