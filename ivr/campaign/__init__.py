"""Outbound survey campaigns: the rules (``rules``), the sans-IO dialer (``dialer``), calling windows
(``window``) and the asyncio service that places the calls from the server (``service``)."""
