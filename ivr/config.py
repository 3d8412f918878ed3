"""The server's own configuration file (``config/server.yaml``).

Validated once at start-up with pydantic, so a typo is reported as ``file:line:column`` before any socket opens.
Secrets never need to live in the file: any key can be overridden from the environment with
``CONTACT_SERVER__SECTION__KEY=value`` (double underscores between levels), and the well-known secrets have
short names (``CONTACT_SERVER_DATABASE_URL``, ``CONTACT_SERVER_ADMIN_TOKEN``, ``VOICEAUTH_KEY``).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ivr.errors import ConfigError, ConfigProblem
from ivr.yamlconf import SourceMap, load_yaml_file, validate

ENV_PREFIX = "CONTACT_SERVER__"
SHORT_ENV = {
    "CONTACT_SERVER_DATABASE_URL": ("database", "url"),
    "CONTACT_SERVER_ADMIN_TOKEN": ("web", "admin_token"),
    "CONTACT_SERVER_SESSION_SECRET": ("web", "session_secret"),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PeerConfig(_Strict):
    """A known SIP peer (trunk, SBC, PBX): trusted for P-Asserted-Identity, with its own DTMF mode."""

    name: str
    address: str = Field(description="IP address or CIDR network the peer sends from")
    trusted: bool = True
    dtmf_mode: Literal["rfc4733", "info", "inband", "auto"] = "auto"

    @field_validator("address")
    @classmethod
    def _network(cls, v: str) -> str:
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise ValueError(f"{v!r} is not an IP address or CIDR network (e.g. 192.0.2.10 or 192.0.2.0/24)")
        return v


class LimitsConfig(_Strict):
    max_message_size: int = Field(65535, ge=1024, le=1 << 20)
    max_concurrent_calls: int = Field(2000, ge=1)
    max_dialogs: int = Field(10_000, ge=1, description="calls held by the SIP core at once (inbound, agent legs "
                                                        "and transfers); a new INVITE beyond it gets 503")
    max_calls_per_second_per_source: float = Field(500.0, gt=0)
    max_calls_per_second_per_untrusted_source: float = Field(
        20.0, gt=0, description="new calls/s from an address that is not a trusted peer; trunks (peers with "
                                "trusted: true) get max_calls_per_second_per_source")
    messages_per_second_per_source: float = Field(200.0, gt=0)
    message_burst_per_source: float = Field(400.0, ge=1)
    block_seconds: float = Field(60.0, ge=0)
    max_auth_failures: int = Field(5, ge=1)


class SipConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(5060, ge=0, le=65535)
    advertised_host: str | None = None
    transports: list[Literal["udp", "tcp"]] = ["udp", "tcp"]
    realm: str = "contact-server"
    domains: list[str] = Field(default_factory=list, description="hosts accepted in the Request-URI besides "
                               "advertised_host/host; when set, requests for any other host are dropped")
    default_region: str = "IT"
    dtmf_mode: Literal["rfc4733", "info", "inband", "auto"] = "auto"
    peers: list[PeerConfig] = []
    limits: LimitsConfig = LimitsConfig()
    user_agent: str = "contact-server"

    @field_validator("default_region")
    @classmethod
    def _region(cls, v: str) -> str:
        if v.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{v!r} is not a region code phonenumbers knows: use two letters such as IT, GB, US")
        return v.upper()


class RtpConfig(_Strict):
    host: str = "127.0.0.1"
    advertised_host: str | None = None
    port_min: int = Field(20000, ge=1024, le=65534)
    port_max: int = Field(30000, ge=1025, le=65535)
    codecs: list[Literal["PCMU", "PCMA"]] = ["PCMU", "PCMA"]
    ptime: int = Field(20, ge=10, le=60)
    send_worker: Literal["auto", "on", "off"] = "auto"
    """RTP packets sent by a worker process (the event loop only copies them into shared memory): auto = with four
    CPUs or more, or two or three when the worker gets real-time priority."""
    send_worker_priority: Literal["realtime", "nice", "normal"] = "realtime"
    """Scheduling the worker asks for; realtime needs root or CAP_SYS_NICE and falls back to nice, then normal."""

    @model_validator(mode="after")
    def _range(self) -> "RtpConfig":
        if self.port_max - self.port_min < 2:
            raise ValueError("rtp.port_max must be at least port_min + 2 (each call leg needs an even port)")
        return self


class DatabaseConfig(_Strict):
    url: str = "sqlite:///var/contact-server.db"


class IvrSection(_Strict):
    dir: str = "config/ivr"
    prompts_cache: str = "var/prompts"
    queues: str = "config/queues.yaml"
    watch: bool = True


class VoiceConfig(_Strict):
    model: Literal["resemblyzer", "ecapa"] = "resemblyzer"
    model_dir: str | None = None
    key_file: str | None = None
    pool: Literal["process", "thread"] = Field(
        "process", description="where the model runs: worker processes (a slow model never delays RTP) or "
                               "threads inside the server process (debugging; competes with RTP for the GIL)")
    workers: int = Field(1, ge=1, le=16, description="worker processes (or threads), each loads its own model")
    max_queue: int = Field(32, ge=1, le=1024, description="requests waiting for a worker; one more is BUSY and "
                                                          "the IVR takes its fallback branch")
    max_batch: int = Field(8, ge=1, le=64, description="waiting requests a free worker embeds in one pass")
    required: bool = Field(True, description="refuse to start when the model cannot be loaded; false starts "
                                             "without voice verification (callers take the fallback branch)")
    decisions: Literal["process", "thread"] = Field(
        "process", description="where verification decisions run (store reads, decryption, replay/watchlist "
                               "scans, the attempt's record): a process of their own (with pool: process and a "
                               "database that is not in memory), or a thread of the server")
    cpus: list[int] | None = Field(None, description="CPUs reserved for the voice worker processes (pool: process); "
                                                      "the server runs on the others, so verifications never "
                                                      "take CPU time from RTP. Default: the scheduler decides")
    calibration_codec: Literal["ulaw", "alaw", "none"] = Field(
        "ulaw", description="which voiceauth/calibration/<model>_<codec>.json gives the decision threshold")
    calibration_seconds: float | None = Field(3.0, gt=0, description="speech length the threshold was calibrated on")
    max_failures_per_day: int = Field(5, ge=1, le=1000, description="REJECTs per customer per UTC day before "
                                                                     "LOCKED_OUT")
    refresh_weight: float = Field(0.0, ge=0.0, lt=1.0, description="weight of a strong ACCEPT's embedding in the "
                                                                   "voiceprint (0: never refresh)")
    refresh_margin: float = Field(0.1, ge=0.0, le=1.0, description="refresh only when score >= threshold + this")


class WebConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    admin_token: str | None = None
    session_secret: str | None = Field(
        None, min_length=16,
        description="HMAC key of the desktop's session cookies: set it (CONTACT_SERVER_SESSION_SECRET) so agents "
                    "stay logged in across restarts and every node of a scaled-out deployment accepts them")


_CRM_OPS = ("lookup_by_phone", "get_customer", "verify_pin", "create_ticket", "update_ticket", "close_ticket",
            "log_interaction", "open_tickets", "recent_contacts", "find_open_ticket", "call_record")


class RestCrmSection(_Strict):
    """An external CRM over HTTP; ``ops`` overrides URL templates as ``"METHOD /path/{placeholder}"``."""

    base_url: str
    ops: dict[str, str] = {}
    auth_header: str = "Authorization"
    auth_env: str | None = Field("CRM_API_TOKEN", description="environment variable holding the token")
    auth_prefix: str = "Bearer "
    timeout: float = Field(2.0, gt=0, le=60)
    retries: int = Field(2, ge=0, le=10)
    cache_ttl: float = Field(60.0, ge=0)
    breaker_failures: int = Field(5, ge=1)
    breaker_reset: float = Field(30.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"{v!r} is not an http(s) URL (e.g. https://crm.example.com/api)")
        return v.rstrip("/")

    @field_validator("ops")
    @classmethod
    def _ops(cls, v: dict[str, str]) -> dict[str, str]:
        for name, template in v.items():
            if name not in _CRM_OPS:
                raise ValueError(f"unknown CRM operation {name!r}; known: {', '.join(_CRM_OPS)}")
            method, _, path = template.partition(" ")
            if method.upper() not in ("GET", "POST", "PUT", "PATCH", "DELETE") or not path.startswith("/"):
                raise ValueError(f"{name}: {template!r} must read 'METHOD /path', e.g. 'GET /customers/{{customer_id}}'")
        return v


class CrmSection(_Strict):
    """Where customer records live: the built-in SQL tables, or an external CRM reached over REST (reads
    through a cache and circuit breaker, writes queued durably in the outbox)."""

    adapter: Literal["sql", "rest"] = "sql"
    rest: RestCrmSection | None = None

    @model_validator(mode="after")
    def _rest_needs_section(self) -> "CrmSection":
        if self.adapter == "rest" and self.rest is None:
            raise ValueError("crm.adapter is 'rest' but there is no crm.rest section: add crm.rest.base_url")
        return self


class OutboundRoute(_Strict):
    """Numbers starting with ``prefix`` (E.164, e.g. ``+39``) leave through ``trunk``."""

    prefix: str = Field("", pattern=r"^\+?\d*$")
    trunk: str

    @field_validator("trunk")
    @classmethod
    def _trunk(cls, v: str) -> str:
        return _check_trunk(v)


def _check_trunk(v: str) -> str:
    if not v.startswith(("sip:", "sips:")) or "@" not in v:
        raise ValueError(f"{v!r} is not a SIP URI template: write e.g. 'sip:{{number}}@203.0.113.5:5060'")
    if "{number}" not in v and "{digits}" not in v:
        raise ValueError(f"{v!r} has no {{number}} (E.164 with +) or {{digits}} (without +) placeholder")
    try:
        v.format(number="+390212345678", digits="390212345678")
    except (KeyError, IndexError, ValueError):
        raise ValueError(f"{v!r}: only {{number}} and {{digits}} may appear in braces") from None
    return v


class OutboundConfig(_Strict):
    """Calls the server places to customers (survey campaigns): through which trunk, with which caller id."""

    trunk: str | None = Field(None, description="SIP URI template, e.g. 'sip:{number}@203.0.113.5:5060'")
    routes: list[OutboundRoute] = Field(default_factory=list,
                                        description="per-prefix trunks; the longest matching prefix wins")
    caller_id: str = Field("survey", max_length=32, pattern=r"^[+A-Za-z0-9._-]+$",
                           description="user part of the From header (the number customers see)")
    campaigns: bool = Field(True, description="run the outbound campaigns of the database")
    poll_seconds: float = Field(5.0, gt=0, le=300,
                                description="how often campaigns, their state and opt-outs are re-read")

    @field_validator("trunk")
    @classmethod
    def _trunk(cls, v: str | None) -> str | None:
        return None if v is None else _check_trunk(v)


class LoggingConfig(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class ServerConfig(_Strict):
    sip: SipConfig = SipConfig()
    rtp: RtpConfig = RtpConfig()
    database: DatabaseConfig = DatabaseConfig()
    ivr: IvrSection = IvrSection()
    voice: VoiceConfig = VoiceConfig()
    web: WebConfig = WebConfig()
    crm: CrmSection = CrmSection()
    outbound: OutboundConfig = OutboundConfig()
    logging: LoggingConfig = LoggingConfig()

    base_dir: Path = Field(default=Path("."), exclude=True)

    def resolve(self, path: str) -> Path:
        """Relative paths in the file are relative to the directory above ``config/``, i.e. the install root."""
        p = Path(path)
        return p if p.is_absolute() else (self.base_dir / p)


def _parse_env_value(raw: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def apply_env_overrides(data: dict, environ: dict[str, str]) -> list[str]:
    """Overlay environment variables onto the parsed file; returns the dotted keys that were overridden."""
    applied = []
    items: list[tuple[tuple[str, ...], str]] = []
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX):
            path = tuple(part.lower() for part in name[len(ENV_PREFIX):].split("__") if part)
            if path:
                items.append((path, value))
        elif name in SHORT_ENV:
            items.append((SHORT_ENV[name], value))
    for path, value in items:
        node = data
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                break
        else:
            node[path[-1]] = value if path[-1] in ("url", "admin_token", "session_secret") else _parse_env_value(value)
            applied.append(".".join(path))
    return applied


def load_server_config(path: str | Path, environ: dict[str, str] | None = None) -> ServerConfig:
    """Load and validate server.yaml; raises ConfigError naming file, line and column."""
    p = Path(path)
    data, smap = load_yaml_file(p)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([smap.problem((), "the top level of server.yaml must be a mapping of sections "
                                             "(sip, rtp, database, ivr, voice, web, logging)")])
    apply_env_overrides(data, dict(os.environ if environ is None else environ))
    cfg = validate(ServerConfig, data, smap)
    root = p.resolve().parent
    cfg.base_dir = root.parent if root.name == "config" else root
    return cfg


def default_config() -> ServerConfig:
    return ServerConfig()


__all__ = ["ServerConfig", "load_server_config", "ConfigError", "ConfigProblem", "SourceMap", "default_config"]
