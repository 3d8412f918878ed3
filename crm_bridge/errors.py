"""One exception hierarchy for crm_bridge: callers catch ``CrmError`` and degrade the call, never drop it."""

from __future__ import annotations


class CrmError(Exception):
    """Base of every error raised by crm_bridge."""


class CrmConfigError(CrmError):
    """The CRM or database configuration is wrong; the message says which setting to fix."""


class CrmUnavailableError(CrmError):
    """The CRM cannot be reached now (down, slow, circuit open). Retry later; writes go to the outbox."""


class CrmRejectedError(CrmError):
    """The CRM refused a request (4xx other than timeouts/throttling). Retrying the same request will not help."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFoundError(CrmError):
    """A record the caller named (ticket, call, customer) does not exist."""


class CallRecordError(CrmError):
    """A call-record lifecycle event arrived that does not fit the record (unknown call id, call already ended)."""
