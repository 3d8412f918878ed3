"""SipServer on real sockets (127.0.0.1, ephemeral ports), plus one call placed by SIPp."""

import asyncio
import os
import random
import shutil
import subprocess

import pytest

from ivr.sip.events import CallAcked, CallEnded, EndReason, IncomingCall
from ivr.sip.message import parse_message
from ivr.sip.transport import SipServer
from ivr.sip.useragent import SipUserAgent, UaConfig

SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"


def invite_bytes(port: int, transport: str, branch: str, call_id: str) -> bytes:
    return (
        f"INVITE sip:800@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@127.0.0.1>;tag=t1\r\n"
        "To: <sip:800@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:alice@127.0.0.1:{port}>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP)}\r\n\r\n"
    ).encode() + SDP


async def answering_server(**kw):
    """A tiny application: answers every call, records what happened."""
    log: list = []
    server: SipServer

    async def on_event(event):
        log.append(event)
        if isinstance(event, IncomingCall):
            server.answer(event.handle, SDP)

    ua = SipUserAgent(UaConfig(host="127.0.0.1", port=0))
    server = SipServer(ua, "127.0.0.1", 0, on_event=on_event, **kw)
    await server.start()
    return server, log


async def wait_for(predicate, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


class UdpClient(asyncio.DatagramProtocol):
    def __init__(self):
        self.received: asyncio.Queue = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.received.put_nowait(parse_message(data))


async def test_udp_invite_gets_100_and_200_then_ack_stops_retransmission():
    server, log = await answering_server()
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(UdpClient, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        transport.sendto(invite_bytes(port, "UDP", "z9hG4bK-u1", "udp-call"), ("127.0.0.1", server.bound_port))
        trying = await asyncio.wait_for(client.received.get(), 2)
        ok = await asyncio.wait_for(client.received.get(), 2)
        assert (trying.status, ok.status) == (100, 200)
        assert ok.body == SDP and ok.headers.get("Contact") == f"<sip:127.0.0.1:{server.bound_port}>"
        assert ok.top_via.rport == port and ok.top_via.received == "127.0.0.1"
        ack = (
            f"ACK sip:127.0.0.1:{server.bound_port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-a1\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=t1\r\nTo: {ok.headers.get('To')}\r\n"
            "Call-ID: udp-call\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        transport.sendto(ack, ("127.0.0.1", server.bound_port))
        await wait_for(lambda: any(isinstance(e, CallAcked) for e in log))
        assert server.ua.get_timer() is None or server.ua.get_timer() > loop.time() + 1  # nothing left but timer L
    finally:
        transport.close()
        await server.stop()


async def read_responses(reader, count):
    from ivr.sip.framing import StreamFramer

    framer = StreamFramer()
    out = []
    while len(out) < count:
        data = await asyncio.wait_for(reader.read(4096), 2)
        assert data, "connection closed early"
        out.extend(parse_message(m) for m in framer.feed(data))
    return out


async def test_tcp_two_messages_in_one_segment():
    server, log = await answering_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
    try:
        port = writer.get_extra_info("sockname")[1]
        options = (
            f"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bK-o1\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=t9\r\nTo: <sip:127.0.0.1>\r\n"
            "Call-ID: opt-tcp\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        writer.write(options + invite_bytes(port, "TCP", "z9hG4bK-t1", "tcp-call"))
        responses = await read_responses(reader, 3)
        assert [(r.status, r.cseq[1]) for r in responses] == [(200, "OPTIONS"), (100, "INVITE"), (200, "INVITE")]
        assert responses[2].headers.get("Contact").endswith(";transport=tcp>")
    finally:
        writer.close()
        await server.stop()


async def test_tcp_message_split_byte_by_byte_and_crlf_keepalive():
    server, log = await answering_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
    try:
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"  # RFC 5626 pong
        port = writer.get_extra_info("sockname")[1]
        for byte in invite_bytes(port, "TCP", "z9hG4bK-t2", "tcp-split"):
            writer.write(bytes([byte]))
            await writer.drain()
        responses = await read_responses(reader, 2)
        assert [r.status for r in responses] == [100, 200]
        assert sum(isinstance(e, IncomingCall) for e in log) == 1
    finally:
        writer.close()
        await server.stop()


async def test_tcp_framing_error_closes_connection():
    server, log = await answering_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.bound_port)
    try:
        writer.write(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 1.2.3.4\r\n\r\n")  # no Content-Length
        assert await asyncio.wait_for(reader.read(), 2) == b""
        assert server.ua.stats.malformed == 1
    finally:
        writer.close()
        await server.stop()


@pytest.mark.sipp
@pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp is not installed")
async def test_sipp_builtin_uac_completes_a_call():
    server, log = await answering_server()
    try:
        local_port = random.randint(20000, 40000)
        proc = await asyncio.create_subprocess_exec(
            "sipp", "-sn", "uac", f"127.0.0.1:{server.bound_port}", "-i", "127.0.0.1", "-p", str(local_port),
            "-m", "1", "-timeout", "10", "-timeout_error", "-nostdin",
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=os.environ.get("TMPDIR", "/tmp"),
        )
        _, err = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
        await wait_for(lambda: any(isinstance(e, CallEnded) for e in log))
        kinds = [type(e) for e in log]
        assert kinds == [IncomingCall, CallAcked, CallEnded]
        assert log[-1].reason is EndReason.BYE_REMOTE
    finally:
        await server.stop()


async def test_works_on_uvloop():
    import uvloop

    async def scenario():
        server, log = await answering_server(tcp=False)
        loop = asyncio.get_running_loop()
        transport, client = await loop.create_datagram_endpoint(UdpClient, local_addr=("127.0.0.1", 0))
        try:
            port = transport.get_extra_info("sockname")[1]
            transport.sendto(invite_bytes(port, "UDP", "z9hG4bK-uv", "uv-call"), ("127.0.0.1", server.bound_port))
            statuses = [(await asyncio.wait_for(client.received.get(), 2)).status for _ in range(2)]
            # No ACK: the 200 is retransmitted by the loop timer after T1.
            again = await asyncio.wait_for(client.received.get(), 2)
            return statuses + [again.status]
        finally:
            transport.close()
            await server.stop()

    def run():
        return uvloop.run(scenario()) if hasattr(uvloop, "run") else asyncio.run(scenario())

    assert await asyncio.get_running_loop().run_in_executor(None, run) == [100, 200, 200]


async def test_pyvoip_call_with_its_ack_quirks():
    """pyVoIP ACKs with the INVITE's branch, a To tag of its own and one ACK per 200 it receives."""
    from pyVoIP.VoIP import CallState, VoIPPhone  # before pyVoIP.SIP: its modules import each other
    from pyVoIP.SIP import SIPClient

    server, log = await answering_server()
    loop = asyncio.get_running_loop()
    original_register = SIPClient.register
    SIPClient.register = lambda self: True  # it always REGISTERs first; no registrar here
    low = random.randint(20000, 30000) // 2 * 2
    phone = VoIPPhone("127.0.0.1", server.bound_port, "alice", "pw", myIP="127.0.0.1",
                      sipPort=random.randint(41000, 50000), rtpPortLow=low, rtpPortHigh=low + 100)
    try:
        await loop.run_in_executor(None, phone.start)
        call = await loop.run_in_executor(None, phone.call, "800")
        await wait_for(lambda: call.state == CallState.ANSWERED, timeout=10)
        await wait_for(lambda: any(isinstance(e, CallAcked) for e in log))
        await loop.run_in_executor(None, call.hangup)
        await wait_for(lambda: any(isinstance(e, CallEnded) for e in log))
        assert [type(e) for e in log] == [IncomingCall, CallAcked, CallEnded]
        assert log[-1].reason is EndReason.BYE_REMOTE
    finally:
        SIPClient.register = original_register
        await loop.run_in_executor(None, phone.stop)
        await server.stop()
