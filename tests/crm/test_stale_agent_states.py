"""After a crash, the agents' state history must not leave anybody on a call: start-up writes ``offline``
(reason ``server_restart``) for every agent whose last recorded state is something else."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from crm_bridge import models as m
from crm_bridge.db import Database
from crm_bridge.recorder import CallRecorder

T0 = datetime(2025, 3, 12, 9, 0, tzinfo=timezone.utc)


def _events(db: Database) -> list[tuple[str, str, str | None, str | None]]:
    return db.run_sync(lambda s: [(e.agent_id, e.state, e.reason, e.call_id) for e in s.scalars(
        select(m.AgentStateEvent).order_by(m.AgentStateEvent.id))])


async def test_agents_left_on_a_call_by_a_crash_are_set_offline_once(db: Database, db_url: str) -> None:
    def history(s):
        for i, (agent, state, call) in enumerate([
                ("2001", "available", None), ("2001", "reserved", "c1"), ("2001", "on_call", "c1"),
                ("2002", "available", None), ("2002", "offline", None),
                ("2003", "on_call", "c2"), ("2003", "wrap_up", "c2"),
                ("2004", "available", None)]):
            s.add(m.AgentStateEvent(agent_id=agent, state=state, call_id=call, at=T0 + timedelta(seconds=i)))
    db.run_sync(history)
    db.close()                                   # the process dies; the next one opens the same database
    db2 = Database.from_url(db_url)
    try:
        at = T0 + timedelta(minutes=5)
        assert await CallRecorder(db2).close_stale_agent_states(at=at) == ["2001", "2003", "2004"]
        tail = _events(db2)[-3:]
        assert sorted(tail) == [("2001", "offline", "server_restart", "c1"), ("2003", "offline", "server_restart", "c2"),
                                ("2004", "offline", "server_restart", None)]
        last = {}
        for agent, state, _, _ in _events(db2):
            last[agent] = state
        assert set(last.values()) == {"offline"}
        assert await CallRecorder(db2).close_stale_agent_states() == []      # nothing left to close
    finally:
        db2.close()
