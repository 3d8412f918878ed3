"""Where a customer's number is dialled: ``server.yaml``'s ``outbound`` trunk, or the route with the longest
matching prefix. The same shape as the queue's callbacks (``QueueService.callback_route``): a SIP URI and, for
an IP-literal host, the address the INVITE is sent to."""

from __future__ import annotations

import ipaddress

from ivr.config import OutboundConfig
from ivr.errors import ConfigError, ConfigProblem


class OutboundRouter:
    def __init__(self, cfg: OutboundConfig):
        self.cfg = cfg
        self._routes = sorted(((r.prefix, r.trunk) for r in cfg.routes), key=lambda r: -len(r[0]))

    @property
    def configured(self) -> bool:
        return bool(self.cfg.trunk or self._routes)

    def route(self, e164: str) -> tuple[str, tuple[str, int] | None]:
        """(request URI, destination address or None) for ``e164``."""
        template = next((t for p, t in self._routes if e164.startswith(p)), self.cfg.trunk)
        if template is None:
            raise ConfigError([ConfigProblem("server.yaml", 0, 0, f"no outbound trunk for {e164}: set "
                                             "outbound.trunk (e.g. 'sip:{number}@203.0.113.5:5060') or a route "
                                             "whose prefix matches")])
        uri = template.format(number=e164, digits=e164.lstrip("+"))
        return uri, destination_of(uri)


def destination_of(uri: str) -> tuple[str, int] | None:
    hostport = uri.split("@", 1)[1].split(";", 1)[0].split("?", 1)[0]
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = hostport.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return host, int(port) if port.isdigit() else 5060
