"""Admission control in front of the SIP parser: floods, scanners and password guessers are dropped early.

A server on the public SIP network sees scanners (sipvicious' "friendly-scanner" and kin) within minutes, and
floods of junk that cost parse time. Dropping them before parsing keeps the event loop for real callers. The
guard is sans-IO (time passed in) and bounded in memory: per-address state lives in an LRU map.

Policy, per source IP (trusted peers are never limited):
- a token bucket of ``rate`` messages per second with ``burst`` depth; a source that overruns it
  ``overruns_to_block`` times within one second is blocked for ``block_seconds``;
- a message whose User-Agent/From names a known scanner is dropped (no answer at all) and its source blocked;
- ``max_auth_failures`` more consecutive digest failures (the registrar's count) block the source again.
Blocked sources get nothing: silence is the least useful answer for a scanner.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Collection

SCANNER_SIGNATURES = (b"friendly-scanner", b"sipvicious", b"sipcli", b"sip-scan", b"sipsak scanner",
                      b"vaxsipuseragent", b"iwar", b"sundayddr", b"sipbomber", b"pplsip", b"voipbuster")


@dataclass(slots=True)
class GuardStats:
    admitted: int = 0
    rate_limited: int = 0
    blocked_drops: int = 0
    scanners: int = 0
    blocks: int = 0


@dataclass(slots=True)
class _Source:
    tokens: float
    stamp: float
    overruns: int = 0
    window: float = 0.0
    blocked_until: float = 0.0
    auth_seen: int = 0


@dataclass
class SourceGuard:
    rate: float = 200.0
    burst: float = 400.0
    block_seconds: float = 60.0
    overruns_to_block: int = 200
    max_auth_failures: int = 5
    trusted: Collection[str] = ()
    auth_failures: Callable[[str], int] | None = None
    max_sources: int = 100_000
    stats: GuardStats = field(default_factory=GuardStats)

    def __post_init__(self) -> None:
        self._nets = [ipaddress.ip_network(t, strict=False) for t in self.trusted]
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._trusted_cache: dict[str, bool] = {}

    def is_trusted(self, ip: str) -> bool:
        hit = self._trusted_cache.get(ip)
        if hit is None:
            try:
                addr = ipaddress.ip_address(ip)
                hit = any(addr in n for n in self._nets)
            except ValueError:
                hit = False
            if len(self._trusted_cache) > 10_000:
                self._trusted_cache.clear()
            self._trusted_cache[ip] = hit
        return hit

    def _source(self, ip: str, now: float) -> _Source:
        src = self._sources.get(ip)
        if src is None:
            src = self._sources[ip] = _Source(self.burst, now)
            if len(self._sources) > self.max_sources:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(ip)
        return src

    def block(self, ip: str, now: float, seconds: float | None = None) -> None:
        src = self._source(ip, now)
        src.blocked_until = now + (self.block_seconds if seconds is None else seconds)
        self.stats.blocks += 1

    def blocked(self, ip: str, now: float) -> bool:
        src = self._sources.get(ip)
        return src is not None and src.blocked_until > now

    def admit(self, ip: str, data: bytes, now: float) -> bool:
        """True when the message may go on to the parser."""
        if self.is_trusted(ip):
            self.stats.admitted += 1
            return True
        src = self._source(ip, now)
        if src.blocked_until > now:
            self.stats.blocked_drops += 1
            return False
        head = data[:2048].lower()
        if any(sig in head for sig in SCANNER_SIGNATURES):
            self.stats.scanners += 1
            self.block(ip, now)
            return False
        if self.auth_failures is not None:
            failures = self.auth_failures(ip)
            if failures < src.auth_seen:
                src.auth_seen = 0  # a success reset the registrar's count
            if failures - src.auth_seen >= self.max_auth_failures:
                src.auth_seen = failures
                self.block(ip, now)
                self.stats.blocked_drops += 1
                return False
        src.tokens = min(self.burst, src.tokens + (now - src.stamp) * self.rate)
        src.stamp = now
        if src.tokens < 1.0:
            if now - src.window >= 1.0:
                src.window, src.overruns = now, 0
            src.overruns += 1
            self.stats.rate_limited += 1
            if src.overruns >= self.overruns_to_block:
                src.overruns = 0
                self.block(ip, now)
            return False
        src.tokens -= 1.0
        self.stats.admitted += 1
        return True
