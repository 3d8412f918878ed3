"""server.yaml ``outbound``: trunk templates are checked at start-up and numbers pick the longest prefix."""

from __future__ import annotations

import pytest

from ivr.campaign.trunk import OutboundRouter, destination_of
from ivr.config import ConfigError, load_server_config


def _cfg(tmp_path, text: str):
    p = tmp_path / "server.yaml"
    p.write_text(text)
    return load_server_config(p, environ={})


def test_routes_pick_the_longest_prefix_and_ip_hosts_give_the_destination(tmp_path):
    cfg = _cfg(tmp_path, """
outbound:
  trunk: "sip:{number}@192.0.2.10:5062"
  routes:
    - {prefix: "+39", trunk: "sip:{digits}@198.51.100.7"}
    - {prefix: "+39347", trunk: "sip:{number}@carrier.example.com:5070;transport=udp"}
  caller_id: "+390212345600"
""")
    r = OutboundRouter(cfg.outbound)
    assert r.route("+4420794600") == ("sip:+4420794600@192.0.2.10:5062", ("192.0.2.10", 5062))
    assert r.route("+390212345678") == ("sip:390212345678@198.51.100.7", ("198.51.100.7", 5060))
    assert r.route("+393471000001") == ("sip:+393471000001@carrier.example.com:5070;transport=udp", None)
    assert destination_of("sip:1@[::1]:5080") == ("::1", 5080)


@pytest.mark.parametrize("trunk,message", [("http://x/{number}", "not a SIP URI"),
                                           ("sip:fixed@192.0.2.1", "no {number}"),
                                           ("sip:{number}{x}@192.0.2.1", "only {number} and {digits}")])
def test_bad_trunks_are_refused_with_file_and_line(tmp_path, trunk, message):
    with pytest.raises(ConfigError) as err:
        _cfg(tmp_path, f'outbound:\n  trunk: "{trunk}"\n')
    assert message in str(err.value) and "server.yaml:2" in str(err.value)


def test_no_trunk_means_not_configured(tmp_path):
    r = OutboundRouter(_cfg(tmp_path, "sip: {port: 5060}\n").outbound)
    assert not r.configured
    with pytest.raises(ConfigError, match="outbound.trunk"):
        r.route("+390212345678")
