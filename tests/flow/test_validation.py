"""Every shipped YAML validates; every file in tests/flow/broken/ gives its expected message at its line."""

import re
from pathlib import Path

import pytest
import yaml

from ivr.errors import ConfigError
from ivr.flow import load_ivr_config, validate_paths
from tests.conftest import REPO
from tests.flow.helpers import DEMO_QUEUES, DEMO_SKILLS

BROKEN = sorted((Path(__file__).parent / "broken").glob("*.yaml"))
EXPECT = re.compile(r"^# expect: (error|warning) (\d+): (.+)$")


def _names(section: str, default: list[str]) -> list[str]:
    """Queue/skill names from routing's config/queues.yaml, read as plain YAML (the flow package must not import
    routing); the agreed demo names while that file does not exist."""
    path = REPO / "config" / "queues.yaml"
    if not path.exists():
        return default
    items = (yaml.safe_load(path.read_text()) or {}).get(section, {})
    return list(items) if isinstance(items, dict) else [q["name"] for q in items]


def known_queues() -> list[str]:
    return _names("queues", DEMO_QUEUES)


def known_skills() -> list[str]:
    return _names("skills", DEMO_SKILLS)


def test_demo_configuration_is_clean():
    problems = validate_paths([REPO / "config" / "ivr"], known_queues(), known_skills())
    assert problems == []


def test_every_ivr_yaml_in_repo_validates():
    dirs = {p.parent for p in (REPO / "config").rglob("*.yaml") if "ivr" in p.parent.parts}
    assert dirs
    for d in dirs:
        load_ivr_config(d, known_queues(), known_skills())


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_file(path):
    m = EXPECT.match(path.read_text().splitlines()[0])
    assert m, f"{path.name}: first line must be '# expect: error|warning LINE: substring'"
    severity, line, text = m.group(1), int(m.group(2)), m.group(3)
    problems = validate_paths([path], ["general"], ["mortgage"])
    hits = [p for p in problems if text in p.message]
    assert hits, f"{path.name}: no problem mentions {text!r}; got:\n" + "\n".join(map(str, problems))
    assert any(p.line == line and p.severity == severity and p.file == str(path) and p.column >= 1
               for p in hits), "\n".join(map(str, hits))
    if severity == "error":
        with pytest.raises(ConfigError) as exc:
            load_ivr_config(path, ["general"], ["mortgage"])
        assert text in str(exc.value) and f"{path}:{line}:" in str(exc.value)


def test_warnings_do_not_block_loading():
    cfg = load_ivr_config(Path(__file__).parent / "broken" / "unreachable.yaml")
    assert [w.severity for w in cfg.warnings] == ["warning"]


def test_unknown_queue_check_is_skipped_without_known_set():
    assert validate_paths([Path(__file__).parent / "broken" / "unknown_queue.yaml"]) == []


def test_problems_say_what_to_change():
    for path in BROKEN:
        for p in validate_paths([path], ["general"], ["mortgage"]):
            assert len(p.message) > 25, p
