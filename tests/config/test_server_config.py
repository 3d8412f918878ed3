"""server.yaml: the shipped file loads, mistakes are reported with file, line and what to change, and the
environment overrides secrets."""

from __future__ import annotations

import pytest

from ivr.app import rest_crm_config
from ivr.config import ConfigError, load_server_config
from tests.conftest import REPO


def _write(tmp_path, text: str):
    p = tmp_path / "server.yaml"
    p.write_text(text)
    return p


def test_shipped_server_yaml_loads_with_the_builtin_crm():
    cfg = load_server_config(REPO / "config" / "server.yaml", environ={})
    assert cfg.crm.adapter == "sql" and rest_crm_config(cfg) is None
    assert cfg.web.session_secret is None


def test_rest_crm_section_becomes_the_adapter_configuration(tmp_path):
    p = _write(tmp_path, "crm:\n  adapter: rest\n  rest:\n    base_url: https://crm.example.com/api/\n"
                         "    timeout: 1.5\n    ops:\n      get_customer: GET /v2/clients/{customer_id}\n")
    rc = rest_crm_config(load_server_config(p, environ={}))
    assert rc.base_url == "https://crm.example.com/api" and rc.timeout == 1.5
    assert rc.op("get_customer").method == "GET" and rc.op("get_customer").path == "/v2/clients/{customer_id}"
    assert rc.op("create_ticket").path == "/tickets"          # defaults for what is not overridden


@pytest.mark.parametrize("text, line, words", [
    ("crm:\n  adapter: rest\n", 2, "no crm.rest section"),
    ("crm:\n  adapter: rest\n  rest:\n    base_url: crm.example.com\n", 4, "not an http(s) URL"),
    ("crm:\n  adapter: rest\n  rest:\n    base_url: http://x\n    ops:\n      fetch_all: GET /all\n", 6,
     "unknown CRM operation 'fetch_all'"),
    ("crm:\n  adapter: rest\n  rest:\n    base_url: http://x\n    ops:\n      get_customer: /c/{customer_id}\n",
     6, "must read 'METHOD /path'"),
    ("crm:\n  adapter: salesforce\n", 2, "sql"),
    ("web:\n  session_secret: short\n", 2, "16"),
])
def test_crm_and_web_mistakes_name_file_line_and_fix(tmp_path, text, line, words):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_server_config(p, environ={})
    message = str(exc.value)
    assert f"server.yaml:{line}" in message and words in message, message


def test_session_secret_and_crm_url_from_the_environment(tmp_path):
    p = _write(tmp_path, "web:\n  port: 8081\n")
    cfg = load_server_config(p, environ={"CONTACT_SERVER_SESSION_SECRET": "0123456789abcdef-xyz",
                                         "CONTACT_SERVER__CRM__ADAPTER": "rest",
                                         "CONTACT_SERVER__CRM__REST__BASE_URL": "http://127.0.0.1:9"})
    assert cfg.web.session_secret == "0123456789abcdef-xyz" and cfg.web.port == 8081
    assert rest_crm_config(cfg).base_url == "http://127.0.0.1:9"
