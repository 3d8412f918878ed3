"""``contact-server serve``: wires the packages into one asyncio process.

This is the only place that knows every package. Start order follows dependencies (database, CRM, voice,
routing, IVR configuration, media, SIP, web) and stop order is the reverse, with a graceful drain of calls in
between: new calls get 503 while calls in progress finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivr.calls import CallLimits, CallManager
from ivr.config import ServerConfig, load_server_config
from ivr.errors import ConfigError, IvrError
from ivr.logs import setup_logging

log = logging.getLogger("contact_server")

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_PROMPTS = REPO_ROOT / "audio_fixtures" / "prompts"


def database_url(cfg: ServerConfig) -> str:
    """SQLite paths in the file are relative to the install root; make the folder so a fresh checkout works."""
    url = cfg.database.url
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        path = cfg.resolve(url[len(prefix):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return url


def voice_keyring(cfg: ServerConfig):
    """The voiceprint key: VOICEAUTH_KEY / VOICEAUTH_KEY_FILE, else the configured key file (created once,
    mode 0600, on the demo's first start so the embedded default works out of the box)."""
    from voiceauth.crypto import KeyRing, generate_key

    if os.environ.get("VOICEAUTH_KEY") or os.environ.get("VOICEAUTH_KEY_FILE"):
        return KeyRing.from_env()
    if not cfg.voice.key_file:
        return KeyRing.from_env()  # raises with the message that says what to set
    path = cfg.resolve(cfg.voice.key_file)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(generate_key() + "\n")
        log.warning("created a new voiceprint encryption key in %s: back it up, voiceprints cannot be read "
                    "without it", path)
    return KeyRing.from_file(path)


def rest_crm_config(cfg: ServerConfig):
    """server.yaml's ``crm.rest`` as the adapter's configuration, or None for the built-in SQL CRM."""
    from crm_bridge.rest import RestCrmConfig, RestOp

    if cfg.crm.adapter != "rest" or cfg.crm.rest is None:
        return None
    r = cfg.crm.rest
    ops = {name: RestOp(t.partition(" ")[0].upper(), t.partition(" ")[2].strip()) for name, t in r.ops.items()}
    return RestCrmConfig(base_url=r.base_url, ops=ops, auth_header=r.auth_header, auth_env=r.auth_env,
                         auth_prefix=r.auth_prefix, timeout=r.timeout, retries=r.retries, cache_ttl=r.cache_ttl,
                         breaker_failures=r.breaker_failures, breaker_reset=r.breaker_reset)


def known_queue_names(queues_path: Path) -> tuple[set[str] | None, set[str] | None]:
    from routing.config import load_routing_config

    rc = load_routing_config(queues_path)
    return set(rc.queues), set(rc.skills)


@dataclass
class Server:
    """Everything ``serve`` started, so tests and the shutdown path can reach it."""

    cfg: ServerConfig
    sip: Any = None
    manager: CallManager | None = None
    media: Any = None
    db: Any = None
    web_runner: Any = None
    holder: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)

    def request_stop(self) -> None:
        self._stopped.set()

    async def close(self, grace: float = 10.0) -> None:
        """Stop in reverse start order: new calls get 503, calls in progress get ``grace`` seconds."""
        task = self.extras.get("metrics_task")
        if task is not None:
            task.cancel()
        if self.extras.get("campaign_service") is not None:
            await self.extras["campaign_service"].stop(grace=grace)
        await self.manager.shutdown(grace=grace)
        queue_service = self.extras.get("queue_service")
        if queue_service is not None:
            await queue_service.stop()
        await self.sip.stop()
        await self.media.close()
        if self.web_runner is not None:
            await self.web_runner.cleanup()
        voice = self.extras.get("voice")
        if voice is not None:
            await voice.close()
        # call-ended records are written by tasks the manager started: let them land before closing the DB
        await asyncio.sleep(0.2)
        stack = self.extras.get("crm_stack")
        if stack is not None:
            await stack.close()
        self.db.close()


