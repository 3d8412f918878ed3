"""asyncio shell around :class:`SipUserAgent`: a UDP endpoint, a TCP listener, one re-armed timer.

All SIP decisions stay in the sans-IO core. This module only moves bytes, frames TCP streams
(:class:`ivr.sip.framing.StreamFramer`), passes ``loop.time()`` as ``now`` and hands events to the
application, in order, through ``events`` (an asyncio.Queue) or an ``on_event`` coroutine.

Commands go through the server (``server.answer(handle, sdp)`` ...) rather than the core, so that what
they produce is sent at once and the timer re-armed. Works unchanged on uvloop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import socket
from typing import Any, Awaitable, Callable, Iterable

from ivr.sip.events import Address, CallHandle, Event, Outgoing, Transport
from ivr.sip.framing import StreamFramer
from ivr.sip.guard import SourceGuard
from ivr.sip.message import RemoteProtocolError
from ivr.sip.useragent import SipUserAgent

log = logging.getLogger(__name__)

EventCallback = Callable[[Event], Awaitable[None]]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: "SipServer"):
        self.server = server

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.server._incoming(data, (addr[0], addr[1]), Transport.UDP, None)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)  # ICMP unreachable for a peer that went away: timers handle it


class _TcpConnection(asyncio.Protocol):
    def __init__(self, server: "SipServer", connection_id: int):
        self.server = server
        self.id = connection_id
        self.framer = StreamFramer(server.ua.config.max_message_size)
        self.transport: asyncio.Transport | None = None
        self.peer: Address = ("", 0)
        self.connected = asyncio.get_running_loop().create_future()
        self._pings = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1]) if peer else ("", 0)
        self.server._connections[self.id] = self
        self.server._by_address.setdefault(self.peer, self.id)
        if not self.connected.done():
            self.connected.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.framer.feed(data)
        except RemoteProtocolError as exc:
            self.server.ua.stats.malformed += 1
            log.info("closing SIP/TCP connection from %s: %s", self.peer, exc.reason)
            if self.transport is not None:
                self.transport.close()
            return
        if self.framer.pings > self._pings and self.transport is not None:
            self.transport.write(b"\r\n" * (self.framer.pings - self._pings))  # RFC 5626 pong
            self._pings = self.framer.pings
        for message in messages:
            self.server._incoming(message, self.peer, Transport.TCP, self.id)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.pop(self.id, None)
        if self.server._by_address.get(self.peer) == self.id:
            del self.server._by_address[self.peer]
        if not self.connected.done():
            self.connected.set_exception(exc or ConnectionError("connection closed"))


class SipServer:
    """Serve one :class:`SipUserAgent` on UDP and TCP at ``host:port`` (port 0 picks a free one for both)."""

    def __init__(
        self,
        ua: SipUserAgent,
        host: str = "0.0.0.0",
        port: int = 5060,
        loop: asyncio.AbstractEventLoop | None = None,
        on_event: EventCallback | None = None,
        *,
        udp: bool = True,
        tcp: bool = True,
        guard: "SourceGuard | None" = None,
        receive_buffer: int = 4 << 20,
    ):
        self.ua = ua
        self.guard = guard
        self.receive_buffer = receive_buffer
        """SO_RCVBUF of the UDP socket. A flood arrives faster than the loop reads in bursts; with the kernel's
        default (~200 KB) the socket overflows and drops legitimate callers' datagrams along with the junk
        before the guard can tell them apart (bench/flood.py). Linux caps it at net.core.rmem_max."""
        self.host = host
        self.port = port
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self._loop = loop
        self._on_event = on_event
        self._udp_enabled = udp
        self._tcp_enabled = tcp
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.base_events.Server | None = None
        self._connections: dict[int, _TcpConnection] = {}
        self._by_address: dict[Address, int] = {}
        self._ids = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.bound_port: int | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def start(self) -> None:
        loop = self.loop
        for attempt in range(20):
            try:
                await self._open(loop)
                break
            except OSError:
                await self._close_listeners()
                if self.port != 0 or attempt == 19:
                    raise
        if self._on_event is not None:
            self._dispatcher = loop.create_task(self._dispatch())
        log.info("SIP listening on %s:%d (udp=%s tcp=%s)", self.host, self.port, self._udp_enabled, self._tcp_enabled)

    async def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        port = self.port
        if self._udp_enabled:
            transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), local_addr=(self.host, port))
            self._udp = transport
            sock = transport.get_extra_info("socket")
            if sock is not None and self.receive_buffer:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
                except OSError as exc:
                    log.info("SIP UDP receive buffer left at the default: %s", exc)
            port = transport.get_extra_info("sockname")[1]
        if self._tcp_enabled:
            self._tcp_server = await loop.create_server(self._new_connection, self.host, port)
            port = self._tcp_server.sockets[0].getsockname()[1]
        self.bound_port = port
        if self.ua.config.port == 0:
            self.ua.config.port = port  # advertise the port the OS picked

    def _new_connection(self) -> _TcpConnection:
        return _TcpConnection(self, next(self._ids))

    async def _close_listeners(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp_server is not None:
            self._tcp_server.close()
            await self._tcp_server.wait_closed()
            self._tcp_server = None

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for conn in list(self._connections.values()):
            if conn.transport is not None:
                conn.transport.close()
        await self._close_listeners()
        for task in [self._dispatcher, *self._tasks]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*[t for t in [self._dispatcher, *self._tasks] if t is not None], return_exceptions=True)
        self._dispatcher = None

    async def _dispatch(self) -> None:
        assert self._on_event is not None
        while True:
            event = await self.events.get()
            try:
                await self._on_event(event)
            except Exception:
                log.exception("SIP event handler failed on %s", type(event).__name__)

    # ------------------------------------------------------------- core plumbing

    def _incoming(self, data: bytes, source: Address, transport: Transport, connection_id: int | None) -> None:
        now = self.loop.time()
        if self.guard is not None and not self.guard.admit(source[0], data, now):
            return
        self.ua.receive(data, source, transport, now, connection_id)
        self._pump()

    def _pump(self) -> None:
        for out in self.ua.pop_outgoing():
            self._transmit(out)
        while (event := self.ua.next_event()) is not None:
            self.events.put_nowait(event)
        self._arm_timer()

    def _arm_timer(self) -> None:
        at = self.ua.get_timer()
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None:
            self._timer = self.loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        at = self._timer_at
        self._timer = None
        self._timer_at = None
        # asyncio may run a call_at handle a clock tick early: never pass a time before the deadline.
        now = self.loop.time() if at is None else max(self.loop.time(), at)
        self.ua.handle_timer(now)
        self._pump()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = self.loop.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _transmit(self, out: Outgoing) -> None:
        host, port = out.destination
        if out.transport is Transport.UDP:
            if self._udp is None:
                log.warning("no UDP endpoint to send to %s", out.destination)
                return
            if _is_ip(host):
                self._udp.sendto(out.data, (host, port))
            else:
                self._spawn(self._resolve_and_send(out))
            return
        conn = self._connections.get(out.connection_id) if out.connection_id is not None else None
        if conn is None:
            conn_id = self._by_address.get((host, port))
            conn = self._connections.get(conn_id) if conn_id is not None else None
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            conn.transport.write(out.data)
        else:
            self._spawn(self._connect_and_send(out))

    async def _resolve_and_send(self, out: Outgoing) -> None:
        try:
            infos = await self.loop.getaddrinfo(out.destination[0], out.destination[1], type=2)  # SOCK_DGRAM
        except OSError as exc:
            log.info("cannot resolve %s: %s", out.destination[0], exc)
            return
        if infos and self._udp is not None:
            self._udp.sendto(out.data, infos[0][4][:2])

    async def _connect_and_send(self, out: Outgoing) -> None:
        try:
            _, conn = await self.loop.create_connection(self._new_connection, out.destination[0], out.destination[1])
        except OSError as exc:
            log.info("cannot open SIP/TCP connection to %s: %s", out.destination, exc)
            return
        assert isinstance(conn, _TcpConnection) and conn.transport is not None
        self._by_address[out.destination] = conn.id
        conn.transport.write(out.data)

    # ------------------------------------------------------------- commands (now = loop.time())

    def _command(self, name: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.ua, name)(*args, now=self.loop.time(), **kwargs)
        self._pump()
        return result

    def ring(self, handle: CallHandle) -> None:
        self._command("ring", handle)

    def progress(self, handle: CallHandle, sdp: bytes) -> None:
        self._command("progress", handle, sdp)

    def answer(self, handle: CallHandle, sdp: bytes, extra_headers: Iterable[tuple[str, str]] = ()) -> None:
        self._command("answer", handle, sdp, extra_headers)

    def reject(self, handle: CallHandle, status: int, reason: str | None = None, headers: Iterable[tuple[str, str]] = ()) -> None:
        self._command("reject", handle, status, reason, headers)

    def hangup(self, handle: CallHandle) -> None:
        self._command("hangup", handle)

    def invite(
        self,
        target: str,
        from_uri: str,
        sdp: bytes,
        headers: Iterable[tuple[str, str]] = (),
        credentials: tuple[str, str] | None = None,
        destination: Address | None = None,
        transport: Transport | str | None = None,
    ) -> CallHandle:
        return self._command("invite", target, from_uri, sdp, headers, credentials, destination, transport=transport)

    def reinvite(self, handle: CallHandle, sdp: bytes) -> None:
        self._command("reinvite", handle, sdp)

    def answer_reinvite(self, handle: CallHandle, sdp: bytes) -> None:
        self._command("answer_reinvite", handle, sdp)

    def reject_reinvite(self, handle: CallHandle, status: int = 488, reason: str | None = None) -> None:
        self._command("reject_reinvite", handle, status, reason)

    def send_info(self, handle: CallHandle, content_type: str, body: bytes) -> None:
        self._command("send_info", handle, content_type, body)

    def notify_refer(self, handle: CallHandle, status: int, reason: str | None = None) -> None:
        self._command("notify_refer", handle, status, reason)
