"""Hot reload: new calls get the new version, calls in progress finish on theirs, invalid versions are refused."""

import shutil

from ivr.flow import CallContext, CallerLookedUp, ConfigHolder, DigitsCollected, PlayFinished, load_ivr_config
from tests.flow.helpers import DEMO_DIR, DEMO_QUEUES, DEMO_SKILLS, MONDAY_10


def _holder(tmp_path):
    d = tmp_path / "ivr"
    shutil.copytree(DEMO_DIR, d)
    # the demo's prompt_dir is relative to the file: keep it pointing at the repo's bundled prompts
    h = (d / "handoff.yaml")
    h.write_text(h.read_text().replace("prompt_dir: ../../audio_fixtures/prompts",
                                       f"prompt_dir: {DEMO_DIR.parent.parent / 'audio_fixtures' / 'prompts'}"))
    cfg = load_ivr_config(d, DEMO_QUEUES, DEMO_SKILLS)
    return d, ConfigHolder(cfg, [d], known_queues=lambda: DEMO_QUEUES, known_skills=DEMO_SKILLS)


def _to_menu(run, now):
    run.start(now)
    run.handle(PlayFinished(), now)
    run.handle(CallerLookedUp({"id": "C1", "name": "Mario Rossi"}), now)
    run.handle(PlayFinished(), now)
    run.handle(PlayFinished(), now)


def test_reload_mid_call_keeps_old_version(tmp_path):
    d, holder = _holder(tmp_path)
    ctx = lambda: CallContext("c", "+393331234567", None, "800100")  # noqa: E731
    old_run = holder.new_run(ctx(), MONDAY_10)
    _to_menu(old_run, MONDAY_10)
    old_version = holder.current.version

    retail = d / "retail.yaml"
    retail.write_text(retail.read_text().replace("queue: trading\n", "queue: general\n"))
    ok, problems = holder.reload()
    assert ok and problems == [] and holder.current.version != old_version

    old_run.handle(DigitsCollected("4"), MONDAY_10)            # trading, on the version the call started with
    assert old_run.context.queue == "trading" and old_run.trace.config_version == old_version

    new_run = holder.new_run(ctx(), MONDAY_10)
    _to_menu(new_run, MONDAY_10)
    new_run.handle(DigitsCollected("4"), MONDAY_10)
    assert new_run.context.queue == "general" and new_run.trace.config_version == holder.current.version


def test_invalid_reload_is_rejected_and_last_good_kept(tmp_path):
    d, holder = _holder(tmp_path)
    good = holder.current
    retail = d / "retail.yaml"
    retail.write_text(retail.read_text().replace('"4": trading', '"4": tradnig'))
    ok, problems = holder.reload()
    assert not ok and holder.current is good
    assert any("'tradnig' is not a node" in p.message and p.file.endswith("retail.yaml") for p in problems)
    assert holder.last_problems == problems


def test_reload_checks_queues_known_now(tmp_path):
    d, holder = _holder(tmp_path)
    holder = ConfigHolder(holder.current, [d], known_queues=[q for q in DEMO_QUEUES if q != "trading"],
                          known_skills=DEMO_SKILLS)
    ok, problems = holder.reload()
    assert not ok and any("unknown queue 'trading'" in p.message for p in problems)
