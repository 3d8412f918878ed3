"""The send ring without processes: order, wrap-around, full ring, statistics area."""

import struct

import numpy as np
import pytest

from ivr.media.send_ring import (
    DATA_OFF,
    TAIL_OFF,
    RingFull,
    RingReader,
    RingWriter,
    SendStatsArea,
    region_size,
)


def ring(capacity=4096):
    buf = memoryview(bytearray(region_size(capacity)))
    return RingWriter(buf, capacity), RingReader(buf, capacity), buf


def test_records_come_out_in_order_with_their_slot_and_planned_time():
    w, r, _ = ring()
    w.put(7, b"\x80\x00abc", 1.5)
    w.put(9, bytes(172), 2.25)
    out = [(slot, bytes(pkt), planned) for slot, pkt, planned in r.records(w.head)]
    assert out == [(7, b"\x80\x00abc", 1.5), (9, bytes(172), 2.25)]
    assert list(r.records(w.head)) == []


def test_a_record_that_does_not_fit_before_the_end_wraps_to_the_start():
    w, r, buf = ring(4096)
    pkt = bytes(range(172)) + bytes(4)  # 176 + 16 = 192 bytes a record
    seen = []
    for i in range(100):  # 19 KB through a 4 KB ring
        w.put(i, pkt, float(i))
        for slot, p, planned in r.records(w.head):
            assert bytes(p) == pkt and planned == slot
            seen.append(slot)
        r.release()
    assert seen == list(range(100))
    assert w.head > 4096 * 4


def test_a_full_ring_refuses_until_the_reader_releases():
    w, r, _ = ring(4096)
    n = 0
    with pytest.raises(RingFull):
        while True:
            w.put(n, bytes(172), 0.0)
            n += 1
    assert n == 4096 // 192
    got = [slot for slot, _, _ in r.records(w.head)]
    with pytest.raises(RingFull):
        w.put(99, bytes(172), 0.0)  # read but not released: the space is still taken
    r.release()
    w.put(99, bytes(172), 0.0)
    assert got == list(range(n))
    assert [slot for slot, _, _ in r.records(w.head)] == [99]


def test_the_tail_lives_in_the_shared_header():
    w, r, buf = ring()
    w.put(1, b"x" * 10, 0.0)
    list(r.records(w.head))
    r.release()
    assert struct.unpack_from("<Q", buf, TAIL_OFF)[0] == w.head == 32
    assert DATA_OFF % 64 == 0


def test_writer_checks_its_capacity():
    with pytest.raises(ValueError, match="multiple of 8"):
        RingWriter(memoryview(bytearray(region_size(5000))), 5001)


def test_stats_area_bins_counts_and_resets():
    _, _, buf = ring()
    st = SendStatsArea(buf)
    st.add(0, [0.0001, 0.0002, 0.0025, 2.0])
    st.add(2, [])
    bins, count, mx = st.snapshot(0)
    assert count == 4 and mx == 2.0
    assert bins[1] == 1 and bins[2] == 1 and bins[25] == 1 and bins[-1] == 1
    assert st.snapshot(2)[1] == 0
    other = SendStatsArea(buf)  # another view of the same memory (the other process)
    assert other.snapshot(0)[1] == 4
    st.reset()
    assert other.snapshot(0)[1] == 0 and not np.any(other.snapshot(0)[0])
