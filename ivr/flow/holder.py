"""Hot reload: the current configuration version for new calls, swapped only for a valid one.

Runs hold a reference to the :class:`IvrConfig` they started on, so swapping ``current`` never touches a call in
progress; the old version is freed when its last call ends. A reload that fails keeps the last good version and
returns the problems so the admin API / signal handler can show them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from ivr.errors import ConfigProblem
from ivr.flow.config import IvrConfig
from ivr.flow.context import CallContext
from ivr.flow.interpreter import FlowRun
from ivr.flow.validate import build_config

log = logging.getLogger(__name__)


class ConfigHolder:
    def __init__(self, config: IvrConfig, paths: Iterable[str | Path] | None = None,
                 known_queues: Callable[[], Iterable[str] | None] | Iterable[str] | None = None,
                 known_skills: Callable[[], Iterable[str] | None] | Iterable[str] | None = None):
        """``known_queues``/``known_skills`` may be callables so a reload checks against routing's current sets."""
        self._current = config
        self._paths = list(paths) if paths is not None else list(config.files)
        self._queues, self._skills = known_queues, known_skills
        self._lock = threading.Lock()
        self.last_problems: list[ConfigProblem] = []

    @property
    def current(self) -> IvrConfig:
        return self._current

    def new_run(self, context: CallContext, now: float) -> FlowRun:
        """A run for a new call on the version current now (one attribute read: atomic)."""
        return FlowRun(self._current, context, now)

    def swap(self, config: IvrConfig) -> None:
        with self._lock:
            self._current = config

    def reload(self, paths: Iterable[str | Path] | None = None) -> tuple[bool, list[ConfigProblem]]:
        """Re-read the files; (True, warnings) when the new version now serves new calls, (False, problems)
        when it was rejected and the previous version keeps serving."""
        paths = list(paths) if paths is not None else self._paths
        queues = self._queues() if callable(self._queues) else self._queues
        skills = self._skills() if callable(self._skills) else self._skills
        config, problems = build_config(paths, queues, skills)
        self.last_problems = problems
        if config is None:
            log.error("IVR configuration rejected, version %s keeps serving:\n%s", self._current.version,
                      "\n".join(map(str, problems)))
            return False, problems
        for p in problems:
            log.warning("%s", p)
        with self._lock:
            old, self._current, self._paths = self._current, config, paths
        log.info("IVR configuration %s replaces %s for new calls", config.version, old.version)
        return True, problems
