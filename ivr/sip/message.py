"""SIP message model (RFC 3261 section 7), parsing and serialisation.

SKELETON written by the lead to fix the public API; the sip-message helper owns this file and fills it in.
Everything here is sans-IO: bytes in, objects out, and back.

Public API (other modules rely on exactly these names):

    class SipError(Exception)                         # root of the package's exceptions
    class RemoteProtocolError(SipError)               # the peer sent something bad
        .status: int | None   # status to answer with (400, 413, 416, 420, 505, ...) or None = drop silently
        .reason: str          # reason phrase, also usable in logs
    class LocalProtocolError(SipError)                # we tried to build/send something invalid

    class Headers                                      # ordered, case-insensitive multi-map
        Headers(items: Iterable[tuple[str, str]] = ())
        .get(name, default=None) -> str | None         # first value; compact forms accepted ("v" == "Via")
        .get_all(name) -> list[str]                    # every value, comma-separated lists split for
                                                        # list headers (Via, Route, Record-Route, Contact, Allow,
                                                        # Supported, Require, ...), respecting quotes and <...>
        .set(name, value)                              # replace all values of name with one
        .add(name, value, first: bool = False)         # append (or prepend, for a new top Via)
        .remove(name)                                  # drop all values
        .__contains__(name), .__iter__() -> (canonical_name, value) pairs in order, .copy()
        names are stored in canonical long form ("Call-ID", "CSeq", "WWW-Authenticate", "Via") for output

    @dataclass class Via: transport, host, port: int|None, params: dict[str, str|None]
        .branch, .received, .rport (int|None or True when empty), __str__, parse(value) -> Via
    @dataclass class SipUri: scheme ("sip"/"sips"/"tel"), user: str|None, password, host, port: int|None,
        params: dict[str, str|None], headers: dict[str,str]; parse(text) -> SipUri; __str__
    @dataclass class NameAddr: display: str|None, uri: SipUri, params: dict (tag, expires, q, ...)
        .tag; parse(text) -> NameAddr; __str__  ("From", "To", "Contact", "Route", "P-Asserted-Identity")

    @dataclass class SipRequest:  method: str, uri: SipUri, headers: Headers, body: bytes = b"",
                                  version: str = "SIP/2.0"
    @dataclass class SipResponse: status: int, reason: str, headers: Headers, body: bytes = b"",
                                  version: str = "SIP/2.0"
    both have: __bytes__() (sets Content-Length from the body), .call_id, .cseq -> tuple[int, str],
        .vias -> list[Via], .from_ / .to -> NameAddr, .top_via -> Via, .content_type -> str|None

    parse_message(data: bytes) -> SipRequest | SipResponse   # raises RemoteProtocolError only
    make_response(request, status, reason=None, to_tag=None, headers=()) -> SipResponse
        # copies Via, From, To (+tag), Call-ID, CSeq per RFC 3261 8.2.6
    new_branch() -> str ("z9hG4bK" + random), new_tag() -> str, new_call_id(host) -> str
"""
