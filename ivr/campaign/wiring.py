"""``attach_campaigns``: the campaign service in ``build_server`` (one call there, one ``stop`` in
``Server.close``). Off when ``outbound.campaigns`` is false or no outbound trunk is configured."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .service import CampaignService
from .trunk import OutboundRouter

log = logging.getLogger(__name__)


def surveys_dir(cfg: Any) -> Path:
    """Where the survey scripts live: the surveys' own setting when the configuration has one, else
    ``config/surveys`` under the install root."""
    for holder, name in ((getattr(cfg, "surveys", None), "dir"), (cfg.ivr, "surveys")):
        value = getattr(holder, name, None) if holder is not None else None
        if isinstance(value, (str, Path)) and value:
            return cfg.resolve(str(value))
    return cfg.resolve("config/surveys")


def script_source(directory: Path) -> Callable[[str], Any]:
    """``scripts(name)``: the validated script, read again when its files change (a campaign can name a
    script added after the server started)."""
    from ivr.survey.script import load_survey_scripts

    cache: dict[str, Any] = {"stamp": None, "scripts": {}}

    def stamp() -> tuple:
        return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in directory.glob("*.y*ml")))

    def scripts(name: str) -> Any:
        now = stamp()
        if now != cache["stamp"]:
            cache["scripts"] = load_survey_scripts(directory)
            cache["stamp"] = now
        found = cache["scripts"].get(name)
        if found is None:
            raise KeyError(f"no survey script {name!r} in {directory} (known: {', '.join(sorted(cache['scripts']))})")
        return found

    return scripts


async def attach_campaigns(server: Any, prompts: Any, *, clock: Callable[[], float] = time.time,
                           ) -> CampaignService | None:
    cfg = server.cfg
    out = cfg.outbound
    router = OutboundRouter(out)
    if not out.campaigns:
        return None
    if not router.configured:
        log.info("outbound campaigns are off: set outbound.trunk in server.yaml to place survey calls")
        return None
    try:
        from ivr.survey.runner import run_survey

        from .survey_link import SurveyStoreRecorder
        recorder: Any = SurveyStoreRecorder(server.db, clock=clock)
        runner: Any = run_survey
        scripts = script_source(surveys_dir(cfg))
    except ImportError as exc:
        log.error("outbound campaigns are off: the survey package is missing (%s)", exc)
        return None
    service = CampaignService(server.db, server.manager, router, prompts=prompts, scripts=scripts,
                              run_survey=runner, recorder=recorder, from_host=cfg.sip.advertised_host or cfg.sip.host,
                              caller_id=out.caller_id, clock=clock, poll_seconds=out.poll_seconds)
    await service.start()
    server.extras["campaign_service"] = service
    log.info("outbound campaigns ready: %d running", len(service.runs))
    return service
