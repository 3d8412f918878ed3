"""RFC 3261 17 transaction state machines driven by a fake clock."""

import pytest

from ivr.sip.message import SipRequest, SipResponse, make_response, parse_message
from ivr.sip.timers import DEFAULT_TIMERS, TimerValues, retransmission_schedule
from ivr.sip.transaction import (
    AnswerRetransmitter,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    TransactionError,
    TxState,
    client_key,
    server_key,
)


def request(method="INVITE", branch="z9hG4bK-abc", cseq=1, to_tag=None, via_host="10.0.0.1"):
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via_host}:5062;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=ft1\r\n"
        f"To: {to}\r\n"
        "Call-ID: call-1@example.com\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:alice@10.0.0.1:5062>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, SipRequest)
    return msg


def drive(tx, start, end, step=0.125):
    """Call handle_timer at every deadline up to ``end``; return the times it fired and the result."""
    fired = []
    now = start
    while True:
        at = tx.deadline
        if at is None or at > end:
            return fired
        now = at
        result = tx.handle_timer(now)
        fired.append((now, result))


class Sink(list):
    def statuses(self):
        return [m.status if isinstance(m, SipResponse) else m.method for m in self]


def test_retransmission_schedule_defaults():
    assert retransmission_schedule(DEFAULT_TIMERS, 32.0) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert DEFAULT_TIMERS.transaction_timeout == 32.0
    assert DEFAULT_TIMERS.t1 == 0.5 and DEFAULT_TIMERS.t2 == 4.0 and DEFAULT_TIMERS.t4 == 5.0


def test_invite_server_sends_trying_and_absorbs_retransmissions():
    sent = Sink()
    req = request()
    tx = InviteServerTransaction(req, sent.append, reliable=False, now=0.0)
    assert sent.statuses() == [100]
    tx.receive_request(req, 0.2)
    assert sent.statuses() == [100, 100]
    tx.respond(make_response(req, 180, to_tag="tt"), 0.3)
    tx.receive_request(req, 0.4)
    assert sent.statuses() == [100, 100, 180, 180]
    assert tx.deadline is None  # Proceeding has no timer: the TU decides


def test_invite_server_error_retransmitted_with_timer_g_until_ack():
    sent = Sink()
    req = request()
    tx = InviteServerTransaction(req, sent.append, reliable=False, now=0.0)
    tx.respond(make_response(req, 486, to_tag="tt"), 1.0)
    assert tx.state is TxState.COMPLETED
    fired = drive(tx, 1.0, 5.0)
    assert [t for t, _ in fired] == [1.5, 2.5, 4.5]
    assert sent.statuses() == [100, 486, 486, 486, 486]
    assert tx.receive_ack(5.0) is False
    assert tx.state is TxState.CONFIRMED
    tx.receive_request(req, 5.1)  # INVITE retransmission in Confirmed: absorbed silently
    assert len(sent) == 5
    fired = drive(tx, 5.0, 100.0)
    assert fired == [(10.0, False)]  # timer I = T4
    assert tx.terminated


def test_invite_server_timer_h_gives_up_and_g_caps_at_t2():
    sent = Sink()
    req = request()
    tx = InviteServerTransaction(req, sent.append, reliable=False, now=0.0)
    tx.respond(make_response(req, 500, to_tag="tt"), 0.0)
    fired = drive(tx, 0.0, 100.0)
    times = [t for t, _ in fired]
    assert times[:6] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    assert fired[-1] == (32.0, True)
    assert tx.terminated and tx.deadline is None


def test_invite_server_reliable_no_retransmission_and_ack_terminates():
    sent = Sink()
    req = request()
    tx = InviteServerTransaction(req, sent.append, reliable=True, now=0.0)
    tx.respond(make_response(req, 404, to_tag="tt"), 0.0)
    assert tx.deadline == 32.0  # only timer H
    tx.receive_ack(1.0)
    assert tx.terminated


def test_invite_server_accepted_state_absorbs_invite_and_passes_ack():
    sent = Sink()
    req = request()
    tx = InviteServerTransaction(req, sent.append, reliable=False, now=0.0)
    ok = make_response(req, 200, to_tag="tt")
    tx.respond(ok, 1.0)
    assert tx.state is TxState.ACCEPTED
    tx.receive_request(req, 2.0)
    assert sent.statuses() == [100, 200]
    tx.respond(ok, 2.5)  # the TU's own 2xx retransmission goes through
    assert sent.statuses() == [100, 200, 200]
    assert tx.receive_ack(3.0) is True
    with pytest.raises(TransactionError):
        tx.respond(make_response(req, 486), 3.0)
    assert drive(tx, 3.0, 100.0) == [(33.0, False)]  # timer L
    assert tx.terminated


def test_answer_retransmitter_doubles_to_t2_then_gives_up():
    sent = Sink()
    req = request()
    ok = make_response(req, 200, to_tag="tt")
    rt = AnswerRetransmitter(ok, sent.append, reliable=False, now=0.0)
    fired = drive(rt, 0.0, 100.0)
    assert [t for t, r in fired if not r] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert fired[-1] == (32.0, True)
    assert len(sent) == 10 and rt.done and rt.deadline is None


def test_answer_retransmitter_stops_on_ack_and_is_silent_over_tcp():
    sent = Sink()
    ok = make_response(request(), 200, to_tag="tt")
    rt = AnswerRetransmitter(ok, sent.append, reliable=False, now=0.0)
    drive(rt, 0.0, 2.0)
    rt.stop()
    assert rt.deadline is None and len(sent) == 2
    tcp = AnswerRetransmitter(ok, sent.append, reliable=True, now=0.0)
    assert drive(tcp, 0.0, 100.0) == [(32.0, True)]
    assert len(sent) == 2


