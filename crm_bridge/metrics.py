"""Prometheus metrics of the contact server, in a registry of their own (served at ``/metrics`` by
``crm_bridge.web``).

A dedicated ``CollectorRegistry`` keeps tests and embedding processes free of the global default registry's
process collectors and of duplicate-registration errors. The names below are a public interface (dashboards and
alerts use them): add new ones, never rename.

=========================================  =========  ===============  ================================================
name                                       type       labels           who updates it
=========================================  =========  ===============  ================================================
``contact_calls_total``                    counter    ``outcome``      call layer: ``answered``, ``abandoned``
                                                                       (in queue), ``ivr_abandoned``,
                                                                       ``self_service``, ``transferred``,
                                                                       ``rejected`` at call end
``contact_active_calls``                   gauge      -                call layer: calls in progress
``contact_queue_size``                     gauge      ``queue``        routing: callers waiting per queue
``contact_verification_total``             counter    ``decision``     IVR/voiceauth: ``accept``, ``reject``,
                                                                       ``not_enough_speech``, ``not_enrolled``,
                                                                       ``locked_out``, ``error``
``contact_rtp_errors_total``               counter    ``kind``         media: ``malformed``, ``wrong_ssrc``,
                                                                       ``send_failed``, ``late``,
                                                                       ``send_worker_full`` (sent by the loop
                                                                       instead), ``send_dropped``, ...
``contact_rtp_send_worker_up``             gauge      -                media: 1 while the RTP send worker process
                                                                       sends, 0 when the event loop sends itself
``contact_sip_malformed_total``            counter    -                SIP transport: messages refused by the parser
``contact_screen_pop_latency_seconds``     histogram  -                ``ScreenPopHub``: ring notified -> pop written
                                                                       to the agent's websocket(s)
``contact_desktop_websockets``             gauge      ``kind``         web: open ``agent`` / ``wallboard`` sockets
``contact_web_login_failures_total``       counter    -                web: refused desktop and admin logins
=========================================  =========  ===============  ================================================

Label values are free strings but must come from a small fixed set (never a call id or a phone number: every
distinct value is a new time series).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

CALLS = Counter("contact_calls", "Calls ended, by outcome", ["outcome"], registry=REGISTRY)
ACTIVE_CALLS = Gauge("contact_active_calls", "Calls in progress", registry=REGISTRY)
QUEUE_SIZE = Gauge("contact_queue_size", "Callers waiting in each queue", ["queue"], registry=REGISTRY)
VERIFICATIONS = Counter("contact_verification", "Voice verification decisions", ["decision"], registry=REGISTRY)
RTP_ERRORS = Counter("contact_rtp_errors", "RTP packets dropped or failed, by kind", ["kind"], registry=REGISTRY)
RTP_SEND_WORKER_UP = Gauge("contact_rtp_send_worker_up", "1 while the RTP send worker process sends",
                           registry=REGISTRY)
SIP_MALFORMED = Counter("contact_sip_malformed", "SIP messages refused by the parser", registry=REGISTRY)
SCREEN_POP_LATENCY = Histogram(
    "contact_screen_pop_latency_seconds", "From the ring notification to the pop written to the agent's sockets",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5), registry=REGISTRY)
DESKTOP_SOCKETS = Gauge("contact_desktop_websockets", "Open desktop websockets", ["kind"], registry=REGISTRY)
LOGIN_FAILURES = Counter("contact_web_login_failures", "Refused desktop/admin logins", registry=REGISTRY)


def render(registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """The exposition text and its content type, for an HTTP handler."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


def set_queue_sizes(sizes: dict[str, int]) -> None:
    """Set every queue's size at once (queues missing from ``sizes`` keep their last value)."""
    for queue, size in sizes.items():
        QUEUE_SIZE.labels(queue=queue).set(size)


__all__ = ["REGISTRY", "CALLS", "ACTIVE_CALLS", "QUEUE_SIZE", "VERIFICATIONS", "RTP_ERRORS", "RTP_SEND_WORKER_UP", "SIP_MALFORMED",
           "SCREEN_POP_LATENCY", "DESKTOP_SOCKETS", "LOGIN_FAILURES", "render", "set_queue_sizes"]