async def build_server(cfg: ServerConfig, *, seed_demo: bool = False, clock=time.time) -> Server:
    from crm_bridge import metrics
    from crm_bridge.db import Database
    from crm_bridge.migrate import upgrade_database
    from crm_bridge.wiring import build_crm_stack
    from ivr.flow.holder import ConfigHolder
    from ivr.flow.validate import load_ivr_config
    from ivr.flow_runner import FlowCallApplication
    from ivr.media.dtmf import DtmfMode
    from ivr.media.engine import MediaEngine
    from ivr.prompts import PromptPcmSource, PromptRenderer
    from ivr.services import ContactCentreServices
    from ivr.sip.guard import SourceGuard
    from ivr.sip.transport import SipServer
    from ivr.sip.useragent import SipUserAgent, UaConfig
    from ivr.transfer import SipTransferrer

    server = Server(cfg)
    loop = asyncio.get_running_loop()

    url = database_url(cfg)
    await loop.run_in_executor(None, upgrade_database, url)
    db = Database.from_url(url)
    server.db = db
    if seed_demo:
        from crm_bridge.seed import seed_demo as seed

        result = await db.run(lambda s: seed(s))
        log.info("demo data loaded: %s", result)
    stack = build_crm_stack(db, rest_crm_config(cfg))
    server.extras["crm_stack"] = stack
    recorder, crm = stack.recorder, stack.crm
    closed = await recorder.close_stale_calls()
    if closed:
        log.warning("closed %d call records left active by the previous run", closed)
    await recorder.close_stale_agent_states()

    queues_path = cfg.resolve(cfg.ivr.queues)
    queues, skills = known_queue_names(queues_path)
    ivr_dir = cfg.resolve(cfg.ivr.dir)
    ivr_config = load_ivr_config(ivr_dir, queues, skills)
    holder = ConfigHolder(ivr_config, known_queues=lambda: known_queue_names(queues_path)[0],
                          known_skills=lambda: known_queue_names(queues_path)[1])
    server.holder = holder
    renderer = PromptRenderer(cfg.resolve(cfg.ivr.prompts_cache), bundled_dirs=[BUNDLED_PROMPTS])
    prompts = PromptPcmSource(renderer)

    voice = await _build_voice(cfg, url)
    server.extras["voice"] = voice
    server.extras["recorder"] = recorder
    server.extras["crm"] = crm

    services = ContactCentreServices(crm=crm, recorder=recorder, voice=voice)
    app = FlowCallApplication(holder, prompts, services, clock=clock)

    rtp_host = cfg.rtp.advertised_host or cfg.rtp.host
    media = MediaEngine(cfg.rtp.host, cfg.rtp.port_min, cfg.rtp.port_max, dtmf_mode=DtmfMode(cfg.sip.dtmf_mode),
                        send_offload=use_send_worker(cfg.rtp.send_worker), send_priority=cfg.rtp.send_worker_priority,
                        send_needs_realtime=send_worker_needs_realtime(cfg.rtp.send_worker))
    server.media = media
    await media.start()
    domains = tuple(cfg.sip.domains) + ((cfg.sip.host,) if cfg.sip.domains else ())
    ua = SipUserAgent(UaConfig(host=cfg.sip.advertised_host or cfg.sip.host, port=cfg.sip.port,
                               user_agent=cfg.sip.user_agent, max_message_size=cfg.sip.limits.max_message_size,
                               max_dialogs=cfg.sip.limits.max_dialogs, domains=domains))
    holder_ref: dict[str, CallManager] = {}

    async def on_event(ev):
        holder_ref["m"].handle_event(ev)

    peers = {p.address: p for p in cfg.sip.peers}
    lim = cfg.sip.limits

    def auth_failures(ip: str) -> int:
        registrar = server.extras.get("registrar")
        return registrar.failures(ip) if registrar is not None else 0

    guard = SourceGuard(rate=lim.messages_per_second_per_source, burst=lim.message_burst_per_source,
                        block_seconds=lim.block_seconds, max_auth_failures=lim.max_auth_failures,
                        trusted=[p.address for p in cfg.sip.peers if p.trusted], auth_failures=auth_failures)
    server.extras["guard"] = guard
    sip = SipServer(ua, cfg.sip.host, cfg.sip.port, on_event=on_event, udp="udp" in cfg.sip.transports,
                    tcp="tcp" in cfg.sip.transports, guard=guard)

    def dtmf_mode_for(source_ip: str):
        import ipaddress

        for p in cfg.sip.peers:
            if ipaddress.ip_address(source_ip) in ipaddress.ip_network(p.address, strict=False):
                return DtmfMode(p.dtmf_mode)
        return None

    def call_ended(call) -> None:
        loop.create_task(services.call_ended(call))
        metrics.CALLS.labels(outcome=_call_outcome(call)).inc()

    async def voice_result(call, result) -> None:
        metrics.VERIFICATIONS.labels(decision=result.decision).inc()

    services.on_voice_result = voice_result

    manager = CallManager(sip, media, app, local_ip=rtp_host,
                          trusted_peers=[p.address for p in peers.values() if p.trusted],
                          default_region=cfg.sip.default_region, codecs=tuple(cfg.rtp.codecs), ptime=cfg.rtp.ptime,
                          dtmf_mode_for=dtmf_mode_for,
                          limits=CallLimits(cfg.sip.limits.max_concurrent_calls,
                                            cfg.sip.limits.max_calls_per_second_per_source,
                                            cfg.sip.limits.max_calls_per_second_per_untrusted_source),
                          on_call_ended=call_ended)
    holder_ref["m"] = manager
    from ivr.campaign.trunk import OutboundRouter

    trunks = OutboundRouter(cfg.outbound)
    services.transferrer = SipTransferrer(manager, from_host=cfg.sip.advertised_host or cfg.sip.host, prompts=prompts,
                                          tel_route=trunks.route if trunks.configured else None)
    metrics.ACTIVE_CALLS.set_function(lambda: len(manager.calls))
    server.extras["metrics_task"] = loop.create_task(_sync_counters(ua, media))
    server.manager = manager
    server.sip = sip
    await sip.start()
    await _attach_routing(server, services, queues_path, prompts, clock=clock)
    await _start_web(server, crm, recorder, voice)
    from ivr.campaign.wiring import attach_campaigns
    await attach_campaigns(server, prompts, clock=clock)
    return server


