import math

import pytest

from routing.ewt import erlang_c, erlang_c_asa, position_ewt, service_level


def _direct(n: int, a: float) -> float:
    """Textbook closed form with factorials (fine for small n)."""
    s = sum(a ** k / math.factorial(k) for k in range(n))
    t = a ** n / math.factorial(n) * n / (n - a)
    return t / (s + t)


@pytest.mark.parametrize("n,a", [(3, 2.0), (7, 5.0), (10, 8.0), (20, 12.5), (1, 0.5)])
def test_erlang_c_matches_closed_form(n, a):
    assert erlang_c(n, a) == pytest.approx(_direct(n, a), rel=1e-12)


def test_erlang_c_edges():
    assert erlang_c(3, 2.0) == pytest.approx(4 / 9)
    assert erlang_c(0, 1.0) == 1.0 and erlang_c(5, 0.0) == 0.0 and erlang_c(4, 4.0) == 1.0


def test_erlang_c_large_staff_is_stable():
    p = erlang_c(5000, 4900.0)
    assert 0.0 < p < 1.0 and math.isfinite(p)


def test_asa_and_service_level():
    asa = erlang_c_asa(7, 5.0 / 180.0, 180.0)
    assert asa == pytest.approx(_direct(7, 5.0) * 180 / 2, rel=1e-9)
    assert erlang_c_asa(3, 1.0, 5.0) == math.inf
    sl = service_level(7, 5.0 / 180.0, 180.0, 20.0)
    assert 0.7 < sl < 0.9
    assert service_level(2, 1.0, 10.0, 20.0) == 0.0


def test_position_ewt_grows_with_position_and_falls_with_staff():
    assert position_ewt(1, 5, 1, 100.0) == 0.0
    assert position_ewt(3, 0, 0, 100.0) == math.inf
    assert position_ewt(3, 2, 0, 100.0) > position_ewt(2, 2, 0, 100.0) > position_ewt(2, 4, 0, 100.0)
