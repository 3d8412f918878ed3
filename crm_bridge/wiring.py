"""The CRM side of a running server, chosen by configuration: the adapter, the call recorder and, for an
external CRM, the outbox deliverer task that carries tickets and call records to it.

With the built-in SQL CRM everything is written in place. With a REST CRM, reads go to the CRM (cache and
circuit breaker in front) and every write is committed locally together with an outbox row in the same
transaction, so a CRM that is down or slow never loses a ticket: the deliverer retries until it takes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from .crm import SqlCrmAdapter
from .db import Database
from .external import OutboxCrmAdapter
from .outbox import CrmOutboxSink, OutboxDeliverer
from .recorder import CallRecorder
from .rest import RestCrmAdapter, RestCrmConfig

log = logging.getLogger(__name__)


@dataclass
class CrmStack:
    crm: Any
    recorder: CallRecorder
    remote: RestCrmAdapter | None = None
    deliverer: OutboxDeliverer | None = None
    task: asyncio.Task | None = None

    async def close(self) -> None:
        """Stop delivering (what is pending stays in the outbox for the next start) and close HTTP sessions."""
        if self.deliverer is not None:
            self.deliverer.stop()
        if self.task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self.task, 5.0)
        if self.remote is not None:
            await self.remote.close()


def build_crm_stack(db: Database, rest: RestCrmConfig | None = None, *, poll_interval: float = 1.0) -> CrmStack:
    """``rest=None``: the built-in SQL CRM. Otherwise the REST adapter behind the durable outbox; call from a
    running loop (the deliverer task starts here)."""
    if rest is None:
        return CrmStack(SqlCrmAdapter(db), CallRecorder(db))
    remote = RestCrmAdapter(rest)
    deliverer = OutboxDeliverer(db, CrmOutboxSink(db, remote), poll_interval=poll_interval)
    crm = OutboxCrmAdapter(db, remote, on_enqueue=deliverer.wake)
    recorder = CallRecorder(db, mirror_to_crm=True, on_enqueue=deliverer.wake)
    task = asyncio.get_running_loop().create_task(deliverer.run(), name="crm outbox")
    log.info("external CRM at %s: writes are queued in the outbox and delivered in order", rest.base_url)
    return CrmStack(crm, recorder, remote, deliverer, task)