def _call_outcome(call) -> str:
    """The ``contact_calls_total`` label: a small fixed set, as the metrics module asks."""
    if call.agent_leg is not None:
        return "answered"
    trace = call.variables.get("ivr_trace")
    exit_ = getattr(getattr(trace, "exit", None), "value", getattr(trace, "exit", None))
    if exit_ == "queued":
        return "abandoned"
    if exit_ == "transferred":
        return "transferred"
    if exit_ == "abandoned":
        return "ivr_abandoned"
    if call.leg.answered_at is None:
        return "rejected"
    return "self_service"


async def _sync_counters(ua, media, interval: float = 5.0) -> None:
    """Carry the SIP and RTP cores' own counters into Prometheus every few seconds, so that the hot paths keep
    plain integer increments and never call into prometheus_client."""
    from crm_bridge import metrics

    sip_seen = 0
    rtp_seen: dict[int, int] = {}
    worker_seen: dict[str, int] = {}
    while True:
        sip_now = ua.stats.malformed
        if sip_now > sip_seen:
            metrics.SIP_MALFORMED.inc(sip_now - sip_seen)
        sip_seen = sip_now
        current: dict[int, int] = {}
        for session in media.sessions:
            n = session.stats.malformed
            current[id(session)] = n
            delta = n - rtp_seen.get(id(session), 0)
            if delta > 0:
                metrics.RTP_ERRORS.labels(kind="malformed").inc(delta)
        rtp_seen = current
        metrics.RTP_SEND_WORKER_UP.set(1 if media.offload_on else 0)
        worker = media.offload.counters() if media.offload is not None else {}
        worker["send_worker_full"] = media.offload_overflows
        for kind, key in (("send_failed", "errors"), ("send_dropped", "dropped"),
                          ("send_worker_full", "send_worker_full")):
            n = worker.get(key, 0)
            if n > worker_seen.get(key, 0):
                metrics.RTP_ERRORS.labels(kind=kind).inc(n - worker_seen.get(key, 0))
            worker_seen[key] = n
        await asyncio.sleep(interval)


async def _start_web(server: Server, crm, recorder, voice) -> None:
    """Agent desktop, supervisor pages, admin API and /metrics on the same loop; the screen-pop hub is the
    one the queue service notifies when an agent's phone rings."""
    from aiohttp import web

    from crm_bridge.web.app import create_web_app
    from crm_bridge.web.deps import WebDeps
    from ivr.campaign.wiring import surveys_dir
    from crm_bridge.web.pop import ScreenPopHub

    cfg = server.cfg
    hub = ScreenPopHub(crm, db=server.db, on_verification_view=_verification_view_auditor(voice))
    queue_service = server.extras.get("queue_service")
    if queue_service is not None:
        queue_service.hub = hub

    async def reload_config() -> tuple[bool, list[str]]:
        ok, problems = await asyncio.get_running_loop().run_in_executor(None, _reload, server)
        return ok, [str(p) for p in problems]

    deps = WebDeps(db=server.db, crm=crm, agents=server.extras.get("agent_control"),
                   wallboard=server.extras.get("wallboard"), voice=voice, reload_config=reload_config,
                   recorder=recorder, hub=hub, admin_token=cfg.web.admin_token, agent_key="extension",
                   surveys_dir=surveys_dir(cfg),
                   **({"session_secret": cfg.web.session_secret.encode()} if cfg.web.session_secret else {}))
    runner = web.AppRunner(create_web_app(deps), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, cfg.web.host, cfg.web.port)
    await site.start()
    server.web_runner = runner
    server.extras["hub"] = hub
    sockets = [s.getsockname() for s in (site._server.sockets if site._server else [])]
    server.extras["web_port"] = sockets[0][1] if sockets else cfg.web.port


