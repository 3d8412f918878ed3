"""Agents as the telephony side knows them: their phones (credentials, where offers ring), their state as the
desktop drives it, the wallboard figures, and feature codes dialed from the agent's own phone.

Phone passwords are never stored: ``config/agent_phones.yaml`` holds HA1 = H(user:realm:password) per
algorithm, which is all digest authentication needs, and a leaked file does not give the password for another
realm. Every state change goes through the routing engine (``EngineDriver.drive``) so that the engine's actions
(a call offered to an agent who just became available) are carried out at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol

import yaml

from ivr.calls import Call, CallApplication
from ivr.errors import IvrError
from ivr.sip.digest import ha1
from routing.engine import RoutingEngine
from routing.errors import RoutingError
from routing.events import RoutingEvent
from routing.model import AgentState

log = logging.getLogger(__name__)

ALGORITHMS = ("MD5", "SHA-256")


class AgentPhoneError(IvrError):
    """An agent phone cannot be used (unknown extension, not registered, bad credentials file)."""


# ------------------------------------------------------------------------------------------- credentials


@dataclass(frozen=True, slots=True)
class PhoneCredential:
    extension: str
    realm: str
    ha1: Mapping[str, str]          # algorithm -> hex HA1


class PhoneCredentials:
    """The registrar's user store: HA1 per extension and algorithm (``ivr.sip.registrar.UserStore``)."""

    def __init__(self, realm: str, credentials: Iterable[PhoneCredential] = ()):
        self.realm = realm
        self._by_ext: dict[str, PhoneCredential] = {}
        for c in credentials:
            self.add(c)

    def add(self, cred: PhoneCredential) -> None:
        if cred.realm != self.realm:
            raise AgentPhoneError(f"phone {cred.extension}: its HA1 was made for realm {cred.realm!r} but the "
                                  f"server's realm is {self.realm!r}; regenerate it with "
                                  f"`python -m ivr.agents ha1 {cred.extension} {self.realm}`")
        self._by_ext[cred.extension] = cred

    def set_password(self, extension: str, password: str) -> PhoneCredential:
        """Hash a password given once (admin tool, tests); only the HA1 is kept."""
        cred = make_credential(extension, self.realm, password)
        self.add(cred)
        return cred

    def ha1(self, username: str, realm: str, algorithm: str) -> str | None:
        cred = self._by_ext.get(username)
        if cred is None or realm != self.realm:
            return None
        return cred.ha1.get(algorithm.upper())

    def __contains__(self, extension: str) -> bool:
        return extension in self._by_ext

    def extensions(self) -> list[str]:
        return sorted(self._by_ext)

    @classmethod
    def load(cls, path: str | Path, realm: str) -> "PhoneCredentials":
        """Read ``agent_phones.yaml``: ``{realm: R, phones: {"2001": {md5: HEX, sha256: HEX}}}``."""
        p = Path(path)
        store = cls(realm)
        if not p.exists():
            log.warning("no %s: agent phones cannot REGISTER (agents with a static SIP URI still work)", p)
            return store
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise AgentPhoneError(f"{p}: not valid YAML ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("phones", {}), dict):
            raise AgentPhoneError(f"{p}: expected 'realm:' and 'phones:' mapping extension -> {{md5, sha256}}")
        file_realm = str(data.get("realm", realm))
        for ext, entry in (data.get("phones") or {}).items():
            if not isinstance(entry, dict):
                raise AgentPhoneError(f"{p}: phone {ext!r} needs md5 and/or sha256 HA1 values")
            hashes = {}
            for key, alg in (("md5", "MD5"), ("sha256", "SHA-256")):
                value = entry.get(key)
                if value is not None:
                    if not re.fullmatch(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{64}", str(value)):
                        raise AgentPhoneError(f"{p}: phone {ext!r} {key} is not a hex HA1")
                    hashes[alg] = str(value).lower()
            if not hashes:
                raise AgentPhoneError(f"{p}: phone {ext!r} has neither md5 nor sha256")
            store.add(PhoneCredential(str(ext), file_realm, hashes))
        return store


def make_credential(extension: str, realm: str, password: str) -> PhoneCredential:
    if not password or len(password) < 8:
        raise AgentPhoneError("a phone password needs at least 8 characters")
    return PhoneCredential(extension, realm, {alg: ha1(extension, realm, password, alg) for alg in ALGORITHMS})


# ----------------------------------------------------------------------------------------- where to ring


class BindingLookup(Protocol):
    def lookup(self, user: str, now: float) -> list: ...


@dataclass(frozen=True, slots=True)
class PhoneRoute:
    uri: str
    destination: tuple[str, int] | None = None


class PhoneDirectory:
    """Turns the engine's phone target (``ext:2001`` or a SIP URI) into where the INVITE goes."""

    def __init__(self, registrar: BindingLookup | None, clock: Callable[[], float]):
        self.registrar = registrar
        self.clock = clock

    def route(self, target: str) -> PhoneRoute:
        if target.startswith("ext:"):
            ext = target[4:]
            bindings = self.registrar.lookup(ext, self.clock()) if self.registrar is not None else []
            if not bindings:
                raise AgentPhoneError(f"extension {ext} is not registered: the agent's phone must REGISTER first")
            b = bindings[0]
            return PhoneRoute(str(b.contact), tuple(b.target))
        return PhoneRoute(target)

    def owner_of(self, call: Call, agents: Iterable[Any]) -> str | None:
        """The agent whose phone placed ``call``: a registered extension calling from its binding's address,
        or a static URI calling from its host and port. None for anyone else (no feature codes for them)."""
        from ivr.sip.message import SipUri

        user = call.identity.ani_raw or ""
        for a in agents:
            phone = a.profile.phone
            if phone.extension is not None:
                if user != phone.extension or self.registrar is None:
                    continue
                for b in self.registrar.lookup(phone.extension, self.clock()):
                    if tuple(b.source) == tuple(call.source):
                        return a.id
            else:
                try:
                    uri = SipUri.parse(phone.uri)
                except Exception:
                    continue
                if uri.host == call.source[0] and (uri.port or 5060) == call.source[1]:
                    return a.id
        return None


# ------------------------------------------------------------------------------------ desktop and wallboard


class EngineDriver(Protocol):
    """Runs an engine call at the current time and carries out the actions it returns (QueueService)."""

    engine: RoutingEngine

    def drive(self, fn: Callable[[float], list[RoutingEvent]]) -> list[RoutingEvent]: ...

    def now(self) -> float: ...


@dataclass(frozen=True, slots=True)
class AgentStatus:
    agent_id: str
    name: str
    state: str
    reason: str | None
    call_id: str | None
    since: float
    pending_pause: str | None
    calls_handled: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def agent_status(engine: RoutingEngine, agent_id: str) -> AgentStatus:
    a = engine.agent(agent_id)
    return AgentStatus(a.id, a.profile.name, a.state.value, a.reason, a.call_id, a.state_since, a.pending_pause,
                       a.calls_handled)


class EngineAgentControl:
    """``AgentControl`` for the desktop (and feature codes): every method returns the agent's new status and
    raises ``routing.errors.RoutingError`` (a message saying what to do) when the move is not allowed."""

    def __init__(self, driver: EngineDriver, recorder: Any | None = None):
        self.driver = driver
        self.recorder = recorder

    @property
    def engine(self) -> RoutingEngine:
        return self.driver.engine

    @property
    def transfers(self) -> Any | None:
        """The queue service's transfer commands (``transfer``, ``consult``, ``consult_complete``,
        ``consult_cancel``, ``transfer_targets``), for the desktop; None when the driver has none."""
        return self.driver if hasattr(self.driver, "start_transfer") else None

    @property
    def voicemail(self) -> Any | None:
        """The voicemail box (``ivr.voicemail.VoicemailBox``) for the supervisors' page, if any."""
        return getattr(self.driver, "voicemail", None)

    async def login(self, agent_id: str, available: bool = False, reason: str = "login") -> AgentStatus:
        self.driver.drive(lambda now: self.engine.agent_login(agent_id, now=now, available=available,
                                                               pause_reason=reason))
        return self.state(agent_id)

    async def set_available(self, agent_id: str) -> AgentStatus:
        if self.engine.agent(agent_id).state is AgentState.OFFLINE:
            return await self.login(agent_id, available=True)
        self.driver.drive(lambda now: self.engine.agent_available(agent_id, now=now))
        return self.state(agent_id)

    async def pause(self, agent_id: str, reason: str = "break") -> AgentStatus:
        if self.engine.agent(agent_id).state is AgentState.OFFLINE:
            return await self.login(agent_id, available=False, reason=reason)
        self.driver.drive(lambda now: self.engine.agent_pause(agent_id, reason, now=now))
        return self.state(agent_id)

    async def logout(self, agent_id: str) -> AgentStatus:
        self.driver.drive(lambda now: self.engine.agent_logout(agent_id, now=now))
        return self.state(agent_id)

    async def wrap_up_done(self, agent_id: str, disposition: str | None = None, notes: str | None = None,
                           call_id: str | None = None) -> AgentStatus:
        """End wrap-up early; with a disposition the call's ticket is closed with it."""
        agent = self.engine.agent(agent_id)
        call_id = call_id or agent.call_id
        if disposition and call_id and self.recorder is not None:
            try:
                await self.recorder.wrapped_up(call_id, disposition, notes)
            except Exception:
                log.exception("wrap-up of call %s not recorded", call_id)
        if agent.state is AgentState.WRAP_UP:
            if agent.pending_pause:
                reason = agent.pending_pause
                self.driver.drive(lambda now: self.engine.agent_pause(agent_id, reason, now=now))
            else:
                self.driver.drive(lambda now: self.engine.agent_available(agent_id, now=now))
        return self.state(agent_id)

    def state(self, agent_id: str) -> AgentStatus:
        return agent_status(self.engine, agent_id)

    def agents(self) -> list[AgentStatus]:
        return [agent_status(self.engine, a.id) for a in self.engine.agents()]


class EngineWallboard:
    """``WallboardSource``: queue figures and agent states, as plain dicts ready for JSON."""

    def __init__(self, driver: EngineDriver):
        self.driver = driver

    def queues(self) -> list[dict[str, Any]]:
        now = self.driver.now()
        out = []
        for q in self.driver.engine.config.queues:
            snap = asdict(self.driver.engine.queue_snapshot(q, now=now))
            if snap["ewt_seconds"] == float("inf"):
                snap["ewt_seconds"] = None              # nobody staffed: JSON has no infinity
            out.append(snap)
        return out

    def agents(self) -> list[dict[str, Any]]:
        return [agent_status(self.driver.engine, a.id).as_dict() for a in self.driver.engine.agents()]

    def snapshot(self) -> dict[str, Any]:
        return {"at": self.driver.now(), "queues": self.queues(), "agents": self.agents()}


# ------------------------------------------------------------------------------------------- feature codes

FEATURE_CODES = {"*50": "available", "*51": "pause", "*52": "logout", "*53": "wrap_up_done"}
_CONFIRM = {"available": "Disponibile.", "pause": "In pausa.", "logout": "Disconnesso.",
            "wrap_up_done": "Fine lavorazione. Disponibile."}
_REFUSED = "Operazione non consentita."


class FeatureCodeApplication:
    """Wraps the IVR: a call from an agent's own phone to ``*50`` (available), ``*51`` (pause), ``*52``
    (logout) or ``*53`` (end wrap-up) changes the agent's state and hears a one-word confirmation; every other
    call goes to the wrapped application unchanged."""

    def __init__(self, inner: CallApplication, control: EngineAgentControl, phones: PhoneDirectory,
                 prompts: Any | None = None, language: str = "it"):
        self.inner = inner
        self.control = control
        self.phones = phones
        self.prompts = prompts
        self.language = language

    async def run(self, call: Call) -> None:
        code = (call.dnis or "").strip()
        if code not in FEATURE_CODES:
            await self.inner.run(call)
            return
        agent_id = self.phones.owner_of(call, self.control.engine.agents())
        if agent_id is None:
            log.warning("feature code %s from %s:%s refused: not an agent phone", code, *call.source)
            call.reject(403, "Feature codes are for agent phones")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(call.leg.wait_ended(), 5.0)   # so the call layer sends nothing more
            return
        what = FEATURE_CODES[code]
        text = _CONFIRM[what]
        try:
            if what == "available":
                await self.control.set_available(agent_id)
            elif what == "pause":
                await self.control.pause(agent_id, "phone")
            elif what == "logout":
                await self.control.logout(agent_id)
            else:
                await self.control.wrap_up_done(agent_id)
            log.info("agent %s: feature code %s (%s)", agent_id, code, what)
        except RoutingError as exc:
            log.info("agent %s: feature code %s refused: %s", agent_id, code, exc)
            text = _REFUSED
        await call.answer()
        if self.prompts is not None:
            from ivr.flow.actions import PromptRef

            try:
                pcm = await self.prompts.render_async(PromptRef(text, None, self.language))
                await call.play(pcm)
            except Exception as exc:
                if type(exc).__name__ == "CallerHungUp":
                    return
                log.warning("feature code confirmation not played: %s", exc)
        await asyncio.sleep(0.2)
        call.hangup()


def main(argv: list[str] | None = None) -> int:
    """``python -m ivr.agents ha1 EXTENSION REALM``: reads the password from stdin, prints the YAML entry."""
    import getpass
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "ha1":
        print("usage: python -m ivr.agents ha1 EXTENSION REALM   (password read from the terminal)",
              file=sys.stderr)
        return 2
    _, ext, realm = args
    password = getpass.getpass(f"password for {ext}: ") if sys.stdin.isatty() else sys.stdin.readline().strip()
    cred = make_credential(ext, realm, password)
    print(f'  "{ext}": {{md5: {cred.ha1["MD5"]}, sha256: {cred.ha1["SHA-256"]}}}')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