def test_non_invite_server_absorbs_then_resends_final_and_timer_j():
    sent = Sink()
    req = request("OPTIONS")
    tx = NonInviteServerTransaction(req, sent.append, reliable=False, now=0.0)
    tx.receive_request(req, 0.1)
    assert sent == []  # Trying: absorbed without answer
    tx.respond(make_response(req, 200, to_tag="x"), 0.2)
    tx.receive_request(req, 0.7)
    assert sent.statuses() == [200, 200]
    with pytest.raises(TransactionError):
        tx.respond(make_response(req, 500), 1.0)
    assert drive(tx, 0.2, 100.0) == [(pytest.approx(32.2), False)]
    assert tx.terminated
    tcp = NonInviteServerTransaction(req, sent.append, reliable=True, now=0.0)
    tcp.respond(make_response(req, 200, to_tag="x"), 0.0)
    assert tcp.terminated


def test_invite_client_timer_a_uncapped_and_timer_b_timeout():
    sent = Sink()
    req = request()
    tx = InviteClientTransaction(req, sent.append, reliable=False, now=0.0)
    fired = drive(tx, 0.0, 100.0)
    assert [t for t, r in fired if not r] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert fired[-1] == (32.0, True)
    assert len(sent) == 7 and tx.terminated


def test_invite_client_provisional_stops_retransmissions_and_2xx_passes_up_repeatedly():
    sent = Sink()
    req = request()
    tx = InviteClientTransaction(req, sent.append, reliable=False, now=0.0)
    ringing = make_response(req, 180, to_tag="r1")
    assert tx.receive_response(ringing, 0.2) is ringing
    assert tx.state is TxState.PROCEEDING and tx.deadline is None
    ok = make_response(req, 200, to_tag="r1")
    assert tx.receive_response(ok, 1.0) is ok
    assert tx.receive_response(ok, 1.5) is ok  # the TU re-sends its ACK
    assert tx.state is TxState.ACCEPTED
    assert drive(tx, 1.5, 100.0) == [(33.0, False)]  # timer M
    assert sent.statuses() == ["INVITE"]  # the transaction never ACKs a 2xx


def test_invite_client_acks_error_itself_and_absorbs_retransmission():
    sent = Sink()
    req = request(branch="z9hG4bK-inv")
    tx = InviteClientTransaction(req, sent.append, reliable=False, now=0.0)
    busy = make_response(req, 486, to_tag="r1")
    assert tx.receive_response(busy, 0.1) is busy
    assert tx.receive_response(busy, 0.6) is None
    assert sent.statuses() == ["INVITE", "ACK", "ACK"]
    ack = sent[1]
    assert ack.top_via.branch == "z9hG4bK-inv" and ack.cseq == (1, "ACK") and ack.to.tag == "r1"
    assert drive(tx, 0.6, 100.0) == [(32.1, False)]  # timer D
    tcp = InviteClientTransaction(req, sent.append, reliable=True, now=0.0)
    assert tcp.deadline == 32.0
    tcp.receive_response(busy, 0.1)
    assert tcp.terminated


def test_non_invite_client_timer_e_capped_at_t2_and_timer_f():
    sent = Sink()
    req = request("BYE", to_tag="t")
    tx = NonInviteClientTransaction(req, sent.append, reliable=False, now=0.0)
    fired = drive(tx, 0.0, 100.0)
    assert [t for t, r in fired if not r] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert fired[-1] == (32.0, True)


def test_non_invite_client_proceeding_retransmits_every_t2_then_completes():
    sent = Sink()
    req = request("BYE", to_tag="t")
    tx = NonInviteClientTransaction(req, sent.append, reliable=False, now=0.0)
    trying = make_response(req, 100)
    assert tx.receive_response(trying, 0.1) is trying
    fired = drive(tx, 0.1, 6.0)
    assert [t for t, _ in fired] == [0.5, 4.5]
    ok = make_response(req, 200)
    assert tx.receive_response(ok, 6.0) is ok
    assert tx.receive_response(ok, 6.5) is None
    assert drive(tx, 6.0, 100.0) == [(11.0, False)]  # timer K = T4
    assert tx.terminated


def test_timers_scale_together():
    fast = TimerValues(t1=0.05, t2=0.4, t4=0.5)
    sent = Sink()
    tx = NonInviteClientTransaction(request("OPTIONS"), sent.append, reliable=False, now=0.0, timers=fast)
    assert drive(tx, 0.0, 10.0)[-1] == (pytest.approx(3.2), True)


def test_matching_keys_follow_17_2_3():
    invite = request(branch="z9hG4bK-1")
    ack = request("ACK", branch="z9hG4bK-1", to_tag="tt")
    cancel = request("CANCEL", branch="z9hG4bK-1")
    assert server_key(ack) == server_key(invite)
    assert server_key(cancel) != server_key(invite)
    assert server_key(cancel, method="INVITE") == server_key(invite)
    assert server_key(request(branch="z9hG4bK-1", via_host="10.0.0.2")) != server_key(invite)
    assert server_key(request(branch="z9hG4bK-2")) != server_key(invite)
    # RFC 2543 peers without the magic cookie: matched on dialog ids, CSeq and top Via.
    old = request(branch="1234")
    assert server_key(request("ACK", branch="1234", to_tag="x")) == server_key(old)
    assert server_key(request(branch="1234", cseq=2)) != server_key(old)
    response = make_response(invite, 200)
    assert client_key(response) == client_key(invite) == ("z9hG4bK-1", "INVITE")