def _verification_view_auditor(voice):
    """An agent shown a pop with a voice verification outcome is a view of biometric results: audited in
    voiceauth's log (actor ``agent:<id>``), off the event loop."""
    if voice is None:
        return None

    async def audit(agent_id: str, pop) -> None:
        customer = pop.get("customer") or {}
        cid = customer.get("id")
        decision = (pop.get("verification") or {}).get("decision")
        await asyncio.get_running_loop().run_in_executor(None, lambda: voice.store.audit(
            f"agent:{agent_id}", "verification_viewed", None if cid is None else str(cid), time.time(),
            call_id=pop.get("call_id"), decision=decision))
    return audit


async def _attach_routing(server: Server, services, queues_path: Path, prompts, *, clock=time.time) -> None:
    """Queues, agents and their phones: the IVR's Queue action hands calls to ivr.queueing; the post-call
    survey (queues.yaml ``survey``) runs when an agent hangs up first."""
    from ivr.queueing import attach_routing
    from ivr.survey.postcall import attach_post_call_survey

    queue_service = await attach_routing(server, services, queues_path, prompts)
    attach_post_call_survey(server, queue_service, prompts, clock=clock)


async def _build_voice(cfg: ServerConfig, url: str):
    """The voice service. A model or key that cannot be loaded stops the start-up with the worker's own
    message, unless ``voice.required`` is false: then it is None (error logged) and callers take the IVR's
    fallback branch instead of the server refusing every call."""
    pool = None
    try:
        from voiceauth.decider import ProcessDecider, can_run_apart
        from voiceauth.pool import create_pool
        from voiceauth.service import VoiceAuthService
        from voiceauth.store import SqlVoiceprintStore
        from voiceauth.verification import VerifierPolicy

        v = cfg.voice
        keyring = voice_keyring(cfg)
        kwargs = {"model_dir": v.model_dir} if v.model == "ecapa" else {}
        extra = {"cpus": tuple(v.cpus)} if v.cpus and v.pool == "process" else {}
        pool = create_pool(v.model, kwargs, mode=v.pool, workers=v.workers, max_queue=v.max_queue,
                           max_batch=v.max_batch, **extra)
        await pool.start()
        if extra:
            _leave_cpus_to_voice(extra["cpus"])
        store = SqlVoiceprintStore(url, keyring)
        policy = VerifierPolicy.from_calibration(v.model, v.calibration_codec, v.calibration_seconds,
                                                 max_failures_per_day=v.max_failures_per_day,
                                                 refresh_weight=v.refresh_weight, refresh_margin=v.refresh_margin)
        decider = None
        if v.decisions == "process" and v.pool == "process" and can_run_apart(url):
            decider = ProcessDecider(url, keyring, pool.model_name, policy, cpus=extra.get("cpus"))
            await decider.start()
        return VoiceAuthService(pool, store, policy, db_cpus=extra.get("cpus"), decider=decider)
    except Exception as exc:
        if pool is not None:
            await pool.close()
        if cfg.voice.required:
            raise IvrError(f"voice verification could not start: {exc}. Fix voice.model / voice.model_dir / "
                           "the key, or set voice.required: false to run without it") from exc
        log.error("voice verification is OFF: %s", exc)
        return None


def _leave_cpus_to_voice(cpus: tuple[int, ...]) -> None:
    """With ``voice.cpus`` the embedding workers have those CPUs and the server (event loop, RTP) the others, so
    a burst of verifications never takes CPU time from the media."""
    if not hasattr(os, "sched_setaffinity"):
        return
    rest = os.sched_getaffinity(0) - set(cpus)
    if not rest:
        log.warning("voice.cpus %s covers every CPU of the server: it shares them with the voice workers", cpus)
        return
    os.sched_setaffinity(0, rest)
    log.info("voice workers on CPUs %s, the server on %s", list(cpus), sorted(rest))


