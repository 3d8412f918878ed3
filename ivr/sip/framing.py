"""Message framing on stream transports (TCP, TLS, WebSocket-less): RFC 3261 18.3 and RFC 5626 3.5.1.

On a stream Content-Length is the only way to find where a message ends, so it is mandatory; a framing
error desynchronises the stream for good, and the transport must close the connection.
"""

from __future__ import annotations

import re

from .headers import RemoteProtocolError

__all__ = ["StreamFramer"]

_BLANK_LINE_RE = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH_RE = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.I | re.M)


class StreamFramer:
    """Cut a byte stream into whole SIP messages; each one goes to ``parse_message`` as is.

    ``feed`` raises RemoteProtocolError (missing or bad Content-Length, oversize message) and keeps
    raising it afterwards: close the connection, optionally answering ``status`` first.

    ``pings`` counts RFC 5626 double-CRLF keep-alives seen between messages: the transport answers each
    with a single CRLF pong.
    """

    __slots__ = ("max_size", "pings", "_buf", "_scan_from", "_failed", "_newlines")

    def __init__(self, max_size: int = 65535):
        self.max_size = max_size
        self.pings = 0
        self._buf = bytearray()
        self._scan_from = 0
        self._failed: RemoteProtocolError | None = None
        self._newlines = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        if self._failed is not None:
            raise self._failed
        buf = self._buf
        buf += data
        out: list[bytes] = []
        try:
            while True:
                self._skip_keepalives()
                if not buf:
                    break
                m = _BLANK_LINE_RE.search(buf, self._scan_from)
                if m is None:
                    if len(buf) > self.max_size:
                        raise RemoteProtocolError("Message Too Large", 413)
                    self._scan_from = max(0, len(buf) - 3)
                    break
                head_end = m.end()
                lengths = _CONTENT_LENGTH_RE.findall(buf, 0, m.start() + 2)
                if len(lengths) != 1:
                    raise RemoteProtocolError(
                        "Missing Content-Length on a stream" if not lengths else "Multiple Content-Length headers"
                    )
                cl = lengths[0]
                if not cl.isdigit() or len(cl) > 10:
                    raise RemoteProtocolError("Malformed Content-Length header")
                total = head_end + int(cl)
                if total > self.max_size:
                    raise RemoteProtocolError("Message Too Large", 413)
                if len(buf) < total:
                    self._scan_from = m.start()
                    break
                out.append(bytes(buf[:total]))
                del buf[:total]
                self._scan_from = 0
        except RemoteProtocolError as exc:
            self._failed = exc
            buf.clear()
            raise
        return out

    def _skip_keepalives(self) -> None:
        buf = self._buf
        i = 0
        n = len(buf)
        while i < n and buf[i] in (13, 10):
            i += 1
        if i == 0:
            if n:
                self._newlines = 0
            return
        if i == n and buf[i - 1] == 13:
            i -= 1  # a lone CR may be the first half of a CRLF still in flight
        self._newlines += buf.count(b"\n", 0, i)
        self.pings += self._newlines // 2
        self._newlines %= 2
        del buf[:i]
        self._scan_from = 0
