"""Root of the exceptions raised by the routing package: catch ``RoutingError`` to catch them all.

Messages are written for whoever drives the engine (desktop, phone feature code, call layer) and say what to do.
"""

from __future__ import annotations


class RoutingError(Exception):
    """Base class of every routing failure."""


class IllegalTransition(RoutingError):
    """An agent state change that the state machine forbids (e.g. logging out while on a call)."""

    def __init__(self, agent_id: str, current: str, wanted: str, hint: str = ""):
        self.agent_id, self.current, self.wanted = agent_id, current, wanted
        msg = f"agent {agent_id!r} cannot go from {current} to {wanted}"
        super().__init__(f"{msg}: {hint}" if hint else msg)


class UnknownAgent(RoutingError):
    def __init__(self, agent_id: str):
        self.agent_id = agent_id
        super().__init__(f"unknown agent {agent_id!r}: add it to the roster (queues.yaml 'agents' or the CRM) first")


class UnknownQueue(RoutingError):
    def __init__(self, queue: str, known: list[str] | None = None):
        self.queue = queue
        hint = f"; known queues: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"unknown queue {queue!r}: declare it in config/queues.yaml{hint}")


class UnknownCall(RoutingError):
    def __init__(self, call_id: str):
        self.call_id = call_id
        super().__init__(f"call {call_id!r} is not known to the routing engine (never queued, or already ended)")


class DuplicateCall(RoutingError):
    def __init__(self, call_id: str):
        self.call_id = call_id
        super().__init__(f"call {call_id!r} is already in the routing engine: use transfer() to move it")


class OfferNotPending(RoutingError):
    """The call layer reported on an offer the engine no longer holds (late answer after RONA, wrong agent).

    The call layer should hang up the agent leg it just answered: the call was requeued or went elsewhere.
    """

    def __init__(self, call_id: str, agent_id: str, detail: str):
        self.call_id, self.agent_id = call_id, agent_id
        super().__init__(f"no pending offer of call {call_id!r} to agent {agent_id!r} ({detail}): "
                         "release the agent leg, the call is no longer offered to this agent")


class AgentUnavailable(RoutingError):
    def __init__(self, agent_id: str, state: str):
        self.agent_id = agent_id
        super().__init__(f"agent {agent_id!r} is {state}: transfer to a queue instead, or wait until they log in")


class UnknownStrategy(RoutingError):
    def __init__(self, name: str, known: list[str]):
        self.name = name
        super().__init__(f"unknown routing strategy {name!r}: use one of {', '.join(sorted(known))} "
                         "or register a class with @register_strategy")


class BadRequest(RoutingError):
    """Input that cannot be acted on (invalid skill level, unknown skill, wrong call state)."""