# Python hands the GIL to a waiting thread only after this long. The event loop gives it up at every poll and
# must take it back to send RTP; with the default 5 ms, every worker thread doing Python (store queries,
# voiceprint decisions, CRM adapters) can hold each loop iteration that long, and RTP sends for hundreds of
# calls pile up tens of ms late (bench/voice_under_load.py measured p99 ~45 ms vs ~6 ms with 0.5 ms).
GIL_SWITCH_INTERVAL_S = 0.0005


# The cyclic GC holds the GIL for its whole pass, whichever thread set it off. RTP makes no garbage, but the
# voice store and the CRM (SQLAlchemy objects) do, and a full (gen 2) pass over the start-up heap stopped the
# loop ~80 ms under verification load. Start-up objects live for ever: frozen, they are never traversed again;
# a larger young generation makes the small passes rarer.
GC_THRESHOLDS = (10_000, 20, 50)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def use_send_worker(setting: str) -> bool:
    """auto: a worker process only pays off with a second CPU to run on."""
    if setting != "auto":
        return setting == "on"
    return _cpus() >= 2


def send_worker_needs_realtime(setting: str) -> bool:
    """auto with two or three CPUs: keep the worker only if it got real-time priority. Without it, on two cores
    busy with the loop and the traffic, each wake-up of the worker waits behind other tasks and RTP jitter grows
    (bench/sip_load.py, 500 calls: p99 3.4 ms vs 0.4 ms real-time and 0.3 ms sent by the loop itself)."""
    return setting == "auto" and _cpus() < 4


def tune_gc(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


async def serve(cfg: ServerConfig, *, seed_demo: bool = False) -> int:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    server = await build_server(cfg, seed_demo=seed_demo)
    tune_gc()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, server.request_stop)
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGHUP, lambda: _reload(server))
    watcher = loop.create_task(_watch_config(server)) if cfg.ivr.watch else None
    port = server.sip.bound_port
    host = cfg.sip.advertised_host or cfg.sip.host
    web_port = server.extras.get("web_port", cfg.web.port)
    print(f"contact-server ready: call sip:800100@{host}:{port} (retail line) or sip:800200@{host}:{port} "
          f"(business line); agent desktop http://{cfg.web.host}:{web_port}/ ; Ctrl-C stops", flush=True)
    await server._stopped.wait()
    log.info("stopping: new calls get 503, calls in progress have 10 s to finish")
    if watcher:
        watcher.cancel()
    await server.close(grace=10.0)
    return 0


def _reload(server: Server) -> tuple[bool, list]:
    ok, problems = server.holder.reload()
    if ok:
        log.info("IVR configuration reloaded: version %s", server.holder.current.version)
    return ok, problems


def _config_mtimes(server: Server) -> dict[str, float]:
    out = {}
    root = server.cfg.resolve(server.cfg.ivr.dir)
    for p in sorted(root.glob("*.y*ml")):
        with contextlib.suppress(OSError):
            out[str(p)] = p.stat().st_mtime
    q = server.cfg.resolve(server.cfg.ivr.queues)
    with contextlib.suppress(OSError):
        out[str(q)] = q.stat().st_mtime
    return out


async def _watch_config(server: Server, interval: float = 2.0) -> None:
    """Hot reload on file change: stat() a handful of files every 2 s costs nothing and needs no inotify."""
    seen = _config_mtimes(server)
    while True:
        await asyncio.sleep(interval)
        now = _config_mtimes(server)
        if now != seen:
            seen = now
            await asyncio.get_running_loop().run_in_executor(None, _reload, server)


def _install_uvloop() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass


def run_server(config_path: str, *, seed_demo: bool = False) -> int:
    try:
        cfg = load_server_config(config_path)
    except ConfigError as exc:
        print(f"configuration error, the server did not start:\n{exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.logging.level, cfg.logging.format)
    _install_uvloop()
    try:
        return asyncio.run(serve(cfg, seed_demo=seed_demo))
    except ConfigError as exc:
        print(f"configuration error, the server did not start:\n{exc}", file=sys.stderr)
        return 2
    except (IvrError, OSError) as exc:
        print(f"the server could not start: {exc}", file=sys.stderr)
        return 1


def database_main(args) -> int:
    cfg = load_server_config(args.config)
    url = database_url(cfg)
    from crm_bridge.migrate import upgrade_database

    upgrade_database(url)
    if args.db_cmd == "seed-demo":
        from crm_bridge.db import Database
        from crm_bridge.seed import seed_demo

        db = Database.from_url(url)
        print(db.run_sync(lambda s: seed_demo(s)))
        db.close()
    print(f"database ready: {url}")
    return 0
