"""The IVR flow language (YAML) and its sans-IO interpreter.

Load: ``load_ivr_config(dir, known_queues, known_skills) -> IvrConfig`` (raises ConfigError) or
``validate_paths(paths, known_queues, known_skills) -> list[ConfigProblem]``. Run: ``FlowRun(config, context,
now)`` with ``start``/``handle``/``get_timer``/``handle_timer``; actions and events in :mod:`ivr.flow.actions`.
Hot reload: :class:`ConfigHolder`.
"""

from ivr.flow.actions import (Action, CallerHungUp, CallerLookedUp, CollectDigits, CollectEnd, DigitsCollected,
                              EnrollVoice, Event, Finished, Hangup, IvrExit, LookupCaller, PinResult, Play,
                              PlayFinished, PromptRef, Queue, Transfer, VerifyPin, VerifyVoice, VoiceResult)
from ivr.flow.config import IvrConfig, number_forms
from ivr.flow.context import CallContext, fill_template
from ivr.flow.holder import ConfigHolder
from ivr.flow.interpreter import FlowProtocolError, FlowRun
from ivr.flow.trace import IvrTrace
from ivr.flow.validate import build_config, load_ivr_config, validate_paths

__all__ = [
    "Action", "CallerHungUp", "CallerLookedUp", "CollectDigits", "CollectEnd", "DigitsCollected", "EnrollVoice",
    "Event", "Finished", "Hangup", "IvrExit", "LookupCaller", "PinResult", "Play", "PlayFinished", "PromptRef",
    "Queue", "Transfer", "VerifyPin", "VerifyVoice", "VoiceResult", "IvrConfig", "number_forms", "CallContext",
    "fill_template", "ConfigHolder", "FlowProtocolError", "FlowRun", "IvrTrace", "build_config",
    "load_ivr_config", "validate_paths",
]
