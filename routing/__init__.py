"""Skill-based routing: a sans-IO engine that takes events and the current time and returns actions.

Entry points: ``RoutingEngine`` (engine.py), ``load_routing_config`` (config.py), the action/event types in
``routing.events`` and the strategy registry (``register_strategy``).
"""

from routing.config import RoutingConfig, load_routing_config, load_routing_config_text
from routing.engine import QueueSnapshot, RoutingEngine
from routing.errors import RoutingError
from routing.model import AgentProfile, AgentState, Phone, Requirement
from routing.store import InMemoryRoutingStore, RoutingStateStore
from routing.strategies import StrategyRegistry, default_registry, register_strategy

__all__ = ["AgentProfile", "AgentState", "InMemoryRoutingStore", "Phone", "QueueSnapshot", "Requirement",
           "RoutingConfig", "RoutingEngine", "RoutingError", "RoutingStateStore", "StrategyRegistry",
           "default_registry", "load_routing_config", "load_routing_config_text", "register_strategy"]
